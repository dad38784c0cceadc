"""Which DISK of a VM template is the image, which disk boots, which device it will get.

Device names are predicted the way oned assigns them at instantiation
(``VirtualMachineDisks::get_images`` and ``assign_disk_targets`` in
src/vm/VirtualMachineDisk.cc, ``Image::disk_attribute`` in src/image/Image.cc, 6.8.3):

* a DISK with an explicit TARGET keeps it, and its target is reserved first;
* the prefix is the DISK's DEV_PREFIX, else the image's DEV_PREFIX, else oned's
  DEFAULT_DEVICE_PREFIX (DEFAULT_CDROM_DEVICE_PREFIX for CD-ROM images);
* the first OS-type disk gets the first free letter of its prefix, then CD-ROMs and the
  context CD, then the remaining OS disks and datablocks (volatile disks are datablocks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from handlers.facts import TYPE_CDROM, TYPE_DATABLOCK, TYPE_OS, ImageFacts, VmTemplateFacts
from handlers.template import Vector


@dataclass(frozen=True, slots=True)
class DiskRef:
    index: int
    vector: Vector

    @property
    def image_id(self) -> int | None:
        value = (self.vector.get("IMAGE_ID") or "").strip()
        return int(value) if value.isdigit() else None

    @property
    def image_name(self) -> str | None:
        return self.vector.get("IMAGE")

    @property
    def is_volatile(self) -> bool:
        return self.image_id is None and self.image_name is None


def disks(template: VmTemplateFacts) -> list[DiskRef]:
    return [DiskRef(i, v) for i, v in enumerate(template.template.vectors("DISK"))]


def references(disk: DiskRef, image: ImageFacts, template: VmTemplateFacts) -> bool:
    """Does this DISK name this image? (``VirtualMachineDisk::get_image_id``/``get_uid``)."""
    if disk.image_id is not None:
        return disk.image_id == image.id
    name = disk.image_name
    if name is None or name != image.name:
        return False
    uid = (disk.vector.get("IMAGE_UID") or "").strip()
    if uid:
        return uid.isdigit() and int(uid) == image.uid
    uname = disk.vector.get("IMAGE_UNAME")
    if uname:
        return uname == image.uname
    # No owner given: oned uses the VM owner's uid; the template owner is our best proxy.
    return template.uid == image.uid


_BOOT_DISK = re.compile(r"^\s*disk(\d+)\s*$", re.IGNORECASE)


def boot_disk_index(template: VmTemplateFacts) -> int | None:
    """The disk named first in OS/BOOT (``disk1,nic0``), if any.

    The Firecracker and LXC drivers take the root disk from OS/BOOT's first entry, else the
    first DISK (src/vmm_mad/remotes/lib/opennebula_vm.rb).
    """
    os_vec = template.template.vector("OS")
    boot = os_vec.get("BOOT") if os_vec else None
    if not boot:
        return None
    first = boot.split(",")[0]
    match = _BOOT_DISK.match(first)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Prediction:
    target: str
    certain: bool
    reason: str = ""


def effective_prefix(disk: DiskRef, image: ImageFacts | None, default: str,
                     cdrom_default: str) -> str:
    prefix = (disk.vector.get("DEV_PREFIX") or "").strip()
    if prefix:
        return prefix
    if image is not None:
        prefix = (image.template.get("DEV_PREFIX") or "").strip()
        if prefix:
            return prefix
        if image.type == TYPE_CDROM:
            return cdrom_default
    return default


def predict_target(
    all_disks: Sequence[DiskRef],
    index: int,
    images: Mapping[int, ImageFacts],
    *,
    default_prefix: str,
    cdrom_prefix: str,
    prefix_override: Mapping[int, str] | None = None,
    has_context: bool = True,
) -> Prediction:
    """Predict the TARGET oned will give ``all_disks[index]``.

    ``images`` maps disk index to the image facts for disks that reference an image hookd
    could read; a disk whose image is unknown makes the prediction uncertain only if it
    could take a letter before ours.
    """
    prefix_override = prefix_override or {}
    used: set[str] = set()
    kinds: list[tuple[int, str, int | None]] = []  # (index, prefix, type)
    certain = True
    reason = ""
    for disk in all_disks:
        explicit = (disk.vector.get("TARGET") or "").strip()
        image = images.get(disk.index)
        if disk.index in prefix_override:
            prefix = prefix_override[disk.index]
        else:
            prefix = effective_prefix(disk, image, default_prefix, cdrom_prefix)
        if explicit:
            used.add(explicit)
            if disk.index == index:
                return Prediction(explicit, True, "explicit TARGET")
            continue
        kind = None if image is None else image.type  # None: the image could not be read
        kinds.append((disk.index, prefix, TYPE_DATABLOCK if disk.is_volatile else kind))

    # The first OS disk; a disk of unknown type before it is assumed not to be an OS image.
    first_os: int | None = None
    for disk_index, _prefix, kind in kinds:
        if kind is None and disk_index < index:
            certain = False
            reason = f"the image of DISK {disk_index} could not be read"
        if kind == TYPE_OS:
            first_os = disk_index
            break

    order: list[tuple[int, str]] = []
    if first_os is not None:
        order += [(i, p) for i, p, _ in kinds if i == first_os]
    order += [(i, p) for i, p, k in kinds if k == TYPE_CDROM]
    if has_context:
        order.append((-1, cdrom_prefix))  # the context CD takes the next cdrom-prefix letter
    order += [(i, p) for i, p, k in kinds
              if i != first_os and k != TYPE_CDROM]

    for disk_index, prefix in order:
        for letter in "abcdefghijklmnopqrstuvwxyz":
            candidate = prefix + letter
            if candidate not in used:
                used.add(candidate)
                break
        else:  # pragma: no cover - 26 disks of one prefix
            candidate = prefix + "z"
        if disk_index == index:
            return Prediction(candidate, certain, reason)
    raise ValueError(f"DISK {index} is not in the template")  # pragma: no cover
