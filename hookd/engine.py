"""One reconcile: read the facts, ask the pure planner, hand the plan to the applier.

The engine is what a worker runs for a trigger. It never decides what a template should
contain (that is :mod:`handlers.planner`) nor when to run (that is :mod:`hookd.reconciler`).
It also runs sweeps: a paged walk over the image and template pools that rebuilds the
template index and submits every container image whose templates are not as hookd wants.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from lxml import etree

from handlers.classify import Classification
from handlers.errors import TransientError
from handlers.facts import TYPE_KERNEL, TYPE_RAMDISK, ImageFacts, VmTemplateFacts
from handlers.model import OciFacts, PlannerSettings, World
from handlers.plan import (
    CONCURRENT_ATTR,
    IMAGE_STATUS_ATTRS,
    STATUS_ATTR,
    ImagePlan,
    TemplateOutcome,
)
from handlers.planner import ImagePlanning, plan_for, start, status_plan
from hookd import documents
from hookd.applier import Applier
from hookd.client import NotFound, OneClient
from hookd.index import TemplateIndex, disk_refs, template_refs
from hookd.intake import EchoFilter
from hookd.logs import get_logger
from hookd.triggers import SWEEP, Why
from hookd.world import WorldCache, WorldSnapshot, with_template

log = get_logger(__name__)

# (image, final attempt?) -> the OCI facts for a Docker image; raises TransientError to retry.
OciResolver = Callable[[ImageFacts, bool], OciFacts]


class _LockTable:
    """Locks by template so two images sharing a template never interleave their writes: a
    fixed set of stripes, taken in order (no deadlock), never growing with the pool."""

    def __init__(self, stripes: int = 64) -> None:
        self._stripes = [threading.Lock() for _ in range(stripes)]

    @contextmanager
    def hold(self, ids: Iterable[int]) -> Iterator[None]:
        locks = [self._stripes[n] for n in sorted({i % len(self._stripes) for i in ids})]
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield


_STATUS_NAMES = frozenset(IMAGE_STATUS_ATTRS)


def _has_status(image: ImageFacts) -> bool:
    # One pass over the image's attributes: a sweep asks this of every image in the pool.
    return any(attr.name in _STATUS_NAMES and isinstance(attr.value, str)
               for attr in image.template)


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
    templates_updated: list[int] = field(default_factory=list)


class _SweepWorlds:
    """The worlds of one sweep's images, shared: an image's base world depends only on its
    datastore and app (and the world snapshot), and its OCI facts only on its PATH and
    URL_ARGS. 10,000 images of one Docker Hub app in one datastore share one World, and
    their image config is resolved once (it was once per image: 10,000 World objects held
    until the sweep ended, and 10,000 reads and digest checks of the same cached
    manifests)."""

    def __init__(self, world: WorldCache,
                 oci: Callable[[ImageFacts, Classification], OciFacts | None]) -> None:
        self._world = world
        self._oci = oci
        self._bases: dict[tuple[int, int | None], tuple[WorldSnapshot, World]] = {}
        # (resolved?, facts): not resolved = a TransientError, the reconcile retries.
        self._oci_by_ref: dict[tuple[bool, str, str | None], tuple[bool, OciFacts | None]] = {}
        self._completed: dict[tuple[int, int | None, bool, str, str | None],
                              tuple[World, World]] = {}

    def base(self, image: ImageFacts) -> World:
        """``WorldCache.base_world(image)``, computed again after the snapshot changed."""
        snapshot = self._world.snapshot
        key = (image.datastore_id, image.from_app)
        known = self._bases.get(key)
        if known is not None and known[0] is snapshot:
            return known[1]
        world = self._world.base_world(image)
        self._bases[key] = (snapshot, world)
        return world

    def complete(self, image: ImageFacts, classification: Classification) -> World | None:
        """The world of an image without its templates (no other disk image), with its OCI
        facts as a non-final attempt resolves them, or None after a TransientError."""
        try:
            base = self.base(image)
        except TransientError:
            return None
        ref = (classification.docker, image.path, image.template.get("URL_ARGS"))
        key = (image.datastore_id, image.from_app, *ref)
        known = self._completed.get(key)
        if known is not None and known[0] is base:
            return known[1]
        resolved = self._oci_by_ref.get(ref)
        if resolved is None:
            try:
                resolved = (True, self._oci(image, classification))
            except TransientError:
                resolved = (False, None)
            self._oci_by_ref[ref] = resolved
        if not resolved[0]:
            return None
        world = with_template(base, {}, resolved[1])
        self._completed[key] = (base, world)
        return world


@dataclass(frozen=True, slots=True)
class _SweptPlan:
    fingerprint: bytes
    outcome: TemplateOutcome  # without its edit
    needs_edit: bool


def _digest(*values: object) -> bytes:
    """A digest of values' reprs (complete for the planner's inputs: frozen dataclasses of
    strings, numbers, tuples and dicts)."""
    digest = hashlib.blake2b(digest_size=20)
    for value in values:
        digest.update(repr(value).encode("utf-8", "surrogatepass") + b"\0")
    return digest.digest()


class _SweepMemo:
    """One sweep's plans, and the digest of each image's inputs, computed once per image
    (the world's once per World object: images share them)."""

    def __init__(self) -> None:
        self.plans: dict[tuple[int, int], _SweptPlan] = {}
        self._images: dict[int, bytes] = {}
        self._worlds: dict[int, tuple[World, bytes]] = {}

    def inputs(self, planning: ImagePlanning, settings: PlannerSettings) -> bytes:
        known = self._images.get(planning.image.id)
        if known is None:
            world = self._worlds.get(id(planning.world))
            if world is None or world[0] is not planning.world:
                world = (planning.world, _digest(planning.world, settings))
                self._worlds[id(planning.world)] = world
            known = _digest(planning.image) + world[1]
            self._images[planning.image.id] = known
        return known


class Engine:
    def __init__(
        self,
        client: OneClient,
        world: WorldCache,
        index: TemplateIndex,
        applier: Applier,
        settings: PlannerSettings,
        oci: OciResolver | None = None,
        echo: EchoFilter | None = None,
    ) -> None:
        self.client = client
        self.echo = echo or EchoFilter()
        self.world = world
        self.index = index
        self.applier = applier
        self.settings = settings
        self._oci = oci
        self._locks = _LockTable()
        # (image, template) -> what the last sweep planned for them, and from what inputs.
        self._sweep_plans: dict[tuple[int, int], _SweptPlan] = {}

    def reconfigure(self, settings: PlannerSettings, oci: OciResolver | None) -> None:
        self.settings = settings
        self._oci = oci

    # -- facts for one image ---------------------------------------------------------------
    def _oci_facts(self, image: ImageFacts, classification: Classification,
                   final: bool) -> OciFacts | None:
        if not classification.docker or not self.settings.start_script or self._oci is None:
            return None
        return self._oci(image, final)


    # -- reconcile one image -----------------------------------------------------------------
    def reconcile_image(
        self,
        image_id: int,
        *,
        final: bool = False,
        dry_run: bool = False,
        trigger: str = "",
    ) -> ReconcileResult:
        """Read the image and its templates from oned, plan, write.

        Everything hookd decides comes from oned over XML-RPC: an event only names the image
        (its body is never believed). oned has no compare-and-swap, so a person's change that
        lands between hookd's read of a template and its write can be lost in the vectors
        hookd rewrites; the window is kept as short as the wire allows: everything slow (the
        registry, other images' facts) is gathered first, each template is read last, and
        the plan is written at once. What is left of the window is watched
        (:class:`hookd.intake.EchoFilter`): an update by someone else seen inside it is named
        in the image's reason.
        """
        self.world.ensure_fresh()
        try:
            image = self.client.image(image_id)
        except NotFound:
            self.index.forget_image(image_id)
            return ReconcileResult(None)
        base = self.world.base_world(image)
        # What the plan will need, decided from the image alone: only a container image
        # needs its config, only one hookd may act on needs its templates read.
        decided = start(image, base, self.settings)
        template_ids = self.index.templates_for_image(image)
        if isinstance(decided, ImagePlan) and (
                not decided.undo or (not template_ids and not _has_status(image))):
            return self._apply(decided, dry_run, trigger)
        world = base
        if not isinstance(decided, ImagePlan):
            self.index.remember_image(image.id, image.name, image.uid, image.uname)
            # Slow facts first: nothing below may wait for a registry once a template was
            # read.
            world = with_template(base, {}, self._oci_facts(image, decided.classification,
                                                            final))
            self.world.prefetch_images(self.index.disk_image_ids(template_ids), skip=image.id)
        with self._locks.hold(template_ids):
            watched = [] if dry_run else template_ids
            self.echo.watch(watched)
            try:
                facts = [t for tid in template_ids if (t := self._read_template(tid)) is not None]
                world = with_template(world, self.world.other_disk_images(image, facts),
                                      world.oci)
                plan = plan_for(image, facts, world, self.settings,
                                self.echo.concurrent_changes(image.id))
                return self._apply(plan, dry_run, trigger)
            finally:
                self.echo.unwatch(watched)

    def _read_template(self, template_id: int) -> VmTemplateFacts | None:
        """A template as oned has it now, indexed (None, and forgotten, when it is gone)."""
        try:
            template = self.client.template(template_id)
        except NotFound:
            self.index.remove(template_id)
            return None
        self.index.put(template)
        return template

    def _apply(self, plan: ImagePlan, dry_run: bool, trigger: str) -> ReconcileResult:
        if dry_run or plan.is_noop:
            return ReconcileResult(plan)
        result = self.applier.apply(plan, trigger=trigger)
        if any(key == CONCURRENT_ATTR for key, _ in plan.image_attributes):
            self.echo.forget_concurrent(plan.image_id)  # it is on the image now
        return ReconcileResult(plan, result.templates_updated)

    def preview(self, image_id: int) -> ImagePlan | None:
        """The plan for one image without writing anything (``hookd plan``).

        Not a final attempt: a registry that cannot be reached now raises TransientError
        (the service would retry) instead of previewing the fallback."""
        return self.reconcile_image(image_id, dry_run=True, final=False).plan

    # -- a template changed ----------------------------------------------------------------
    def reconcile_template(self, template_id: int) -> list[int]:
        """Re-read a template, refresh the index, return the images it uses."""
        template = self._read_template(template_id)
        return [] if template is None else self.index.resolve(template_refs(template))

    # -- record a failure -------------------------------------------------------------------
    def record_error(self, image_id: int, reason: str, *, trigger: str = "") -> None:
        """Write HOOKD_STATUS=error with the reason, through the applier (best effort: oned
        may be down). Nothing is written when the image already says exactly that."""
        try:
            image = self.client.image(image_id)
        except NotFound:
            return
        self._apply(status_plan(image, "error", reason), False, trigger)

    def record_waiting(self, image_id: int, reason: str, *, trigger: str = "") -> None:
        """Between two attempts: HOOKD_STATUS=waiting and what hookd waits for, through the
        applier. An image that is ``applied`` keeps its status (its templates are fixed; the
        retry only checks again), so an outage never makes a fixed image look broken."""
        try:
            image = self.client.image(image_id)
        except NotFound:
            return
        if image.template.get(STATUS_ATTR) == "applied":
            return
        self._apply(status_plan(image, "waiting", reason), False, trigger)

    # -- sweeps ------------------------------------------------------------------------------
    def _plan_in_sweep(self, planning: ImagePlanning, template: VmTemplateFacts, world: World,
                       element: etree._Element, others: Mapping[int, ImageFacts],
                       memo: _SweepMemo) -> bool:
        """Plan one template of a sweep; True when it needs an edit. The planner is pure, so
        a template whose inputs are exactly those of the previous sweep (the same template
        document, image facts, world and settings) gets the same outcome back without being
        planned again: a periodic sweep of an unchanged pool plans nothing."""
        key = (planning.image.id, template.id)
        fingerprint = hashlib.blake2b(etree.tostring(element), digest_size=20)
        fingerprint.update(memo.inputs(planning, self.settings))
        if others:
            fingerprint.update(_digest(others))
        known = self._sweep_plans.get(key)
        if known is not None and known.fingerprint == fingerprint.digest():
            planning.reuse(known.outcome)
            memo.plans[key] = known
            return known.needs_edit
        outcome = planning.add(template, world=world, keep_edit=False)
        memo.plans[key] = _SweptPlan(fingerprint.digest(), replace(outcome, edit=None),
                                     outcome.edit is not None)
        return outcome.edit is not None

    def sweep(self, submit: Callable[[int, Why], None], *, dry_run: bool = False,
              why: Why = SWEEP) -> SweepStats:
        """Walk both pools, rebuild the index, submit images that need work.

        Templates are planned from the pool page that was just read; only images whose plan
        is not a no-op are submitted, and the reconcile re-reads their templates right
        before writing.
        """
        stats = SweepStats()
        started = time.monotonic()
        # Kernels configured by name are resolved from the image pool walk below.
        wanted_names = self.world.wanted_names()
        candidates: dict[int, ImagePlanning] = {}
        # Images hookd leaves alone without undoing anything (opted out, out of scope, not
        # READY): a template recorded as fixed for one of them is as it should be.
        settled: set[int] = set()
        undo: set[int] = set()
        named: dict[str, list[ImageFacts]] = defaultdict(list)
        self.world.refresh(scan_names=False)
        shared = _SweepWorlds(self.world, lambda image, classification: self._oci_facts(
            image, classification, False))
        settings = self.settings
        names = frozenset(wanted_names)
        for element in self.client.iter_image_elements():
            stats.images += 1
            if documents.plainly_not_ours(element, opt_attribute=settings.opt_attribute,
                                          scope=settings.scope_datastores, names=names):
                continue  # not hookd's business, nothing to take back (start() agrees)
            image = documents.image(element)
            if image.type in (TYPE_KERNEL, TYPE_RAMDISK) and image.name in wanted_names:
                named[image.name].append(image)
            decided = start(image, shared.base(image), self.settings)
            if isinstance(decided, ImagePlan):
                if not decided.undo:
                    settled.add(image.id)
                if ((decided.status is not None and not decided.is_noop)
                        or (decided.undo and _has_status(image))):
                    # A status to write, or one a wrong decision wrote and hookd takes back.
                    undo.add(image.id)
                    submit(image.id, why)
                    stats.submitted += 1
                continue
            self.index.remember_image(image.id, image.name, image.uid, image.uname)
            candidates[image.id] = decided
            stats.container_images += 1
        if wanted_names:
            self.world.note_named_images(named)
            self.world.refresh_kernels()

        needs_work: set[int] = set()
        memo = _SweepMemo()
        resolved: dict[int, bool] = {}  # image -> its world is complete (False: retry later)
        self.index.begin_sweep()
        for element in self.client.iter_template_elements():
            stats.templates += 1
            # Every template is indexed from its DISK vectors; full facts are read only for
            # one that uses an image hookd manages.
            head = documents.template_disks(element)
            refs = self.index.put_refs(head.id, disk_refs(head.disks, head.uid))
            recorded = head.recorded_image
            if (recorded is not None and recorded not in candidates and recorded not in settled
                    and recorded not in undo):
                # Fixed for an image that is not hookd's business: undo what hookd wrote.
                undo.add(recorded)
                submit(recorded, why)
                stats.submitted += 1
            users = [i for i in self.index.resolve(refs) if i in candidates]
            if not users:
                continue
            template = documents.vm_template(element)
            for image_id in users:
                planning = candidates[image_id]
                if image_id not in resolved:
                    complete = shared.complete(planning.image, planning.classification)
                    resolved[image_id] = complete is not None
                    if complete is not None:
                        planning.world = complete
                if not resolved[image_id]:
                    continue
                world = planning.world
                others = self.world.other_disk_images(planning.image, [template])
                if others:
                    world = with_template(world, {**world.disk_images, **others}, world.oci)
                # Only the fact that this image needs work is kept: its reconcile re-reads
                # the template and rebuilds the edit right before writing.
                if self._plan_in_sweep(planning, template, world, element, others, memo):
                    needs_work.add(image_id)
        stats.forgotten_templates = len(self.index.end_sweep())
        self._sweep_plans = memo.plans

        for image_id, planning in candidates.items():
            # World not complete (False): its reconcile retries the registry with backoff.
            if resolved.get(image_id) is False or (
                    (image_id in needs_work or not planning.finish().is_noop) and not dry_run):
                submit(image_id, why)
                stats.submitted += 1
        stats.duration = time.monotonic() - started
        log.info("sweep.done", images=stats.images, container_images=stats.container_images,
                 templates=stats.templates, submitted=stats.submitted,
                 forgotten_templates=stats.forgotten_templates,
                 seconds=round(stats.duration, 3), dry_run=dry_run)
        return stats
