"""Data types of the kernel inspection: the report, the verdict, the errors, the limits.

Everything here is a frozen dataclass or a constant: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from handlers.errors import PermanentError

KernelFormat = Literal["elf", "bzimage", "arm64-image", "pe", "unknown"]
Hypervisor = Literal["kvm", "firecracker"]
Arch = Literal["x86_64", "aarch64"]
ConfigState = Literal["y", "m", "absent"]
ConfigOrigin = Literal["explicit", "beside", "ikconfig"]

HYPERVISORS: Final[tuple[Hypervisor, ...]] = ("kvm", "firecracker")
ARCHES: Final[tuple[Arch, ...]] = ("x86_64", "aarch64")

#: The kernel options hookd reports on, without their ``CONFIG_`` prefix
#: (what OpenNebula's KVM and Firecracker drivers attach: virtio-pci/-mmio + virtio-blk for
#: the root disk (src/vmm/LibVirtDriverKVM.cc, lib/firecracker/opennebula_vm.rb), ext4,
#: ISO 9660 + an IDE (6.x) or SATA (7.x) CD-ROM driver for the KVM context CD, the VT console
#: (KVM's VNC) and the 8250 serial console (Firecracker), devtmpfs; PVH for the QEMU entry
#: point).
CHECKED_OPTIONS: Final[tuple[str, ...]] = (
    "PVH", "VIRTIO_PCI", "VIRTIO_MMIO", "VIRTIO_BLK", "EXT4_FS", "ISO9660_FS", "BLK_DEV_SR",
    "ATA_PIIX", "SATA_AHCI", "VT_CONSOLE", "SERIAL_8250_CONSOLE", "DEVTMPFS", "DEVTMPFS_MOUNT",
)

# --- limits on untrusted input --------------------------------------------------------------
#: Largest kernel file inspected. A stripped x86-64 vmlinux is 30-80 MB; one with full debug info
#: can reach several hundred MB, which nobody boots. Anything larger is refused unread.
MAX_KERNEL_SIZE: Final = 1 << 30
#: Largest vmlinux ``extract_vmlinux`` writes (decompression bombs stop here).
MAX_VMLINUX_SIZE: Final = 1 << 30
#: Program headers: a Linux vmlinux has about 5, an ordinary program about 13.
MAX_PROGRAM_HEADERS: Final = 128
#: One PT_NOTE segment (the kernel's is 0x200 bytes) and all of them together.
MAX_NOTE_SEGMENT_BYTES: Final = 1 << 20
MAX_NOTE_BYTES_TOTAL: Final = 4 << 20
MAX_NOTES: Final = 8192
#: A kernel config (.config) is about 250 KB; its gzip'd IKCONFIG copy about 40 KB.
MAX_CONFIG_BYTES: Final = 8 << 20
MAX_IKCONFIG_COMPRESSED_BYTES: Final = 4 << 20
#: Default wall-clock limit for decompressing one bzImage payload.
EXTRACT_TIMEOUT_SECONDS: Final = 120.0

XEN_ELFNOTE_PHYS32_ENTRY: Final = 18
"""Xen ``include/public/elfnote.h``: the PVH 32-bit physical entry point
(QEMU's hw/i386/x86-common.c loads an ELF kernel only through it). Linux emits it from
``arch/x86/platform/pvh/head.S`` as
``ELFNOTE(Xen, XEN_ELFNOTE_PHYS32_ENTRY, _ASM_PTR (pvh_start_xen - __START_KERNEL_map))``."""


class KernelInspectionError(PermanentError):
    """The file cannot be inspected: missing, unreadable, not a regular file, too big, truncated or
    structurally malformed. ``reason`` is one sentence naming the file and what is wrong."""


class KernelExtractionError(KernelInspectionError):
    """``extract_vmlinux`` could not produce a vmlinux: no payload found, decompression failed or
    exceeded its limits, a needed tool is missing, or the result is not an ELF kernel."""


@dataclass(frozen=True)
class PvhEntry:
    """The ``XEN_ELFNOTE_PHYS32_ENTRY`` note QEMU would use: ``address`` is the entry point,
    the low 32 bits of the 4- or 8-byte ``descriptor``."""

    address: int
    owner: str
    descriptor_size: int
    descriptor: int


@dataclass(frozen=True)
class LoadSegment:
    """A PT_LOAD program header's physical placement."""

    paddr: int
    filesz: int
    memsz: int

    def contains_paddr(self, address: int) -> bool:
        return self.paddr <= address < self.paddr + max(self.memsz, self.filesz)


@dataclass(frozen=True)
class KernelConfig:
    """The states of ``CHECKED_OPTIONS`` in one kernel config, and where that config came from."""

    source: str
    origin: ConfigOrigin
    options: tuple[tuple[str, ConfigState], ...]
    #: ``Linux/x86 6.1.192 Kernel Configuration`` (the config's first comment line), if present.
    description: str | None = None
    #: ``x86_64``, ``i386``, ``arm64`` or another ``CONFIG_<ARCH>=y`` the config declares.
    arch: str | None = None

    def state(self, option: str) -> ConfigState:
        """State of ``option`` (without ``CONFIG_``); options hookd does not track are "absent"."""
        return dict(self.options).get(option, "absent")


@dataclass(frozen=True)
class KernelReport:
    """What ``inspect_kernel`` found; fields that do not apply to its format are None."""

    path: str
    size: int
    format: KernelFormat
    #: The kernel release (``uname -r``), from the bzImage header or the ``Linux version`` banner.
    version: str | None = None

    # ELF
    elf_class: Literal[32, 64] | None = None
    elf_endian: Literal["little", "big"] | None = None
    elf_machine: int | None = None
    elf_type: int | None = None
    elf_entry: int | None = None
    has_interpreter: bool = False
    load_segments: tuple[LoadSegment, ...] = ()
    note_owners: tuple[str, ...] = ()
    pvh: PvhEntry | None = None
    #: Why a type-18 note was present but unusable (bad descriptor size, contradicting notes).
    pvh_problem: str | None = None

    # bzImage (Documentation/arch/x86/boot.rst) and compressed files in general
    boot_protocol: str | None = None
    compression: str | None = None
    payload_offset: int | None = None
    payload_length: int | None = None

    # arm64 Image (Documentation/arch/arm64/booting.rst) and PE
    arm64_big_endian: bool | None = None
    arm64_image_size: int | None = None
    pe_machine: int | None = None

    config: KernelConfig | None = None
    #: Observations that are not findings about the kernel (e.g. an unreadable sibling config).
    notes: tuple[str, ...] = ()

    @property
    def elf_machine_name(self) -> str | None:
        if self.elf_machine is None:
            return None
        return ELF_MACHINES.get(self.elf_machine, f"machine {self.elf_machine}")

    @property
    def elf_type_name(self) -> str | None:
        if self.elf_type is None:
            return None
        return ELF_TYPES.get(self.elf_type, f"type {self.elf_type}")

    @property
    def looks_like_linux(self) -> bool:
        """A Linux banner or a Linux/Xen ELF note was found (a userspace program has neither)."""
        return self.version is not None or bool({"Linux", "Xen"} & set(self.note_owners))

    def findings(self) -> tuple[str, ...]:
        """Human-readable lines, one per finding (used by ``hookd kernel check``)."""
        lines = [f"file: {self.path} ({self.size} bytes)"]
        lines.append(f"format: {self.format}{_format_detail(self)}")
        if self.version is not None:
            lines.append(f"version: {self.version}")
        if self.format == "elf":
            if self.pvh is not None:
                lines.append(
                    f"pvh: entry {self.pvh.address:#x} (note owner {self.pvh.owner!r}, "
                    f"{self.pvh.descriptor_size}-byte descriptor)"
                )
            elif self.pvh_problem is not None:
                lines.append(f"pvh: unusable note: {self.pvh_problem}")
            else:
                lines.append("pvh: no XEN_ELFNOTE_PHYS32_ENTRY note")
        if self.config is None:
            lines.append("config: none found")
        else:
            described = f" ({self.config.description})" if self.config.description else ""
            lines.append(f"config: {self.config.source} [{self.config.origin}]{described}")
            for name, state in self.config.options:
                label = {"y": "built in", "m": "module", "absent": "not set"}[state]
                lines.append(f"CONFIG_{name}: {state if state != 'absent' else '-'} ({label})")
        lines.extend(f"note: {note}" for note in self.notes)
        return tuple(lines)


@dataclass(frozen=True)
class KernelVerdict:
    """Whether a kernel can be attached for a hypervisor; ``reason`` is one sentence."""

    usable: bool
    reason: str
    warnings: tuple[str, ...] = ()


ELF_MACHINES: Final = {
    3: "i386", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "s390", 40: "ARM (32-bit)",
    43: "SPARC v9", 62: "x86-64", 183: "AArch64", 243: "RISC-V", 258: "LoongArch",
}
ELF_TYPES: Final = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}
PE_MACHINES: Final = {0x14C: "i386", 0x8664: "x86-64", 0xAA64: "arm64", 0x1C4: "ARM"}


def _format_detail(report: KernelReport) -> str:
    if report.format == "elf":
        parts = [
            f"ELF{report.elf_class}",
            f"{report.elf_endian}-endian",
            report.elf_machine_name or "?",
            report.elf_type_name or "?",
        ]
        if report.elf_entry is not None:
            parts.append(f"entry {report.elf_entry:#x}")
        if report.has_interpreter:
            parts.append("has an ELF interpreter")
        return " (" + ", ".join(parts) + ")"
    if report.format == "bzimage":
        parts = [f"Linux boot protocol {report.boot_protocol}"]
        if report.compression is not None:
            parts.append(f"{report.compression} payload")
        if report.payload_offset is not None and report.payload_length is not None:
            parts.append(f"{report.payload_length} bytes at {report.payload_offset:#x}")
        return " (" + ", ".join(parts) + ")"
    if report.format == "arm64-image":
        endian = "big" if report.arm64_big_endian else "little"
        return f" ({endian}-endian, image_size {report.arm64_image_size})"
    if report.format == "pe":
        if report.pe_machine is None:
            machine = "unknown machine"
        else:
            machine = PE_MACHINES.get(report.pe_machine, f"machine {report.pe_machine:#x}")
        packed = f", {report.compression} EFI zboot payload" if report.compression else ""
        return f" ({machine}{packed})"
    if report.compression is not None:
        return f" ({report.compression}-compressed data)"
    return ""
