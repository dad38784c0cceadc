"""The functional core: facts and settings in, an :class:`~handlers.plan.ImagePlan` out.

For one image: is it hookd's business (scope, opt attribute, container classification,
state)? For each VM template that uses it: which disk is the root, which hypervisor will run
it, what that hypervisor's handler wants, the START_SCRIPT for Docker images, the scheduler
pin. Then the ownership rules decide which wanted values may be written:

* a value already in place is left alone;
* a value hookd wrote before (its short hash is in the template's ``HOOKD`` vector) may be
  replaced when hookd now wants something else;
* a value a person changed after hookd set it, or set before hookd came, is never
  overwritten (``set`` wants); values derived from the current one (``merge`` wants: kernel
  command-line tokens, scheduler pins) are applied unless a person changed them after hookd.

The result is one merge update per changed template (whole OS/CONTEXT/DISK vectors rebuilt
from their current values plus hookd's edits) and the status attributes for the image.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from handlers import handler_for
from handlers.base import (
    SCHED_REQUIREMENTS,
    START_SCRIPT_BASE64,
    HandlerInput,
    current_value,
    decode_value,
    rebuilt,
    usable_kernel,
)
from handlers.classify import Classification, classify
from handlers.disks import boot_disk_index, disks, references
from handlers.facts import TYPE_CDROM, TYPE_OS, ImageFacts, VmTemplateFacts
from handlers.hypervisor import pin_requirements, resolve
from handlers.model import (
    KERNEL_HYPERVISORS,
    AttrPath,
    OciProblem,
    OciProcessFacts,
    OciUnavailable,
    PlannerSettings,
    Want,
    World,
)
from handlers.plan import (
    CONCURRENT_ATTR,
    DIGEST_ATTR,
    IMAGE_STATUS_ATTRS,
    OCI_DIGEST_ATTR,
    REASON_ATTR,
    SOURCE_ATTR,
    STATUS_ATTR,
    STATUS_PRIORITY,
    TEMPLATES_ATTR,
    Change,
    ImagePlan,
    Status,
    TemplateEdit,
    TemplateOutcome,
    digest_of,
    short_hash,
)
from handlers.record import RECORD_ATTR, Record, path_of
from handlers.retarget import retarget
from handlers.template import REMOVE, Vector


def known_hypervisors(world: World) -> tuple[str, ...]:
    """VM_MADs that exist on this OpenNebula version (Firecracker, LXD and vCenter went in
    6.10/7.0: commit 41f25a2518 and c1bbbdab28 in OpenNebula/one)."""
    if world.one_version >= (6, 10, 0):
        return ("kvm", "qemu", "lxc")
    return ("kvm", "qemu", "lxc", "lxd", "firecracker", "vcenter")


def usable(hypervisor: str, world: World) -> bool:
    if hypervisor in ("lxc", "lxd"):
        return True
    if hypervisor in KERNEL_HYPERVISORS:
        return not isinstance(usable_kernel(hypervisor, world), str)
    return False


def choose(candidates: Sequence[str], world: World, settings: PlannerSettings) -> str:
    def rank(hv: str) -> tuple[int, str]:
        order = {name: i for i, name in enumerate(settings.prefer)}
        alias = "kvm" if hv == "qemu" else ("lxc" if hv == "lxd" else hv)
        return (order.get(hv, order.get(alias, len(order))), hv)

    ordered = sorted(candidates, key=rank)
    for hv in ordered:
        if usable(hv, world):
            return hv
    return ordered[0]


def _override(image: ImageFacts, world: World, settings: PlannerSettings) -> str | None:
    if image.datastore_id in settings.datastore_overrides:
        return settings.datastore_overrides[image.datastore_id]
    if world.datastore is not None:
        for cluster_id in world.datastore.cluster_ids:
            if cluster_id in settings.cluster_overrides:
                return settings.cluster_overrides[cluster_id]
    return None


@dataclass(frozen=True, slots=True)
class _Evaluation:
    changes: list[tuple[Want, str | None]]
    owned: list[tuple[str, str]]
    notes: list[str]


def _evaluate(template: VmTemplateFacts, wants: Iterable[Want],
              record: Mapping[str, str]) -> _Evaluation:
    changes: list[tuple[Want, str | None]] = []
    owned: list[tuple[str, str]] = []
    notes: list[str] = []
    for want in wants:
        current = current_value(template, want.path)
        recorded = record.get(want.path.record_key)
        owned.append((str(want.path), short_hash(want.value)))
        if current == want.value:
            continue
        if recorded is not None and recorded != short_hash(current):
            notes.append(f"kept {want.path}={_show(current)}: a person changed it after hookd "
                         f"set it")
            continue
        if recorded is None and current not in (None, "") and want.mode == "set":
            notes.append(f"kept {want.path}={_show(current)} set by a person (hookd would set "
                         f"{_show(want.value)})")
            continue
        changes.append((want, current))
    return _Evaluation(changes, owned, notes)


def _show(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "(unset)"
    text = value.replace("\n", "\\n")
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _build_edit(template: VmTemplateFacts, changes: list[tuple[Want, str | None]],
                record: Record, image: ImageFacts, hypervisor: str) -> TemplateEdit:
    shown: list[Change] = []
    hashes = dict(record.hashes)
    was = dict(record.was)
    for want, before in changes:
        key = want.path.record_key
        if key not in record.hashes and before is not None:
            # hookd takes this value over: remember what was there, to undo exactly.
            was[key] = before
        hashes[key] = short_hash(want.value)
        shown.append(Change(str(want.path), before, want.value))
    new_record = Record(image.id, hypervisor, hashes, was).to_vector()
    attributes = rebuilt(template.template, [(w.path, w.value) for w, _ in changes], str)
    attributes.append((RECORD_ATTR, (new_record,)))
    return TemplateEdit(template.id, tuple(attributes), tuple(shown))


def _start_script_wants(template: VmTemplateFacts, world: World, settings: PlannerSettings,
                        record: Mapping[str, str]
                        ) -> tuple[list[Want], list[str], tuple[Status, str] | None]:
    """Wants for CONTEXT/START_SCRIPT_BASE64, notes, and a status that overrides the
    handler's (error or waiting) with its reason, or None."""
    oci = world.oci
    if oci is None:
        return [], [], ("error", "no image config was gathered for this Docker image")
    if isinstance(oci, OciProblem):
        return [], [], ("error", oci.reason)
    context = template.template.vector("CONTEXT") or Vector()
    current_b64 = context.get("START_SCRIPT_BASE64") or ""
    current_plain = context.get("START_SCRIPT") or ""
    ours_b64 = bool(current_b64) and record.get(START_SCRIPT_BASE64.record_key) == short_hash(
        current_b64)
    if current_b64 and not ours_b64:
        return [], ["kept the START_SCRIPT_BASE64 a person wrote; hookd's script is not "
                    "installed (remove it to let hookd start the app)"], None
    if current_plain and settings.start_script_policy == "keep":
        return [], ["kept the START_SCRIPT a person wrote; hookd's script is not installed "
                    "(start_script.policy: append combines both)"], None
    if isinstance(oci, OciUnavailable):
        if ours_b64:
            # Never downgrade: the script hookd installed from the real config stays (and
            # stays owned, so the image's digest does not change with the outage).
            return ([Want(START_SCRIPT_BASE64, current_b64, "set")],
                    [f"{oci.reason}; the START_SCRIPT installed from it stays"], None)
        return [], [], ("waiting", f"waiting for the image config: {oci.reason}")
    notes = [oci.note] if oci.note else []
    if current_plain:
        from handlers.start_script import StartScriptError, compose_with_user_script

        try:
            combined = compose_with_user_script(current_plain, oci.script)
        except StartScriptError as exc:
            return [], [f"kept the START_SCRIPT a person wrote: {exc.reason}"], None
        value = base64.b64encode(combined.encode("utf-8")).decode("ascii")
        return [Want(START_SCRIPT_BASE64, value, "merge")], notes, None
    return [Want(START_SCRIPT_BASE64, _base64(oci.script), "set")], notes, None


@functools.lru_cache(maxsize=64)
def _base64(script: str) -> str:
    """CONTEXT/START_SCRIPT_BASE64 for a script (cached: one app's imports share theirs)."""
    return base64.b64encode(script.encode("utf-8")).decode("ascii")


def plan_template(image: ImageFacts, template: VmTemplateFacts, world: World,
                  settings: PlannerSettings, classification: Classification) -> TemplateOutcome:
    refs = disks(template)
    ours = [d.index for d in refs if references(d, image, template)]
    name = template.name
    if not ours:
        return TemplateOutcome(template.id, name, "skipped", "does not use this image")
    record_facts = Record.read(template.template.vector(RECORD_ATTR))
    record = record_facts.hashes

    boot = boot_disk_index(template)
    root = boot if boot is not None and boot < len(refs) else 0
    if root in ours:
        disk_index, is_boot = root, True
    else:
        disk_index, is_boot = ours[0], False
        root_ref = refs[root]
        if not root_ref.is_volatile:
            root_image = (world.disk_images.get(root_ref.image_id)
                          if root_ref.image_id is not None else None)
            if root_image is None or root_image.type in (TYPE_OS, TYPE_CDROM):
                what = (f"image {root_image.id} ({root_image.name})" if root_image
                        else f"image {root_ref.image_id or root_ref.image_name!r}")
                return TemplateOutcome(template.id, name, "skipped",
                                       f"boots from DISK {root} ({what}), not from this image")

    hosts = [h.vm_mad for h in world.hosts]
    # The export's LXC template on a cloud that cannot run it: seen as re-targeted to KVM.
    actual = template
    retargeted = (retarget(image, template, world, record_facts, known_hypervisors(world))
                  if settings.retarget and classification.container else None)
    if retargeted is not None:
        template = retargeted.template
    # hookd's own pin must not feed back into its choice: decide from the requirements the
    # template had before hookd pinned it.
    requirements = (template.template.get("SCHED_REQUIREMENTS") if retargeted is not None
                    else record_facts.before_hookd(SCHED_REQUIREMENTS.record_key,
                                                   template.template.get("SCHED_REQUIREMENTS")))
    resolution = resolve(
        template_hypervisor=template.template.get("HYPERVISOR"),
        requirements=requirements,
        host_hypervisors=hosts,
        override=_override(image, world, settings),
        known=known_hypervisors(world),
    )
    if not resolution.candidates:
        ds = world.datastore
        where = f"datastore {ds.id} ({ds.name})" if ds else f"datastore {image.datastore_id}"
        have = sorted(set(hosts))
        says = ("the template's HYPERVISOR is" if resolution.evidence == "template HYPERVISOR"
                else "SCHED_REQUIREMENTS allow")
        if resolution.allowed and have:
            why = (f"waiting for a host: {says} {', '.join(resolution.allowed)} but the "
                   f"clusters of {where} only have {', '.join(have)} hosts")
        elif resolution.allowed:
            why = (f"waiting for a host: no host in the clusters of {where} ({says} "
                   f"{', '.join(resolution.allowed)})")
        else:
            why = (f"waiting for a host: no host in the clusters of {where} and the template "
                   f"names no hypervisor")
        return TemplateOutcome(template.id, name, "waiting", why)
    hypervisor = choose(resolution.candidates, world, settings)
    notes: list[str] = [retargeted.note] if retargeted is not None else []
    if resolution.conflict:
        notes.append(f"the template's HYPERVISOR is {resolution.conflict} but its "
                     f"SCHED_REQUIREMENTS exclude it; the scheduler follows SCHED_REQUIREMENTS "
                     f"(fixed for {hypervisor})")
    if len(resolution.candidates) > 1:
        notes.append(f"chose {hypervisor} among {', '.join(resolution.candidates)} "
                     f"({resolution.evidence}; preference {', '.join(settings.prefer)})")

    result = handler_for(hypervisor)(HandlerInput(
        image=image, template=template, hypervisor=hypervisor, disk_index=disk_index,
        is_boot_disk=is_boot, world=world, settings=settings, record=record,
    ))
    notes.extend(result.notes)
    # A re-target is written together with the fix it makes possible, or not at all.
    wants: list[Want] = ([*retargeted.wants] if retargeted is not None
                         and result.status == "applied" else [])
    wants.extend(result.wants)
    status: Status = result.status
    reason = result.reason

    if result.status != "unsupported":
        if classification.docker and settings.start_script:
            script_wants, script_notes, problem = _start_script_wants(template, world,
                                                                      settings, record)
            wants.extend(script_wants)
            notes.extend(script_notes)
            if problem is not None and problem[0] == "error":
                status, reason = "error", f"no START_SCRIPT: {problem[1]}"
            elif problem is not None and status == "applied":
                status, reason = problem
        if (resolution.needs_pin and settings.pin and usable(hypervisor, world)
                and not any(w.path == SCHED_REQUIREMENTS for w in wants)):
            wants.append(Want(SCHED_REQUIREMENTS,
                              pin_requirements(requirements, hypervisor, hosts), "merge"))

    evaluation = _evaluate(actual, wants, record)
    notes.extend(evaluation.notes)
    edit = (_build_edit(actual, evaluation.changes, record_facts, image, hypervisor)
            if evaluation.changes else None)
    return TemplateOutcome(template.id, name, status, reason, hypervisor, edit, tuple(notes),
                           tuple(evaluation.owned))


def _aggregate(relevant: Sequence[TemplateOutcome]) -> tuple[Status, str]:
    if not relevant:
        return "skipped", "no VM template uses this image yet"
    status = min((o.status for o in relevant), key=lambda s: STATUS_PRIORITY[s])
    parts: list[str] = []
    for outcome in relevant:
        if outcome.status == "applied" and not outcome.notes:
            continue
        text = outcome.reason if outcome.status != "applied" else "; ".join(outcome.notes)
        if not text:
            continue
        parts.append(text if len(relevant) == 1 else f"template {outcome.template_id} "
                     f"({outcome.template_name}): {text}")
    return status, "; ".join(parts)


def start(image: ImageFacts, world: World, settings: PlannerSettings
          ) -> ImagePlan | ImagePlanning:
    """Triage: a final plan when the image is not hookd's business, else its planning."""
    if settings.scope_datastores and image.datastore_id not in settings.scope_datastores:
        return ImagePlan(image.id, None, f"datastore {image.datastore_id} is out of scope")
    classification = classify(image, world, settings)
    if classification.opted_out:
        return _with_status(image, "skipped", f"opted out ({settings.opt_attribute})", (),
                            None, world)
    if not classification.container:
        return ImagePlan(image.id, None, classification.reason, undo=True)
    if not image.usable:
        return ImagePlan(image.id, None,
                         f"image is {image.state_name}; hookd acts once it is READY")
    return ImagePlanning(image, world, settings, classification)


def _concurrent_lines(current: str | None, new: Mapping[int, str]) -> str:
    """HOOKD_CONCURRENT with a line per template: what was there, a new note replacing the
    line of its template."""
    lines: dict[str, str] = {}
    for line in (current or "").splitlines():
        head = line.split(":", 1)[0]
        if line.strip():
            lines[head] = line
    for template_id, note in sorted(new.items()):
        lines[f"template {template_id}"] = f"template {template_id}: {note}"
    return "\n".join(lines.values())


class ImagePlanning:
    """One image's plan, built template by template: the one composition of triage, the
    per-template plan and the conclusion. :func:`plan_for` runs it over a list; a sweep
    feeds it templates as it reads them from the pool (keeping only the outcomes)."""

    def __init__(self, image: ImageFacts, world: World, settings: PlannerSettings,
                 classification: Classification) -> None:
        self.image = image
        self.world = world
        self.settings = settings
        self.classification = classification
        self.outcomes: list[TemplateOutcome] = []

    def add(self, template: VmTemplateFacts, *, world: World | None = None,
            keep_edit: bool = True) -> TemplateOutcome:
        """Plan ``template``, in ``world`` if given (the image's world plus facts of this
        template's other disks). ``keep_edit=False``: keep what the digest and the status
        need, not the payload."""
        outcome = plan_template(self.image, template, world or self.world, self.settings,
                                self.classification)
        self.outcomes.append(outcome if keep_edit else replace(outcome, edit=None))
        return outcome

    def reuse(self, outcome: TemplateOutcome) -> None:
        """Take an outcome :func:`plan_template` gave for exactly these inputs before (it is
        pure: the same inputs give the same outcome)."""
        self.outcomes.append(outcome)

    def finish(self, concurrent: Mapping[int, str] | None = None) -> ImagePlan:
        """The image's status from its templates' outcomes, and the attributes to write.

        ``concurrent``: template id -> a sentence about an update by someone else that
        hookd's update of it may have overwritten; kept on the image (HOOKD_CONCURRENT) and
        named in the reason until the operator removes it.
        """
        relevant = tuple(o for o in self.outcomes if o.reason != "does not use this image")
        status, reason = _aggregate(relevant)
        noted = _concurrent_lines(self.image.template.get(CONCURRENT_ATTR), concurrent or {})
        if noted:
            reason = "; ".join(part for part in (reason, noted.replace("\n", "; ")) if part)
        source = None
        if self.classification.docker and isinstance(self.world.oci, OciProcessFacts):
            source = self.world.oci.source
        elif self.classification.docker and isinstance(self.world.oci, OciUnavailable):
            source = self.image.template.get(SOURCE_ATTR)  # unchanged by an outage
        return _with_status(self.image, status, reason, relevant, source, self.world, noted)


def plan_for(image: ImageFacts, templates: Iterable[VmTemplateFacts], world: World,
             settings: PlannerSettings, concurrent: Mapping[int, str] | None = None
             ) -> ImagePlan:
    """The whole plan for one image and the templates that (may) use it: what the engine
    writes, what ``hookd plan`` shows, what the tests check. An image that is not a
    container image gets back what hookd wrote for it (:func:`undo_plan`)."""
    started = start(image, world, settings)
    if isinstance(started, ImagePlan):
        return undo_plan(started, image, templates) if started.undo else started
    for template in templates:
        started.add(template)
    return started.finish(concurrent)


def status_plan(image: ImageFacts, status: Status, reason: str) -> ImagePlan:
    """Only HOOKD_STATUS and HOOKD_REASON: a failure hookd gave up on (``error``), or what a
    retry waits for (``waiting``). Nothing else changes, and nothing at all when the image
    already says exactly that: a long wait costs one write per attempt at most."""
    changes: list[Change] = []
    for key, value in ((STATUS_ATTR, status), (REASON_ATTR, reason)):
        current = image.template.get(key)
        if current != value:
            changes.append(Change(key, current, value))
    return ImagePlan(image.id, status, reason, image_changes=tuple(changes))


def undo_plan(image: ImagePlan, facts: ImageFacts,
              templates: Iterable[VmTemplateFacts]) -> ImagePlan:
    """Take back what hookd wrote for an image that is not its business after all.

    Events are hints: a wrong decision (a forged READY event believed, a bug of an earlier
    hookd) may have fixed templates for an image that is not a container image. Every value
    hookd wrote for it that is still as hookd wrote it goes back to what was there before
    (or goes away); a value a person changed since is kept. The template's HOOKD vector and
    the image's HOOKD_* attributes are removed.
    """
    outcomes = tuple(o for o in (_undo_template(facts, t, image.reason) for t in templates)
                     if o is not None)
    changes: list[Change] = []
    for key in IMAGE_STATUS_ATTRS:
        current = facts.template.get(key)
        if current is not None:
            changes.append(Change(key, current, None))
    return replace(image, templates=outcomes, image_changes=tuple(changes))


def _undo_template(image: ImageFacts, template: VmTemplateFacts,
                   why: str) -> TemplateOutcome | None:
    record = Record.read(template.template.vector(RECORD_ATTR))
    if record.image_id != image.id:
        return None
    restored: list[tuple[AttrPath, str | None]] = []
    shown: list[Change] = []
    notes: list[str] = []
    for key, hashed in sorted(record.hashes.items()):
        path = path_of(key)
        current = current_value(template, path)
        earlier = record.was.get(key)
        if current == earlier:
            continue
        if short_hash(current) != hashed:
            notes.append(f"kept {path}={_show(current)}: a person changed it after hookd set it")
            continue
        restored.append((path, earlier))
        shown.append(Change(str(path), current, earlier))
    attributes = rebuilt(template.template, restored, decode_value)
    attributes.append((RECORD_ATTR, (REMOVE,)))
    shown.append(Change(RECORD_ATTR, "(hookd's record)", None))
    edit = TemplateEdit(template.id, tuple(attributes), tuple(shown))
    return TemplateOutcome(template.id, template.name, "skipped",
                           f"undone: {why}", record.hypervisor or None, edit, tuple(notes))


def _with_status(image: ImageFacts, status: Status, reason: str,
                 outcomes: tuple[TemplateOutcome, ...], source: str | None,
                 world: World, concurrent: str = "") -> ImagePlan:
    digest = digest_of(image.id, outcomes, status, source)
    applied = sorted(o.template_id for o in outcomes if o.status == "applied")
    wanted: dict[str, str] = {
        STATUS_ATTR: status,
        REASON_ATTR: reason,
        TEMPLATES_ATTR: ",".join(str(t) for t in applied),
        DIGEST_ATTR: digest,
    }
    if source is not None:
        wanted[SOURCE_ATTR] = source
        oci = world.oci
        if isinstance(oci, OciProcessFacts) and oci.config_digest:
            wanted[OCI_DIGEST_ATTR] = oci.config_digest
    if concurrent:
        wanted[CONCURRENT_ATTR] = concurrent
    changes: list[Change] = []
    for key, value in wanted.items():
        current = image.template.get(key)
        if (current or "") != value:
            changes.append(Change(key, current, value))
    return ImagePlan(image.id, status, reason, outcomes, tuple(changes), source, digest)
