"""One reconcile: read the facts, ask the pure planner, hand the plan to the applier.

The engine is what a worker runs for a trigger. It never decides what a template should
contain (that is :mod:`handlers.planner`) nor when to run (that is :mod:`hookd.reconciler`).
It also runs sweeps: a paged walk over the image and template pools that rebuilds the
template index and submits every container image whose templates are not as hookd wants.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from handlers.classify import Classification
from handlers.model import OciFacts, PlannerSettings, World
from handlers.planner import conclude, plan_template, triage
from hookd.applier import Applier
from hookd.client import NotFound, OneClient
from hookd.errors import TransientError
from hookd.facts import TYPE_KERNEL, TYPE_RAMDISK, ImageFacts, VmTemplateFacts
from hookd.index import TemplateIndex
from hookd.logs import get_logger
from hookd.plan import ImagePlan, TemplateOutcome
from hookd.world import WorldCache, with_template

log = get_logger(__name__)

# (image, final attempt?) -> the OCI facts for a Docker image; raises TransientError to retry.
OciResolver = Callable[[ImageFacts, bool], OciFacts]


class _LockTable:
    """Per-template locks so two images sharing a template never interleave their writes."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[int, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, ids: Iterable[int]) -> Iterator[None]:
        ordered = sorted(set(ids))
        locks: list[threading.Lock] = []
        with self._guard:
            for ident in ordered:
                lock, users = self._locks.get(ident, (threading.Lock(), 0))
                self._locks[ident] = (lock, users + 1)
                locks.append(lock)
        held: list[threading.Lock] = []
        try:
            for lock in locks:
                lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()
            with self._guard:
                for ident in ordered:
                    lock, users = self._locks[ident]
                    if users <= 1:
                        del self._locks[ident]
                    else:
                        self._locks[ident] = (lock, users - 1)


@dataclass
class SweepStats:
    images: int = 0
    container_images: int = 0
    templates: int = 0
    submitted: int = 0
    forgotten_templates: int = 0
    duration: float = 0.0


@dataclass
class ReconcileResult:
    plan: ImagePlan | None
    calls: int = 0
    templates_updated: list[int] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        client: OneClient,
        world: WorldCache,
        index: TemplateIndex,
        applier: Applier,
        settings: PlannerSettings,
        oci: OciResolver | None = None,
    ) -> None:
        self.client = client
        self.world = world
        self.index = index
        self.applier = applier
        self.settings = settings
        self._oci = oci
        self._locks = _LockTable()

    def reconfigure(self, settings: PlannerSettings, oci: OciResolver | None) -> None:
        self.settings = settings
        self._oci = oci

    # -- facts for one image ---------------------------------------------------------------
    def _oci_facts(self, image: ImageFacts, classification: Classification,
                   final: bool) -> OciFacts | None:
        if not classification.docker or not self.settings.start_script or self._oci is None:
            return None
        return self._oci(image, final)

    def _complete(self, base: World, image: ImageFacts, templates: list[VmTemplateFacts],
                  classification: Classification, final: bool) -> World:
        others = self.world.other_disk_images(image, templates)
        return with_template(base, others, self._oci_facts(image, classification, final))

    # -- reconcile one image -----------------------------------------------------------------
    def reconcile_image(
        self,
        image_id: int,
        *,
        snapshot: ImageFacts | None = None,
        templates: Mapping[int, VmTemplateFacts] | None = None,
        final: bool = False,
        dry_run: bool = False,
        trigger: str = "",
    ) -> ReconcileResult:
        self.world.ensure_fresh()
        image = snapshot
        if image is None:
            try:
                image = self.client.image(image_id)
            except NotFound:
                self.forget_image(image_id)
                return ReconcileResult(None, 1)
        base = self.world.base_world(image)
        decided = triage(image, base, self.settings)
        if isinstance(decided, ImagePlan):
            return self._apply(decided, dry_run, trigger)
        self.index.remember_image(image.id, image.name, image.uid, image.uname)
        template_ids = self.index.templates_for_image(image)
        with self._locks.hold(template_ids):
            facts = self._read_templates(template_ids, templates or {})
            world = self._complete(base, image, facts, decided, final)
            plan = self._plan(image, facts, world, decided)
            if snapshot is not None and plan.image_attributes and not plan.edits:
                # A READY body carries the image as it was at the transition; before writing
                # only its status, check the current image (a replayed event is a no-op).
                image = self.client.image(image_id)
                plan = self._plan(image, facts, world, decided)
            return self._apply(plan, dry_run, trigger)

    def _read_templates(self, template_ids: Iterable[int],
                        known: Mapping[int, VmTemplateFacts]) -> list[VmTemplateFacts]:
        out: list[VmTemplateFacts] = []
        for template_id in template_ids:
            facts = known.get(template_id)
            if facts is None:
                try:
                    facts = self.client.template(template_id)
                except NotFound:
                    self.index.remove(template_id)
                    continue
                self.index.put(facts)
            out.append(facts)
        return out

    def _plan(self, image: ImageFacts, templates: list[VmTemplateFacts], world: World,
              classification: Classification) -> ImagePlan:
        outcomes = [plan_template(image, t, world, self.settings, classification)
                    for t in templates]
        return conclude(image, outcomes, world, classification)

    def _apply(self, plan: ImagePlan, dry_run: bool, trigger: str) -> ReconcileResult:
        if dry_run or plan.is_noop:
            return ReconcileResult(plan)
        result = self.applier.apply(plan, trigger=trigger)
        return ReconcileResult(plan, result.calls, result.templates_updated)

    def plan_for(self, image_id: int) -> ImagePlan | None:
        """The plan for one image without writing anything (``hookd plan``).

        Not a final attempt: a registry that cannot be reached now raises TransientError
        (the service would retry) instead of previewing the fallback."""
        return self.reconcile_image(image_id, dry_run=True, final=False).plan

    # -- a template changed ----------------------------------------------------------------
    def reconcile_template(self, template_id: int) -> tuple[list[int], VmTemplateFacts | None]:
        """Re-read a template, refresh the index, return the images it uses."""
        try:
            template = self.client.template(template_id)
        except NotFound:
            self.index.remove(template_id)
            return [], None
        refs = self.index.put(template)
        return self.index.resolve(refs), template

    def forget_template(self, template_id: int) -> None:
        self.index.remove(template_id)

    def forget_image(self, image_id: int) -> None:
        self.index.forget_image(image_id)

    # -- record a failure -------------------------------------------------------------------
    def record_error(self, image_id: int, reason: str) -> None:
        """Write HOOKD_STATUS=error with the reason (best effort: oned may be down)."""
        from hookd.plan import REASON_ATTR, STATUS_ATTR, Change
        from hookd.template import to_xml

        try:
            image = self.client.image(image_id)
        except NotFound:
            return
        if (image.template.get(STATUS_ATTR) == "error"
                and image.template.get(REASON_ATTR) == reason):
            return
        attrs = ((STATUS_ATTR, "error"), (REASON_ATTR, reason))
        self.client.update_image(image_id, to_xml(attrs))
        log.error("image.status", image_id=image_id, status="error", reason=reason,
                  changes=[Change(STATUS_ATTR, image.template.get(STATUS_ATTR), "error")
                           .as_dict(),
                           Change(REASON_ATTR, image.template.get(REASON_ATTR), reason)
                           .as_dict()])

    # -- sweeps ------------------------------------------------------------------------------
    def sweep(self, submit: Callable[[int, str], None], *, dry_run: bool = False,
              reason: str = "sweep") -> SweepStats:
        """Walk both pools, rebuild the index, submit images that need work.

        Templates are planned from the pool page that was just read; only images whose plan
        is not a no-op are submitted, and the reconcile re-reads their templates right
        before writing.
        """
        stats = SweepStats()
        started = time.monotonic()
        # Kernels configured by name are resolved from the image pool walk below.
        wanted_names = self.world.wanted_names()
        candidates: dict[int, tuple[ImageFacts, Classification]] = {}
        named: dict[str, list[ImageFacts]] = defaultdict(list)
        self.world.refresh(scan_names=False)
        for image in self.client.iter_images():
            stats.images += 1
            if image.type in (TYPE_KERNEL, TYPE_RAMDISK) and image.name in wanted_names:
                named[image.name].append(image)
            base = self.world.base_world(image)
            decided = triage(image, base, self.settings)
            if isinstance(decided, ImagePlan):
                if decided.status is not None and not decided.is_noop:
                    submit(image.id, reason)
                    stats.submitted += 1
                continue
            self.index.remember_image(image.id, image.name, image.uid, image.uname)
            candidates[image.id] = (image, decided)
            stats.container_images += 1
        if wanted_names:
            self.world.note_named_images(named)
            self.world.refresh_kernels()

        outcomes: dict[int, list[TemplateOutcome]] = defaultdict(list)
        needs_work: set[int] = set()
        worlds: dict[int, World | None] = {}
        self.index.begin_sweep()
        for template in self.client.iter_templates():
            stats.templates += 1
            refs = self.index.put(template)
            if not refs:
                continue
            for image_id in self.index.resolve(refs):
                entry = candidates.get(image_id)
                if entry is None:
                    continue
                image, classification = entry
                if image_id not in worlds:
                    try:
                        worlds[image_id] = self._complete(self.world.base_world(image), image,
                                                          [], classification, final=False)
                    except TransientError:
                        worlds[image_id] = None  # the reconcile retries with backoff
                world = worlds[image_id]
                if world is None:
                    continue
                others = self.world.other_disk_images(image, [template])
                if others:
                    world = with_template(world, {**world.disk_images, **others}, world.oci)
                outcome = plan_template(image, template, world, self.settings, classification)
                if outcome.edit is not None:
                    # Only the fact that this image needs work is kept: its reconcile
                    # re-reads the template and rebuilds the edit right before writing.
                    needs_work.add(image_id)
                    outcome = replace(outcome, edit=None)
                outcomes[image_id].append(outcome)
        stats.forgotten_templates = len(self.index.end_sweep())

        for image_id, (image, classification) in candidates.items():
            attempted = image_id in worlds
            world = worlds.pop(image_id, None)
            if attempted and world is None:
                submit(image_id, reason)
                stats.submitted += 1
                continue
            if world is None:
                world = self.world.base_world(image)
            plan = conclude(image, outcomes.pop(image_id, []), world, classification)
            if (image_id in needs_work or not plan.is_noop) and not dry_run:
                submit(image_id, reason)
                stats.submitted += 1
        stats.duration = time.monotonic() - started
        log.info("sweep.done", images=stats.images, container_images=stats.container_images,
                 templates=stats.templates, submitted=stats.submitted,
                 forgotten_templates=stats.forgotten_templates,
                 seconds=round(stats.duration, 3), dry_run=dry_run)
        return stats
