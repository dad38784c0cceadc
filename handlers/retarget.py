"""Re-targeting a marketplace export to KVM: which templates qualify, and what changes.

OpenNebula 7.x's Linux Containers marketplace creates, with every import, a VM template pinned
to LXC (``SCHED_REQUIREMENTS = "HYPERVISOR=lxc & ARCH=x86_64"``, ``HYPERVISOR = "lxc"``,
``RAW = [TYPE = "lxc", ...]``, ``LXC_UNPRIVILEGED``: the linuxcontainers driver's template,
recorded from a real oned 7.4.0). On a cloud with KVM hosts only, that template can run
nowhere. hookd re-targets it to KVM when, and only when, the facts show it is the export's
template as the export created it:

* the image came from a marketplace app, and the app's VM template (VMTEMPLATE64) plus the
  image's DISK is exactly the template (NAME aside), once what hookd itself wrote is taken
  back (its record says what that was): anything else is a person's template, never touched;
* with its own requirements the template can run on no host of the image's clusters;
* a KVM host is there.

Then the hypervisor-specific attributes become KVM's: HYPERVISOR, the HYPERVISOR comparison of
SCHED_REQUIREMENTS, and the LXC-only attributes go (a RAW of TYPE lxc, LXC_*), so nothing
LXC-only reaches a KVM VM. Every change is recorded like any other (what was there is kept in
the template's HOOKD record, so it can be undone exactly) and named in the image's reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from handlers.base import current_value, decode_value, rebuilt
from handlers.facts import ImageFacts, VmTemplateFacts
from handlers.hypervisor import resolve, same_boot
from handlers.model import AttrPath, Want, World
from handlers.plan import short_hash
from handlers.record import Record, path_of
from handlers.template import Attribute, Removal, Template, Vector

# Attributes only the LXC (7.x) and LXD (6.x) drivers read: LXC_UNPRIVILEGED, LXC_PROFILES,
# LXD_SECURITY_PRIVILEGED, ...
LXC_ONLY = ("LXC_", "LXD_")
_HYPERVISOR_IN_REQUIREMENTS = re.compile(r'(\bHYPERVISOR\s*=\s*)(\\?"?)lx[cd*]\2',
                                         re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Retarget:
    template: VmTemplateFacts  # the template as the plan sees it once re-targeted
    wants: tuple[Want, ...]
    note: str


def before_hookd(template: VmTemplateFacts, record: Record) -> Template:
    """The template as it was before hookd changed it: each value hookd wrote that is still as
    written goes back to what was there (or goes away); hookd's record goes too."""
    restored: list[tuple[AttrPath, str | None]] = []
    for key, hashed in record.hashes.items():
        path = path_of(key)
        if short_hash(current_value(template, path)) == hashed:  # else a person changed it
            restored.append((path, record.was.get(key)))
    tmpl = template.template.replaced("HOOKD", [])
    for name, values in rebuilt(template.template, restored, decode_value):
        tmpl = tmpl.replaced(name, [value for value in values if not isinstance(value, Removal)])
    return tmpl


def _canonical(attributes: Iterable[Attribute]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for attr in attributes:
        if attr.name == "NAME":
            continue
        value = attr.value
        out.append((attr.name, tuple(sorted(value.items)) if isinstance(value, Vector)
                    else value))
    return sorted(out, key=repr)


def is_export(original: Template, app_template: Template, image: ImageFacts) -> bool:
    """Whether ``original`` is what the app's export created for ``image``: the app's VM
    template and ``DISK = [ IMAGE_ID = "<image>" ]``, nothing more, nothing less."""
    expected = (*app_template.attributes,
                Attribute("DISK", Vector((("IMAGE_ID", str(image.id)),))))
    return _canonical(original.attributes) == _canonical(expected)


def retarget(image: ImageFacts, template: VmTemplateFacts, world: World, record: Record,
             known: Iterable[str]) -> Retarget | None:
    """What re-targeting ``template`` to KVM takes, or None when it does not qualify."""
    app = world.app
    if app is None or app.vm_template is None:
        return None
    hosts = [h.vm_mad for h in world.hosts]
    kvm = next((h for h in ("kvm", "qemu") if h in hosts), None)
    if kvm is None or resolve(template_hypervisor=app.vm_template.get("HYPERVISOR"),
                              requirements=app.vm_template.get("SCHED_REQUIREMENTS"),
                              host_hypervisors=hosts, override=None, known=known).candidates:
        return None  # no KVM host, or the app's template (the export) runs as it is
    original = before_hookd(template, record)
    if not is_export(original, app.vm_template, image):
        return None
    wants: list[Want] = []
    was = original.get("HYPERVISOR")
    if was is not None:
        wants.append(Want(AttrPath(None, "HYPERVISOR"), kvm, "take"))
    requirements = original.get("SCHED_REQUIREMENTS")
    if requirements:
        pinned, count = _HYPERVISOR_IN_REQUIREMENTS.subn(rf"\g<1>\g<2>{kvm}\g<2>", requirements)
        if not count:
            pinned = f'({requirements}) & HYPERVISOR="{kvm}"'
        wants.append(Want(AttrPath(None, "SCHED_REQUIREMENTS"), pinned, "take"))
    for attr in original.attributes:
        lxc_raw = (attr.name == "RAW" and isinstance(attr.value, Vector)
                   and same_boot((attr.value.get("TYPE") or "").lower(), "lxc"))
        if attr.name.startswith(LXC_ONLY) or lxc_raw:
            wants.append(Want(AttrPath(None, attr.name), None, "take"))
    view = template.template
    for want in wants:
        view = view.replaced(want.path.name, [] if want.value is None else [want.value])
    removed = sorted({w.path.name for w in wants if w.value is None})
    market = world.market.name if world.market is not None else "marketplace"
    note = (f"re-targeted to {kvm}: this is the template the {market} export created (app "
            f"{app.id}, unchanged), and no host of the image's clusters can run it as "
            f"exported ({was or 'its requirements'}) while a {kvm} host can"
            + (f"; removed the LXC-only {', '.join(removed)}" if removed else ""))
    return Retarget(VmTemplateFacts(template.id, template.name, template.uid, template.uname,
                                    view), tuple(wants), note)
