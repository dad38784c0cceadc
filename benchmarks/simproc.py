"""``python -m benchmarks.simproc``: the simulator in its own process, instrumented.

It runs the very :class:`hookd.testing.Simulator` that ``python -m hookd.testing`` runs (same
arguments, same banner line, same ``one.*`` and ``sim.*`` namespaces) and adds, for the
benchmarks only:

* a fake registry (:class:`hookd.testing.registry.FakeRegistry`) serving the image configs of
  the seeded Docker Hub apps, so the START_SCRIPT part of a fix is real; its ``host:port`` is
  appended to the banner as ``registry=``;
* **timestamps taken inside the simulator** (``time.monotonic()``, CLOCK_MONOTONIC, which is
  system-wide on Linux and therefore comparable with the runner's clock), recorded under the
  world lock at the moment the simulator changes its state:

  - ``ready``: an image went to READY; recorded in ``World.save_image`` (``ImagePool::update``)
    right before the STATE event is handed to the hook manager, i.e. "READY published";
  - ``template``: a VM template's content really changed (the same hook that feeds
    ``template_changes()``), i.e. "hookd's ``one.template.update`` applied";
  - ``status``: an image's template carries ``HOOKD_STATUS`` for the first time (hookd's
    ``one.image.update`` applied: the fix is complete);

  recording is a dict store under a lock: no polling, no extra request while hookd works;
* ``sim.bench.*`` controls: ``flip`` (READY events for many images from a thread inside the
  simulator, paced over a window, through the same code path as ``sim.set_image_state``),
  ``wait`` (blocks server-side until images are fixed), ``records``, ``reset``, ``verify``,
  ``signature``, ``last_payload`` and ``last_calls``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from hookd.testing.objects import Image, ImageState, PoolObject, VMTemplate
from hookd.testing.registry import seeded_registry
from hookd.testing.simulator import Simulator
from hookd.testing.standalone import add_endpoint_options, serve

READY = int(ImageState.READY)

class Bench:
    """Timing records and the ``sim.bench.*`` controls."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._cond = threading.Condition()
        self.ready_at: dict[int, float] = {}
        self.status_at: dict[int, float] = {}
        self.template_at: dict[int, float] = {}
        self.template_changes: dict[int, int] = {}
        self.last_call: dict[str, float] = {}
        self.payloads: dict[str, str] = {}
        self.flip_span: tuple[float, float] = (0.0, 0.0)
        self.flipping = False
        # Append-only log of ("s", image id) / ("t", template id) records, so a waiter
        # only looks at what is new instead of rescanning its whole id set.
        self._log: list[tuple[str, int]] = []

    # -- instrumentation ------------------------------------------------------------------
    def install(self) -> None:
        world, oned, faults = self.sim.world, self.sim.oned, self.sim.faults
        save_image: Callable[[Image], None] = world.save_image
        count_change: Callable[[PoolObject], None] = world.count_template_change
        execute: Callable[..., Any] = oned.execute
        count: Callable[[str], None] = faults.count

        def timed_save_image(image: Image) -> None:
            now = time.monotonic()
            if image.state == READY and image.prev_state != READY:
                with self._cond:
                    self.ready_at[image.oid] = now
            save_image(image)
            if image.oid not in self.status_at and image.template.get("HOOKD_STATUS"):
                with self._cond:
                    self.status_at.setdefault(image.oid, time.monotonic())
                    self._log.append(("s", image.oid))
                    self._cond.notify_all()

        def timed_count_change(obj: PoolObject) -> None:
            count_change(obj)
            if isinstance(obj, VMTemplate):
                now = time.monotonic()
                with self._cond:
                    if obj.oid not in self.template_at:
                        self.template_at[obj.oid] = now
                        self._log.append(("t", obj.oid))
                    self.template_changes[obj.oid] = self.template_changes.get(obj.oid, 0) + 1

        def captured_execute(method: str, params: Any, injected: Any) -> Any:
            if method in ("one.template.update", "one.image.update") and len(params) > 2:
                self.payloads[method] = str(params[2])
            return execute(method, params, injected)

        def timed_count(method: str) -> None:
            self.last_call[method] = time.monotonic()
            count(method)

        world.save_image = timed_save_image  # type: ignore[method-assign]
        world.count_template_change = timed_count_change  # type: ignore[method-assign]
        oned.execute = captured_execute  # type: ignore[method-assign,assignment]
        faults.count = timed_count  # type: ignore[method-assign]

    # -- controls ------------------------------------------------------------------------
    def reset(self) -> bool:
        with self._cond:
            self.ready_at.clear()
            self.status_at.clear()
            self.template_at.clear()
            self.template_changes.clear()
            self.last_call.clear()
            self._log.clear()
            self.flip_span = (0.0, 0.0)
        return True

    def now(self) -> float:
        return time.monotonic()

    def flip(self, image_ids: list[int], window: float) -> float:
        """Turn ``image_ids`` READY from a thread, the i-th at ``start + window * i / n``
        (as fast as the simulator can when it falls behind). One STATE event per image,
        through ``sim.set_image_state``'s own code path. Returns the start time."""
        ids = [int(i) for i in image_ids]
        with self._cond:
            # One flip at a time: a new one starts when the previous one is done.
            while self.flipping:
                self._cond.wait(1.0)
            self.flipping = True
        start = time.monotonic() + 0.01

        def run() -> None:
            n = max(1, len(ids))
            try:
                for i, image_id in enumerate(ids):
                    due = start + window * i / n
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self.sim.controls.set_image_state(image_id, "READY")
            finally:
                end = time.monotonic()
                with self._cond:
                    self.flip_span = (start, end)
                    self.flipping = False
                    self._cond.notify_all()

        threading.Thread(target=run, name="bench-flip", daemon=True).start()
        return start

    def flip_done(self, timeout: float) -> list[float]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.flipping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return [self.flip_span[0], self.flip_span[1], float(self.flipping)]

    def wait(self, image_ids: list[int], template_ids: list[int], timeout: float) -> bool:
        """Block until every image has its status written and every template changed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            images = {i for i in image_ids if i not in self.status_at}
            templates = {t for t in template_ids if t not in self.template_at}
            position = len(self._log)
            while images or templates:
                for kind, oid in self._log[position:]:
                    (images if kind == "s" else templates).discard(oid)
                position = len(self._log)
                if not images and not templates:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 1.0))
            return True

    def records(self, image_ids: list[int], template_ids: list[int]) -> dict[str, list[float]]:
        """Timestamps per id (-1: none): ready/status per image, template per template."""
        with self._cond:
            return {
                "ready": [self.ready_at.get(i, -1.0) for i in image_ids],
                "status": [self.status_at.get(i, -1.0) for i in image_ids],
                "template": [self.template_at.get(t, -1.0) for t in template_ids],
                "changes": [float(self.template_changes.get(t, 0)) for t in template_ids],
            }

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"ready": len(self.ready_at), "status": len(self.status_at),
                    "template": len(self.template_at)}

    def last_calls(self) -> dict[str, float]:
        return dict(self.last_call)

    def last_payload(self, method: str) -> str:
        return self.payloads.get(method, "")

    def signature(self, image_id: int, template_id: int) -> dict[str, Any]:
        """What a fix wrote, without the ids and the id-dependent digest: two fixes of the
        same kind of image compare equal when they wrote the same thing."""
        world = self.sim.world
        with world.lock:
            image = world.images.get(image_id)
            template = world.templates.get(template_id)
            if image is None or template is None:
                raise ValueError("no such image or template")
            out: dict[str, Any] = {"image": {}, "template": {}}
            for name in ("HOOKD_STATUS", "HOOKD_REASON", "HOOKD_SOURCE", "HOOKD_OCI_CONFIG"):
                out["image"][name] = image.template.get(name) or ""
            for vector in ("OS", "CONTEXT", "HOOKD"):
                found = template.template.vectors(vector)
                values = dict(found[0].value) if found else {}
                values.pop("IMAGE_ID", None)
                out["template"][vector] = values
            return out

    def verify(self, image_ids: list[int], template_ids: list[int]) -> dict[str, int]:
        """How many images say ``applied`` and how many templates carry a kernel and a
        START_SCRIPT (what tests/daemon/checks.py calls fixed)."""
        world = self.sim.world
        applied = fixed = 0
        with world.lock:
            for image_id in image_ids:
                image = world.images.get(image_id)
                if image is not None and image.template.get("HOOKD_STATUS") == "applied":
                    applied += 1
            for template_id in template_ids:
                template = world.templates.get(template_id)
                if template is None:
                    continue
                os_vec = template.template.vectors("OS")
                ctx = template.template.vectors("CONTEXT")
                if (os_vec and os_vec[0].value.get("KERNEL_DS", "").startswith("$FILE[")
                        and ctx and ctx[0].value.get("START_SCRIPT_BASE64")):
                    fixed += 1
        return {"applied": applied, "fixed_templates": fixed}

    def methods(self) -> dict[str, Callable[..., Any]]:
        return {
            "sim.bench.reset": self.reset,
            "sim.bench.now": self.now,
            "sim.bench.flip": lambda ids, window=0.0: self.flip(ids, float(window)),
            "sim.bench.flip_done": lambda timeout=600.0: self.flip_done(float(timeout)),
            "sim.bench.wait": lambda i, t, timeout=60.0: self.wait(i, t, float(timeout)),
            "sim.bench.records": self.records,
            "sim.bench.counts": self.counts,
            "sim.bench.last_calls": self.last_calls,
            "sim.bench.last_payload": self.last_payload,
            "sim.bench.signature": self.signature,
            "sim.bench.verify": self.verify,
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simproc",
                                     description="The simulator, instrumented for benchmarks.")
    add_endpoint_options(parser, xmlrpc="127.0.0.1:0", zmq="tcp://127.0.0.1:0")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    registry = seeded_registry()

    def make() -> Simulator:
        sim = Simulator(one_version=args.one_version, auth=args.auth,
                        ready_delay=args.ready_delay)
        bench = Bench(sim)
        bench.install()
        sim.add_controls(bench.methods())
        return sim

    return serve("benchmarks.simproc", args, make, banner_extra=f" registry={registry.host}",
                 cleanup=[registry.stop])


if __name__ == "__main__":
    sys.exit(main())
