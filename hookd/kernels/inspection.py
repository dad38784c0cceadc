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
_SCAN_OVERLAP: Final = 128


def inspect_kernel(
    path: str | os.PathLike[str],
    *,
    config_path: str | os.PathLike[str] | None = None,
    max_size: int = MAX_KERNEL_SIZE,
    name: Path | None = None,
) -> KernelReport:
    """Identify the kernel at ``path`` and report its format, headers, PVH note and config.

    Only headers and note segments are read (by offset, with caps); uncompressed images are also
    scanned once, in 1 MiB chunks, for the ``Linux version`` banner and an IKCONFIG blob.

    The config comes from ``config_path`` if given (errors reading it raise), else from a
    ``config-<release>`` file beside the kernel, else from an embedded IKCONFIG (errors with
    those two become ``report.notes``). ``name``, if given, is the path reported and looked
    beside instead of ``path``: ``extract_vmlinux`` checks its temporary file before renaming it.

    Raises ``KernelInspectionError`` (a ``PermanentError``) when the file is missing, not a
    regular file, empty, larger than ``max_size``, truncated or malformed. A readable file in no
    kernel format is reported as ``format="unknown"``; ``check_kernel`` rejects it.
    """
    kernel = Path(path)
    name = kernel if name is None else name
    with KernelFile(kernel, max_size=max_size) as f:
        report = _identify(f)
        ikconfig_at = None
        if report.format in ("elf", "arm64-image"):  # their release is in the banner
            ikconfig_at, banner = _scan(f)
            report = replace(report, version=banner)
        config, notes = _find_config(f, name, config_path, ikconfig_at)
    return replace(report, path=str(name), config=config, notes=report.notes + tuple(notes))


def _identify(f: KernelFile) -> KernelReport:
    head = f.read_upto(0, 4096)
    if is_bzimage(head):
        return parse_bzimage(f)
    if head.startswith(ELF_MAGIC):
        return parse_elf(f)
    if len(head) >= 64 and is_arm64_image(head):
        return parse_arm64(f, head)
    if head.startswith(b"MZ") and (pe := parse_pe(f, head)) is not None:
        return pe
    return KernelReport(
        path=str(f.path), size=f.size, format="unknown", compression=identify_compression(head)
    )


def _scan(f: KernelFile) -> tuple[int | None, str | None]:
    """One bounded pass over the file: offset of a valid ``IKCFG_ST`` + gzip marker, and the
    release in the first ``Linux version`` banner."""
    ikconfig_at: int | None = None
    banner: str | None = None
    for base, buffer in f.windows(0, _SCAN_OVERLAP):
        if ikconfig_at is None and (hit := buffer.find(IKCFG_START + GZIP_MAGIC)) >= 0:
            ikconfig_at = base + hit
        if banner is None and (m := _BANNER.search(buffer)):
            banner = m.group(1).decode("ascii")
        if ikconfig_at is not None and banner is not None:
            break
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
