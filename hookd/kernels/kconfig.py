"""Kernel config (``.config``) findings: from a file, from beside the kernel, or from IKCONFIG.

- A ``.config`` line is ``CONFIG_FOO=y``, ``CONFIG_FOO=m``, ``CONFIG_FOO="string"``/number, or
  ``# CONFIG_FOO is not set`` (``scripts/kconfig/confdata.c``).
- Debian installs ``/boot/config-<release>`` beside ``/boot/vmlinuz-<release>``; a kernel build
  tree has ``.config`` beside ``vmlinux``.
- ``CONFIG_IKCONFIG`` embeds the gzip'd config between the ASCII markers ``IKCFG_ST`` and
  ``IKCFG_ED`` (``kernel/configs.c``; ``scripts/extract-ikconfig`` looks for them the same way).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Final

from hookd.kernels._reader import KernelFile
from hookd.kernels.model import (
    CHECKED_OPTIONS,
    MAX_CONFIG_BYTES,
    MAX_IKCONFIG_COMPRESSED_BYTES,
    ConfigOrigin,
    ConfigState,
    KernelConfig,
    KernelInspectionError,
)

IKCFG_START: Final = b"IKCFG_ST"
IKCFG_END: Final = b"IKCFG_ED"
GZIP_MAGIC: Final = b"\x1f\x8b\x08"

_SET = re.compile(rb"^CONFIG_([A-Za-z0-9_]+)=(.*?)\s*$")
_NOT_SET = re.compile(rb"^# CONFIG_([A-Za-z0-9_]+) is not set\s*$")
_DESCRIPTION = re.compile(rb"^# (Linux/\S+ \S+ Kernel Configuration)\s*$")
_KERNEL_NAME = re.compile(r"^(?:vmlinuz|vmlinux|bzImage|Image|zImage|kernel)-(?P<suffix>.+)$")
#: CONFIG_<ARCH>=y lines that name the architecture a config was made for.
_ARCH_OPTIONS: Final[dict[str, str]] = {
    "X86_64": "x86_64", "X86_32": "i386", "ARM64": "arm64", "ARM": "arm", "RISCV": "riscv",
    "PPC64": "ppc64", "S390": "s390",
}


class ConfigUnreadable(Exception):
    """A config could not be read or parsed (the caller decides whether that is fatal)."""


def parse_config(text: bytes, *, source: str, origin: ConfigOrigin) -> KernelConfig:
    wanted = set(CHECKED_OPTIONS)
    states: dict[str, ConfigState] = {}
    arch: str | None = None
    description: str | None = None
    config_lines = 0
    for line in text.splitlines():
        if description is None and (m := _DESCRIPTION.match(line)):
            description = m.group(1).decode("ascii", "replace")
            continue
        if m := _SET.match(line):
            config_lines += 1
            name = m.group(1).decode("ascii")
            value = m.group(2)
            if name in wanted:
                states[name] = "y" if value == b"y" else "m" if value == b"m" else "absent"
            if value == b"y" and name in _ARCH_OPTIONS and arch is None:
                arch = _ARCH_OPTIONS[name]
        elif m := _NOT_SET.match(line):
            config_lines += 1
            name = m.group(1).decode("ascii")
            if name in wanted:
                states[name] = "absent"
    if config_lines == 0:
        raise ConfigUnreadable(f"{source} has no CONFIG_ lines, so it is not a kernel config")
    return KernelConfig(
        source=source,
        origin=origin,
        options=tuple((name, states.get(name, "absent")) for name in CHECKED_OPTIONS),
        description=description,
        arch=arch,
    )


def read_config_file(path: Path, origin: ConfigOrigin) -> KernelConfig:
    try:
        with KernelFile(path, max_size=MAX_CONFIG_BYTES, what="kernel config") as f:
            text = b"".join(f.chunks(0, f.size))
    except KernelInspectionError as error:
        raise ConfigUnreadable(error.reason.rstrip(".")) from None
    return parse_config(text, source=str(path), origin=origin)


def config_beside(kernel: Path) -> Path | None:
    """``config-<suffix>`` beside ``vmlinuz-<suffix>`` (or ``vmlinux``/``bzImage``/…-<suffix>),
    or ``.config`` beside a ``vmlinux`` in a build tree; symlinks are followed as a second try."""
    try:
        resolved = kernel.resolve(strict=False)
    except (OSError, RuntimeError):
        resolved = kernel
    for path in (kernel, resolved):
        if m := _KERNEL_NAME.match(path.name):
            found = path.with_name("config-" + m.group("suffix"))
        elif path.name == "vmlinux":
            found = path.with_name(".config")
        else:
            continue
        if found.is_file():
            return found
    return None


def read_ikconfig(f: KernelFile, marker_offset: int) -> bytes:
    """The config text stored after ``IKCFG_ST`` at ``marker_offset`` (bounded gzip inflate)."""
    start = marker_offset + len(IKCFG_START)
    data = b"".join(f.chunks(start, start + MAX_IKCONFIG_COMPRESSED_BYTES + 64))
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        text = inflater.decompress(data, MAX_CONFIG_BYTES + 1)
    except zlib.error as error:
        raise ConfigUnreadable(f"the embedded IKCONFIG is not valid gzip ({error})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigUnreadable(
            f"the embedded IKCONFIG inflates to more than {MAX_CONFIG_BYTES} bytes"
        )
    if not inflater.eof:
        if len(data) > MAX_IKCONFIG_COMPRESSED_BYTES:
            raise ConfigUnreadable(
                f"the embedded IKCONFIG is more than {MAX_IKCONFIG_COMPRESSED_BYTES} bytes"
            )
        raise ConfigUnreadable("the embedded IKCONFIG gzip stream is truncated")
    if not inflater.unused_data.startswith(IKCFG_END):
        raise ConfigUnreadable("the embedded IKCONFIG is not followed by its IKCFG_ED marker")
    return text
