"""``inspect_kernel``: identify a kernel file and collect what the boot checks need."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Final

from hookd.kernels._reader import KernelFile
from hookd.kernels.bootimg import (
    identify_compression,
    is_arm64_image,
    is_bzimage,
    parse_arm64,
    parse_bzimage,
    parse_pe,
)
from hookd.kernels.elf import ELF_MAGIC, parse_elf
from hookd.kernels.kconfig import (
    GZIP_MAGIC,
    IKCFG_START,
    ConfigUnreadable,
    config_beside,
    parse_config,
    read_config_file,
    read_ikconfig,
)
from hookd.kernels.model import (
    MAX_KERNEL_SIZE,
    KernelConfig,
    KernelInspectionError,
    KernelReport,
)

#: ``init/version.c``: ``linux_banner[] = "Linux version " UTS_RELEASE " (" LINUX_COMPILE_BY ...``
_BANNER: Final = re.compile(rb"Linux version (\d+\.\d+[0-9A-Za-z.+_~-]{0,64}) \(")
_BANNER_PREFIX: Final = b"Linux version "
_SCAN_OVERLAP: Final = 128


def inspect_kernel(
    path: str | os.PathLike[str],
    *,
    config_path: str | os.PathLike[str] | None = None,
    max_size: int = MAX_KERNEL_SIZE,
) -> KernelReport:
    """Identify the kernel at ``path`` and report its format, headers, PVH note and config.

    Only headers and note segments are read (by offset, with caps); uncompressed images are also
    scanned once, in 1 MiB chunks, for the ``Linux version`` banner and an IKCONFIG blob.

    The config comes from ``config_path`` if given (errors reading it raise), else from a
    ``config-<release>`` file beside the kernel, else from an embedded IKCONFIG (errors with
    those two become ``report.notes``).

    Raises ``KernelInspectionError`` (a ``PermanentError``) when the file is missing, not a
    regular file, empty, larger than ``max_size``, truncated or malformed. A readable file in no
    kernel format is reported as ``format="unknown"``; ``check_kernel`` rejects it.
    """
    kernel = Path(path)
    return inspect_as(kernel, kernel, config_path=config_path, max_size=max_size)


def inspect_as(
    kernel: Path,
    name: Path,
    *,
    config_path: str | os.PathLike[str] | None,
    max_size: int,
) -> KernelReport:
    """Inspect ``kernel`` as if it were at ``name`` (which decides the sibling-config lookup and
    the reported path): ``extract_vmlinux`` checks its temporary file before renaming it."""
    with KernelFile(kernel, max_size=max_size) as f:
        report = _identify(f)
        if report.format in ("elf", "arm64-image"):
            ikconfig_at, banner = _scan(f)
            if banner is not None and report.version is None:
                report = replace(report, version=banner)
        else:
            ikconfig_at = None
        config, notes = _find_config(f, name, config_path, ikconfig_at)
    return replace(report, path=str(name), config=config, notes=report.notes + tuple(notes))


def _identify(f: KernelFile) -> KernelReport:
    head = f.read_upto(0, 4096)
    path, size = str(f.path), f.size
    if is_bzimage(head):
        bz = parse_bzimage(f)
        return KernelReport(
            path=path,
            size=size,
            format="bzimage",
            version=bz.version,
            boot_protocol=bz.protocol,
            compression=bz.compression,
            payload_offset=bz.payload_offset,
            payload_length=bz.payload_length,
            notes=bz.problems,
        )
    if head.startswith(ELF_MAGIC):
        elf = parse_elf(f)
        return KernelReport(
            path=path,
            size=size,
            format="elf",
            elf_class=elf.elf_class,
            elf_endian=elf.endian,
            elf_machine=elf.machine,
            elf_type=elf.type,
            elf_entry=elf.entry,
            has_interpreter=elf.has_interpreter,
            load_segments=elf.loads,
            note_owners=elf.note_owners,
            pvh=elf.pvh,
            pvh_problem=elf.pvh_problem,
        )
    if len(head) >= 64 and is_arm64_image(head):
        arm = parse_arm64(head)
        return KernelReport(
            path=path,
            size=size,
            format="arm64-image",
            arm64_big_endian=arm.big_endian,
            arm64_image_size=arm.image_size,
        )
    if head.startswith(b"MZ"):
        pe = parse_pe(f, head)
        if pe is not None:
            return KernelReport(
                path=path,
                size=size,
                format="pe",
                pe_machine=pe.machine,
                compression=pe.zboot_compression,
            )
    return KernelReport(
        path=path, size=size, format="unknown", compression=identify_compression(head)
    )


def _scan(f: KernelFile) -> tuple[int | None, str | None]:
    """One bounded pass over the file: offset of a valid ``IKCFG_ST`` + gzip marker, and the
    release in the first ``Linux version`` banner."""
    ikconfig_at: int | None = None
    banner: str | None = None
    carry = b""
    for offset, chunk in f.chunks(0, f.size):
        buffer = carry + chunk
        base = offset - len(carry)
        if ikconfig_at is None:
            hit = buffer.find(IKCFG_START)
            while hit >= 0:
                if buffer[hit + 8 : hit + 11] == GZIP_MAGIC:
                    ikconfig_at = base + hit
                    break
                hit = buffer.find(IKCFG_START, hit + 1)
        if banner is None:
            hit = buffer.find(_BANNER_PREFIX)
            while hit >= 0:
                if m := _BANNER.match(buffer, hit):
                    banner = m.group(1).decode("ascii")
                    break
                hit = buffer.find(_BANNER_PREFIX, hit + 1)
        if ikconfig_at is not None and banner is not None:
            break
        carry = buffer[-_SCAN_OVERLAP:]
    return ikconfig_at, banner


def _find_config(
    f: KernelFile,
    name: Path,
    config_path: str | os.PathLike[str] | None,
    ikconfig_at: int | None,
) -> tuple[KernelConfig | None, list[str]]:
    notes: list[str] = []
    if config_path is not None:
        try:
            return read_config_file(Path(config_path), "explicit"), notes
        except ConfigUnreadable as error:
            raise KernelInspectionError(f"The kernel config {error}.") from None
    beside = config_beside(name)
    if beside is not None:
        try:
            return read_config_file(beside, "beside"), notes
        except ConfigUnreadable as error:
            notes.append(f"ignored the config beside the kernel: {error}")
    if ikconfig_at is not None:
        try:
            text = read_ikconfig(f, ikconfig_at)
            source = f"{name} (embedded IKCONFIG at {ikconfig_at:#x})"
            return parse_config(text, source=source, origin="ikconfig"), notes
        except ConfigUnreadable as error:
            notes.append(f"ignored the embedded IKCONFIG: {error}")
    return None, notes
