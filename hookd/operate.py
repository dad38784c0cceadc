"""``hookd reconcile`` and ``hookd plan``: the same engine as the service, run once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from handlers.errors import HookdError, TransientError
from handlers.plan import ImagePlan, render_plan
from hookd.config import load

if TYPE_CHECKING:
    from hookd.daemon import Components


def _components(config_path: Path | None) -> Components:
    from hookd.daemon import build
    from hookd.logs import configure_logging

    config = load(config_path)
    configure_logging(level="warning", stream=sys.stderr, fmt=config.log.format)
    return build(config)


def reconcile(config_path: Path | None, *, images: list[int], dry_run: bool,
              out: TextIO = sys.stdout) -> int:
    """Fix the given images (or every image, through a sweep). Exit 1 if any failed."""
    failures = 0
    plans: list[ImagePlan] = []
    try:
        c = _components(config_path)
        c.world.refresh()
        raft = c.client.raft()
        if not raft.may_act and not dry_run:
            print(f"hookd: this oned is a Raft {raft.state_name.lower()}; run this on the "
                  f"leader", file=sys.stderr)
            return 1
        # A sweep builds the template index and tells which images need work.
        needing: list[int] = []
        c.engine.sweep(lambda image_id, _why: needing.append(image_id))
        for image_id in dict.fromkeys(images or needing):
            try:
                result = c.engine.reconcile_image(image_id, dry_run=dry_run, final=True,
                                                  trigger="cli")
            except HookdError as exc:
                failures += 1
                print(f"image {image_id}: FAILED - {exc.reason}", file=out)
                continue
            if result.plan is not None:
                plans.append(result.plan)
            elif images:
                failures += 1
                print(f"image {image_id}: FAILED - it does not exist", file=out)
    except HookdError as exc:
        print(f"hookd: {exc.reason}", file=sys.stderr)
        return 1
    # Images named on the command line are always shown, also when not hookd's business.
    shown = [p for p in plans if p.status is not None or images or p.edits
             or p.image_attributes]
    for p in shown:
        print(render_plan(p), file=out)
    verb = "would change" if dry_run else "changed"
    changed = sum(len(p.edits) for p in shown)
    print(f"{len(shown)} container image(s); {verb} {changed} template(s)"
          + (f"; {failures} failed" if failures else ""), file=out)
    return 1 if failures else 0


def plan(config_path: Path | None, image_id: int, *, out: TextIO = sys.stdout) -> int:
    try:
        c = _components(config_path)
        c.world.refresh()
        # The index is built from the template pool (what a sweep does at start-up).
        c.engine.sweep(lambda _i, _w: None, dry_run=True)
        result = c.engine.preview(image_id)
    except TransientError as exc:
        print(f"hookd: cannot plan image {image_id} now: {exc.reason} (the service retries "
              f"with backoff)", file=sys.stderr)
        return 1
    except HookdError as exc:
        print(f"hookd: {exc.reason}", file=sys.stderr)
        return 1
    if result is None:
        print(f"image {image_id} does not exist", file=out)
        return 1
    print(render_plan(result), file=out)
    if result.is_noop:
        print("nothing to change", file=out)
    return 0
