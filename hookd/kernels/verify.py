"""``check_kernel``: can this kernel boot an OpenNebula VM on this hypervisor?

Facts relied on (OpenNebula's drivers as cited below; QEMU's hw/i386/x86-common.c; measured
with Debian's kernels under QEMU 7.2):
- Firecracker: OpenNebula installs Firecracker v0.24.2 (``lib/firecracker/install-firecracker``),
  whose docs say "Firecracker supports only uncompressed, ELF kernel images" on x86_64; on aarch64
  it loads a PE-formatted ``Image``. Its loader (``src/kernel/src/loader/mod.rs``, and
  rust-vmm linux-loader ``src/loader/x86_64/elf/mod.rs`` later) wants a little-endian ELF64 whose
  entry point and PT_LOAD physical addresses are at or above ``HIMEM_START`` (1 MiB). OpenNebula
  passes no initrd to Firecracker (``OS/INITRD`` is ignored, OpenNebula/one#5382), so the root disk
  driver (virtio-mmio + virtio-blk) and filesystem must be built in.
- KVM/QEMU direct kernel boot of an ELF: QEMU uses the Linux boot protocol only for a ``HdrS``
  bzImage; for an ELF it requires the PVH note ``XEN_ELFNOTE_PHYS32_ENTRY`` (type 18, matched by
  type only) or fails with "Error loading uncompressed kernel without PVH ELF Note"
  (``hw/i386/x86-common.c``). hookd attaches the uncompressed vmlinux for KVM too, so one
  artefact serves both hypervisors and the PVH entry is verified before any VM uses it.
- KVM guests get the root disk as virtio-blk on virtio-pci (``DEV_PREFIX=vd``) and the context
  CD as an IDE CD-ROM on the pc machine (ata_piix + sr_mod + isofs), on 7.x's q35 on SATA
  (AHCI) (src/vmm/LibVirtDriverKVM.cc); a module needs an initrd (Debian's kernels build all
  of those as modules).
"""

from __future__ import annotations

import os
from typing import Final

from hookd.kernels.inspection import inspect_kernel
from hookd.kernels.model import (
    ARCHES,
    HYPERVISORS,
    PE_MACHINES,
    Arch,
    ConfigState,
    Hypervisor,
    KernelInspectionError,
    KernelReport,
    KernelVerdict,
)

EM_X86_64: Final = 62
EM_AARCH64: Final = 183
ET_EXEC: Final = 2
#: Firecracker ``arch/x86_64/layout.rs`` HIMEM_START: the kernel's lowest allowed address.
FIRECRACKER_HIMEM_START: Final = 0x100000

_LABEL: Final[dict[Hypervisor, str]] = {"kvm": "KVM", "firecracker": "Firecracker"}
_ELF_TYPE_REASONS: Final[dict[int, str]] = {
    0: "an ELF file of no type (ET_NONE)",
    1: "a relocatable object (ET_REL) such as a .o file or a .ko module",
    3: "a shared library or position-independent program (ET_DYN)",
    4: "a core dump (ET_CORE)",
}
#: (options, what they serve) the root disk needs, per hypervisor.
_ROOT: Final[dict[Hypervisor, tuple[tuple[str, ...], str]]] = {
    "kvm": (
        ("VIRTIO_PCI", "VIRTIO_BLK", "EXT4_FS"),
        "the root disk (virtio-blk vda on virtio-pci, ext4)",
    ),
    "firecracker": (
        ("VIRTIO_MMIO", "VIRTIO_BLK", "EXT4_FS"),
        "the root disk (Firecracker's virtio-mmio block device vda, ext4)",
    ),
}
_KVM_CONTEXT: Final = (
    ("BLK_DEV_SR", "ISO9660_FS"),
    "the OpenNebula context CD (a CD-ROM, ISO 9660), so contextualization (network, SSH keys, "
    "START_SCRIPT) would not run",
)
#: The context CD's controller: OpenNebula 6.x's KVM driver leaves QEMU's ``pc`` machine (an
#: IDE CD-ROM: ata_piix), 7.x writes ``q35`` and puts the CD on SATA (AHCI); measured on real
#: 6.8.3 and 7.4.0 deployment files.
_KVM_CD_CONTROLLERS: Final = (("ATA_PIIX", "OpenNebula 6.x (pc machine, IDE CD-ROM)"),
                              ("SATA_AHCI", "OpenNebula 7.x (q35 machine, SATA CD-ROM)"))
#: The console hookd's KERNEL_CMD names and what is lost when its driver is not built in.
#: OpenNebula's KVM driver writes no serial device, only the graphics (VNC) console:
#: hookd's KERNEL_CMD says console=tty0 (src/vmm/LibVirtDriverKVM.cc; measured).
_CONSOLE: Final[dict[Hypervisor, tuple[str, str]]] = {
    "kvm": ("VT_CONSOLE", "console=tty0 stays silent, so boot failures cannot be read on the "
            "VM's VNC console"),
    "firecracker": ("SERIAL_8250_CONSOLE", "console=ttyS0 stays silent, so boot failures cannot "
                    "be read from the VM's serial log"),
}
#: Why /dev stays unmounted without CONFIG_DEVTMPFS_MOUNT.
_DEV_UNMOUNTED: Final[dict[Hypervisor, str]] = {
    "kvm": "booted without an initrd, the kernel leaves /dev unmounted",
    "firecracker": "Firecracker guests boot without an initrd (OpenNebula/one#5382), so /dev "
                   "stays unmounted",
}


def check_kernel(
    report: KernelReport,
    hypervisor: Hypervisor,
    *,
    arch: Arch = "x86_64",
    strict: bool = False,
) -> KernelVerdict:
    """Decide whether the inspected kernel can boot guests of ``hypervisor`` on ``arch``.

    The verdict's ``reason`` is one sentence; ``warnings`` come from the kernel config (drivers
    that are modules or missing, a config that does not match the kernel) and from oddities that
    do not prevent booting. With ``strict=True``, config findings that make the root disk (or, for
    KVM, the context CD) impossible to use become a failure: a driver that is not set at all, or,
    for Firecracker, one built as a module (no initrd there, OpenNebula/one#5382).
    """
    if hypervisor not in HYPERVISORS:
        raise ValueError(f"unknown hypervisor {hypervisor!r}: expected one of {HYPERVISORS}")
    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}: expected one of {ARCHES}")
    label = _LABEL[hypervisor]
    path = report.path
    warnings: list[str] = []

    failure = _format_failure(report, hypervisor, arch)
    if failure is not None:
        return KernelVerdict(False, failure, ())

    if report.format == "arm64-image":
        if not report.looks_like_linux:
            warnings.append("No 'Linux version' banner was found in the Image.")
        reason = (
            f"{path} is usable for {label} on aarch64: a little-endian arm64 Image"
            f"{_release(report)}."
        )
    else:
        elf_failure, reason = _check_x86_elf(report, hypervisor, warnings)
        if elf_failure is not None:
            return KernelVerdict(False, elf_failure, tuple(warnings))

    config_warnings, fatal = _config_findings(report, hypervisor, arch)
    warnings.extend(config_warnings)
    if strict and fatal is not None:
        return KernelVerdict(False, fatal, tuple(warnings))
    return KernelVerdict(True, reason, tuple(warnings))


def verify_kernel(
    path: str | os.PathLike[str],
    hypervisor: Hypervisor,
    *,
    arch: Arch = "x86_64",
    config_path: str | os.PathLike[str] | None = None,
    strict: bool = False,
) -> KernelVerdict:
    """``inspect_kernel`` + ``check_kernel``, with inspection errors folded into the verdict."""
    try:
        report = inspect_kernel(path, config_path=config_path)
    except KernelInspectionError as error:
        return KernelVerdict(False, error.reason, ())
    return check_kernel(report, hypervisor, arch=arch, strict=strict)


def _release(report: KernelReport) -> str:
    return f" ({report.version})" if report.version else ""


def _format_failure(report: KernelReport, hypervisor: Hypervisor, arch: Arch) -> str | None:
    """Why the file's format cannot work at all here, or None."""
    path = report.path
    label = _LABEL[hypervisor]
    if report.format == "unknown":
        if report.compression is not None:
            return (
                f"{path} is {report.compression}-compressed data, not a kernel image: decompress "
                "it first (for a compressed vmlinux or Image.gz) and check the result."
            )
        return (
            f"{path} is not a kernel image: it has no ELF, Linux bzImage, arm64 Image or PE header."
        )
    if report.format == "bzimage":
        if arch != "x86_64":
            return f"{path} is an x86 bzImage, not a kernel for {arch}."
        payload = f", {report.compression} payload" if report.compression else ""
        needs = (
            "hookd boots KVM guests through the PVH entry of an uncompressed ELF vmlinux"
            if hypervisor == "kvm"
            else "Firecracker (v0.24.2, the version OpenNebula installs) boots only an "
            "uncompressed ELF vmlinux on x86_64"
        )
        return (
            f"{path} is a compressed bzImage (Linux boot protocol {report.boot_protocol}"
            f"{payload}), but {needs}: extract the vmlinux with `hookd kernel extract {path} "
            "vmlinux` (or the kernel tree's scripts/extract-vmlinux), or build one with "
            "`make vmlinux`."
        )
    if report.format == "pe":
        if report.compression is not None:
            return (
                f"{path} is an EFI zboot image with a {report.compression}-compressed kernel "
                "inside, not a kernel image hookd can attach: use the uncompressed "
                "arch/arm64/boot/Image (or, on x86_64, a vmlinux)."
            )
        machine = PE_MACHINES.get(report.pe_machine or 0, "unknown machine")
        return (
            f"{path} is a PE/EFI executable ({machine}) without a Linux boot header, not a kernel "
            "image hookd can attach (for aarch64 use arch/arm64/boot/Image, for x86_64 a vmlinux)."
        )
    if report.format == "arm64-image":
        if arch != "aarch64":
            return f"{path} is an arm64 kernel Image, not an {arch} kernel."
        if report.arm64_big_endian:
            return (
                f"{path} is a big-endian arm64 Image; {label} on aarch64 boots little-endian "
                "kernels."
            )
        return None
    # ELF
    machine = report.elf_machine_name or "an unknown machine"
    if arch == "aarch64":
        if report.elf_machine == EM_AARCH64:
            return (
                f"{path} is an AArch64 ELF vmlinux, but {label} on aarch64 boots the arm64 Image "
                "(arch/arm64/boot/Image, built with `make Image`), not the ELF."
            )
        return f"{path} is an ELF for {machine}, not an aarch64 kernel."
    if report.elf_class == 32:
        return (
            f"{path} is a 32-bit ELF for {machine}; an x86_64 host needs a 64-bit x86-64 vmlinux."
        )
    if report.elf_machine != EM_X86_64:
        return f"{path} is an ELF for {machine}, not an x86-64 kernel."
    if report.elf_endian != "little":
        return f"{path} is a big-endian ELF, which no x86-64 kernel is."
    if report.elf_type != ET_EXEC:
        kind = _ELF_TYPE_REASONS.get(report.elf_type or 0, f"an ELF of type {report.elf_type}")
        return f"{path} is {kind}, not an executable kernel image (a vmlinux is ET_EXEC)."
    if report.has_interpreter:
        return (
            f"{path} is a dynamically linked program (it names an ELF interpreter), not a kernel "
            "image."
        )
    if not any(segment.filesz for segment in report.load_segments):
        return f"{path} has no loadable segment, so it is not a kernel image."
    if not report.looks_like_linux:
        return (
            f"{path} does not look like a Linux kernel: it has no 'Linux version' banner and no "
            "Linux or Xen ELF notes."
        )
    return None


def _check_x86_elf(
    report: KernelReport, hypervisor: Hypervisor, warnings: list[str]
) -> tuple[str | None, str]:
    """(failure, success reason) for an ELF64 x86-64 executable that looks like Linux."""
    path = report.path
    loads = [segment for segment in report.load_segments if segment.filesz]
    if hypervisor == "kvm":
        if report.pvh_problem is not None:
            return f"{path} has an unusable PVH ELF note: {report.pvh_problem}.", ""
        pvh = report.pvh
        if pvh is None or pvh.address == 0:
            config_says = ""
            if report.config is not None and report.config.state("PVH") == "y":
                config_says = (
                    " (its config says CONFIG_PVH=y, so the notes were stripped or the config "
                    "belongs to another kernel)"
                )
            return (
                f"{path} has no PVH ELF note (XEN_ELFNOTE_PHYS32_ENTRY, type 18){config_says}, so "
                "QEMU refuses it with 'Error loading uncompressed kernel without PVH ELF Note': "
                "use a kernel built with CONFIG_PVH=y."
            ), ""
        if pvh.descriptor >> 32:  # an 8-byte descriptor that is not a 32-bit physical address
            return (
                f"{path} has a PVH entry ({pvh.descriptor:#x}) that is not a 32-bit physical "
                "address."
            ), ""
        if not any(segment.contains_paddr(pvh.address) for segment in loads):
            return (
                f"{path} has a PVH entry ({pvh.address:#x}) outside every loadable segment, so "
                "the guest would jump into unloaded memory."
            ), ""
        if pvh.owner != "Xen":
            warnings.append(
                f"The PVH note's owner is {pvh.owner!r}, not 'Xen': QEMU matches the note type "
                "only, but Firecracker 1.12+ and other VMMs also require the 'Xen' owner."
            )
        return None, (
            f"{path} is usable for KVM: an x86-64 ELF vmlinux{_release(report)} with a PVH entry "
            f"at {pvh.address:#x}."
        )
    entry = report.elf_entry or 0
    if entry < FIRECRACKER_HIMEM_START:
        return (
            f"{path} has its entry point at {entry:#x}, below 1 MiB, which Firecracker's loader "
            "refuses (InvalidEntryAddress)."
        ), ""
    low = [segment for segment in loads if segment.paddr < FIRECRACKER_HIMEM_START]
    if low:
        return (
            f"{path} has a loadable segment at physical address {low[0].paddr:#x}, below 1 MiB, "
            "which Firecracker's loader refuses (InvalidProgramHeaderAddress)."
        ), ""
    if not any(segment.contains_paddr(entry) for segment in loads):
        return (
            f"{path} has its entry point ({entry:#x}) outside every loadable segment, so "
            "Firecracker would jump into unloaded memory."
        ), ""
    return None, (
        f"{path} is usable for Firecracker: an uncompressed x86-64 ELF vmlinux{_release(report)} "
        f"entered at {entry:#x}."
    )


def _names(options: list[str]) -> str:
    return ", ".join(f"CONFIG_{name}" for name in options)


def _verb(options: list[str], singular: str, plural: str) -> str:
    return singular if len(options) == 1 else plural


def _config_findings(
    report: KernelReport, hypervisor: Hypervisor, arch: Arch
) -> tuple[list[str], str | None]:
    """(warnings, the first finding that makes the VM unbootable) from the kernel config."""
    config = report.config
    if config is None:
        return [
            "No kernel config was found (pass --config, put config-<release> beside the kernel, "
            "or build with CONFIG_IKCONFIG), so built-in drivers were not checked."
        ], None
    warnings: list[str] = []
    fatal: str | None = None
    expected_arch = {"x86_64": "x86_64", "aarch64": "arm64"}[arch]
    if config.arch is not None and config.arch != expected_arch:
        warnings.append(
            f"The kernel config {config.source} is for {config.arch}, not {expected_arch}: it does "
            "not belong to this kernel, so its findings below are unreliable."
        )
    if report.format == "elf" and report.pvh is not None and config.state("PVH") != "y":
        warnings.append(
            f"The kernel config {config.source} says CONFIG_PVH is not set although the kernel "
            "has a PVH note: the config belongs to another kernel, so its findings are unreliable."
        )

    def states(options: tuple[str, ...], wanted: ConfigState) -> list[str]:
        return [name for name in options if config.state(name) == wanted]

    groups = [_ROOT[hypervisor]]
    if hypervisor == "kvm":
        # The CD controllers the kernel has at all count with the CD's own drivers (as
        # modules they need the initrd too); one it lacks is reported for its version below.
        controllers = tuple(name for name, _ in _KVM_CD_CONTROLLERS
                            if config.state(name) != "absent")
        groups.append((controllers + _KVM_CONTEXT[0], _KVM_CONTEXT[1]))
    for options, what in groups:
        modules = states(options, "m")
        missing = states(options, "absent")
        if modules:
            names = _names(modules)
            built = _verb(modules, "is built as a module", "are built as modules")
            if hypervisor == "kvm":
                warnings.append(
                    f"{names} {built} (=m): without an initrd that loads "
                    f"{_verb(modules, 'it', 'them')} the kernel cannot use {what}; configure an "
                    "initrd for this kernel under `initrds: {kvm: ...}` in hookd's config."
                )
            else:
                message = (
                    f"{names} {built} (=m), and no initrd can load "
                    f"{_verb(modules, 'it', 'them')} because OpenNebula ignores OS/INITRD for "
                    f"Firecracker (OpenNebula/one#5382): this kernel cannot use {what} under "
                    f"Firecracker; use a kernel with {_verb(modules, 'it', 'them')} built in (=y)."
                )
                warnings.append(message)
                fatal = fatal or message
        if missing:
            message = (
                f"{_names(missing)} {_verb(missing, 'is', 'are')} not set: the kernel has no "
                f"driver for {what}, with or without an initrd."
            )
            warnings.append(message)
            fatal = fatal or message

    if hypervisor == "kvm":
        absent = [(name, where) for name, where in _KVM_CD_CONTROLLERS
                  if config.state(name) == "absent"]
        for name, where in absent:
            warnings.append(
                f"CONFIG_{name} is not set: on {where} the kernel cannot read the context "
                "CD, so contextualization would not run there.")
        if len(absent) == len(_KVM_CD_CONTROLLERS):
            fatal = fatal or warnings[-1]
    console, unread = _CONSOLE[hypervisor]
    if config.state(console) != "y":
        warnings.append(f"CONFIG_{console} is not built in: {unread}.")
    if config.state("DEVTMPFS") != "y":
        warnings.append(
            "CONFIG_DEVTMPFS is not built in: a container rootfs gets no device nodes in /dev."
        )
    elif config.state("DEVTMPFS_MOUNT") != "y":
        warnings.append(
            f"CONFIG_DEVTMPFS_MOUNT is not set: {_DEV_UNMOUNTED[hypervisor]} unless the image's "
            "init mounts devtmpfs itself (systemd does, a plain container entrypoint does not)."
        )
    return warnings, fatal
