"""KVM (and qemu): direct kernel boot through the PVH entry point.

OpenNebula's KVM driver turns ``OS/KERNEL`` (filled from ``KERNEL_DS``), ``INITRD``, ``ROOT``
and ``KERNEL_CMD`` into libvirt's ``<kernel>``, ``<initrd>`` and ``<cmdline>``, prefixing
``root=/dev/<ROOT> `` to KERNEL_CMD; ROOT and KERNEL_CMD are only used when a kernel is set
(src/vmm/LibVirtDriverKVM.cc, 6.8.3). It does not add ``rw``, and Linux mounts the root
read-only by default (init/do_mounts.c), so hookd adds ``rw``. QEMU boots an ELF vmlinux only
through its PVH note (QEMU >= 4.0, machine type >= 4.0; hw/i386/x86-common.c). The root disk
should be virtio (``vd``): Docker Hub images carry DEV_PREFIX="vd"; TurnKey and Linux
Containers images do not, and would get oned's default ``sd``.
"""

from __future__ import annotations

from handlers import cmdline
from handlers.base import (
    OS_INITRD_DS,
    OS_KERNEL_CMD,
    OS_ROOT,
    HandlerInput,
    kernel_want,
    usable_kernel,
)
from handlers.disks import DiskRef, effective_prefix, predict_target
from handlers.model import AttrPath, HandlerResult, Want


def handle(inp: HandlerInput) -> HandlerResult:
    kernel = usable_kernel(inp.hypervisor, inp.world)
    if isinstance(kernel, str):
        return HandlerResult("waiting", kernel)
    notes: list[str] = list(kernel.warnings)
    wants: list[Want] = [kernel_want(kernel)]

    initrd = inp.world.initrds.get("kvm")
    if initrd is not None:
        if not initrd.usable:
            return HandlerResult("waiting", f"waiting for a kvm initrd: {initrd.reason}")
        wants.append(Want(OS_INITRD_DS, initrd.file_ref, "set"))

    # -- the root disk must be virtio -----------------------------------------------------
    all_disks = inp.disks
    disk = all_disks[inp.disk_index]
    prefix_path = AttrPath("DISK", "DEV_PREFIX", inp.disk_index)
    explicit_target = (disk.vector.get("TARGET") or "").strip()
    override: dict[int, str] = {}
    images = {d.index: inp.world.disk_images[d.image_id] for d in all_disks
              if d.image_id is not None and d.image_id in inp.world.disk_images}
    images[inp.disk_index] = inp.image
    if not explicit_target:
        person_prefix = inp.person_value(prefix_path)
        if person_prefix is not None:
            if person_prefix != "vd":
                notes.append(f"DISK {inp.disk_index} has DEV_PREFIX={person_prefix} set by a "
                             f"person; the root device is not virtio and needs the matching "
                             f"driver built into the kernel")
        else:
            # The prefix the disk has without hookd's own DEV_PREFIX on it (so the plan is the
            # same before and after hookd set it).
            bare = DiskRef(disk.index, disk.vector.set("DEV_PREFIX", None))
            prefix = effective_prefix(bare, inp.image, inp.world.default_dev_prefix,
                                      inp.world.default_cdrom_prefix)
            if prefix != "vd":
                wants.append(Want(prefix_path, "vd", "set"))
                override[inp.disk_index] = "vd"
                notes.append(
                    f"DISK {inp.disk_index} gets DEV_PREFIX=vd: with the image's prefix "
                    f"{prefix} (oned's DEFAULT_DEVICE_PREFIX for an image that names none) the "
                    f"root disk would be {prefix}a, not the virtio disk vda the kernel boots "
                    f"from")
    prediction = predict_target(
        all_disks, inp.disk_index, images,
        default_prefix=inp.world.default_dev_prefix,
        cdrom_prefix=inp.world.default_cdrom_prefix,
        prefix_override=override,
        has_context=inp.template.template.vector("CONTEXT") is not None,
    )
    if not prediction.certain:
        notes.append(f"root device {prediction.target} is a prediction: {prediction.reason}")
    if explicit_target and not explicit_target.startswith("vd"):
        notes.append(f"DISK {inp.disk_index} has TARGET={explicit_target}: the root device is "
                     f"not virtio and needs the matching driver built into the kernel")
    wants.append(Want(OS_ROOT, prediction.target, "set"))

    current_cmd = inp.current(OS_KERNEL_CMD)
    wants.append(Want(OS_KERNEL_CMD,
                      cmdline.merge(current_cmd, inp.settings.kvm_cmdline), "merge"))
    if cmdline.has_key(current_cmd, "root"):
        notes.append("KERNEL_CMD already holds root=; OpenNebula also prepends root=/dev/<ROOT>")
    for flag in cmdline.contradicted(current_cmd, inp.settings.kvm_cmdline):
        notes.append(f"kept the KERNEL_CMD a person wrote: it says otherwise than {flag} "
                     f"(hookd would add {flag})")

    # -- settings that fight direct kernel boot -------------------------------------------
    os_vec = inp.template.template.vector("OS")
    if os_vec is not None:
        firmware = (os_vec.get("FIRMWARE") or "").strip()
        if firmware and firmware.upper() not in ("BIOS", ""):
            notes.append(f"OS/FIRMWARE={firmware}: UEFI firmware may not boot a PVH kernel; "
                         f"direct kernel boot is tested with BIOS (SeaBIOS)")
        if (os_vec.get("BOOTLOADER") or "").strip():
            notes.append("OS/BOOTLOADER is set: the KVM driver ignores it once a kernel is set")
        if (os_vec.get("BOOT") or "").strip():
            notes.append("OS/BOOT is ignored for the root device: with a kernel, OS/ROOT decides")
        machine = (os_vec.get("MACHINE") or "").strip()
        if machine and _old_machine(machine):
            notes.append(f"OS/MACHINE={machine} predates QEMU 4.0: PVH boot needs a machine "
                         f"type >= 4.0")
    return HandlerResult("applied", "", tuple(wants), tuple(notes))


def _old_machine(machine: str) -> bool:
    # pc-i440fx-3.1 / pc-q35-3.1 and older disable PVH (hw/i386/pc_piix.c, pc_q35.c compat).
    for prefix in ("pc-i440fx-", "pc-q35-"):
        if machine.startswith(prefix):
            version = machine[len(prefix):].split(".")
            try:
                return int(version[0]) < 4
            except ValueError:
                return False
    return False
