"""Synthetic kernel files built byte by byte: ELF vmlinux, bzImage, arm64 Image, PE, configs.

The layouts follow the same references as hookd.kernels (System V gABI for ELF and notes,
Documentation/arch/x86/boot.rst for the bzImage header, Documentation/arch/arm64/booting.rst
for the Image header). Nothing here needs a toolchain; lz4, zstd and lzop payloads need those
programs (tests check with ``ci.require_program`` first).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hookd.kernels import CHECKED_OPTIONS

LOAD_PADDR = 0x1000000
PVH_ENTRY = 0x1000850
RELEASE = "6.1.0-test-amd64"
BANNER = (
    b"Linux version 6.1.0-test-amd64 (builder@example.org) (gcc-12 12.2.0) #1 SMP "
    b"PREEMPT_DYNAMIC Debian 6.1.0-1\n\0"
)
PT_LOAD, PT_INTERP, PT_NOTE = 1, 3, 4


def align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def pad(data: bytes, alignment: int) -> bytes:
    return data + b"\0" * (align(len(data), alignment) - len(data))


def note(
    owner: bytes,
    ntype: int,
    desc: bytes,
    *,
    alignment: int = 4,
    endian: str = "<",
    namesz: int | None = None,
    descsz: int | None = None,
) -> bytes:
    """One ELF note; ``namesz``/``descsz`` override the header to make it lie."""
    name = owner + b"\0" if owner else b""
    header = struct.pack(
        endian + "III",
        len(name) if namesz is None else namesz,
        len(desc) if descsz is None else descsz,
        ntype,
    )
    return pad(header + name, alignment) + pad(desc, alignment)


def pvh_note(
    entry: int = PVH_ENTRY, *, size: int = 8, owner: bytes = b"Xen", endian: str = "<"
) -> bytes:
    """The XEN_ELFNOTE_PHYS32_ENTRY note (type 18) with a ``size``-byte descriptor."""
    if size == 8:
        desc = struct.pack(endian + "Q", entry)
    elif size == 4:
        desc = struct.pack(endian + "I", entry)
    else:
        desc = bytes(range(1, size + 1))
    return note(owner, 18, desc, endian=endian)


def linux_notes(endian: str = "<") -> bytes:
    """Notes every x86 vmlinux has besides the PVH one (Xen guest OS/version, Linux build salt)."""
    return (
        note(b"Xen", 6, b"linux\0", endian=endian)
        + note(b"Xen", 7, b"2.6\0", endian=endian)
        + note(b"Linux", 0x100, RELEASE.encode() + b"\0", endian=endian)
    )


@dataclass(frozen=True)
class Phdr:
    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int = 4
    align: int = 4


@dataclass(frozen=True)
class BuiltElf:
    data: bytes
    phoff: int
    phentsize: int
    phnum: int
    note_index: int | None
    note_offset: int
    note_size: int
    load_offset: int
    shoff: int

    def phdr_offset(self, index: int) -> int:
        return self.phoff + index * self.phentsize


def build_elf(
    *,
    elf_class: int = 64,
    endian: str = "<",
    machine: int = 62,
    etype: int = 2,
    entry: int = LOAD_PADDR,
    notes: bytes | None = None,
    note_align: int = 4,
    load_paddr: int = LOAD_PADDR,
    body: bytes = BANNER + b"\xcc" * 192,
    interpreter: bytes | None = None,
    extra_phdrs: Sequence[Phdr] = (),
) -> BuiltElf:
    """A minimal kernel-like ELF: one PT_LOAD holding ``body``, one PT_NOTE holding ``notes``
    (default: the PVH note with an 8-byte descriptor plus the usual Linux/Xen notes), an optional
    PT_INTERP, and a one-entry section header table at the very end (as in a real vmlinux)."""
    if notes is None:
        notes = linux_notes(endian) + pvh_note(endian=endian)
    is64 = elf_class == 64
    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    kernel_map = 0xFFFFFFFF80000000 if is64 else 0xC0000000
    phnum = 1 + (1 if notes else 0) + (1 if interpreter else 0) + len(extra_phdrs)
    phoff = ehsize
    cursor = align(phoff + phnum * phentsize, 8)
    note_offset = cursor
    cursor += len(notes)
    interp_offset = cursor
    cursor += len(interpreter or b"")
    load_offset = align(cursor, 16)
    shoff = align(load_offset + len(body), 8)

    phdrs = [
        Phdr(
            PT_LOAD,
            load_offset,
            kernel_map + load_paddr,
            load_paddr,
            len(body),
            len(body) + 0x1000,
            flags=5,
            align=0x200000,
        )
    ]
    note_index = None
    if notes:
        note_index = len(phdrs)
        phdrs.append(
            Phdr(PT_NOTE, note_offset, 0, load_paddr, len(notes), len(notes), align=note_align)
        )
    if interpreter:
        phdrs.append(Phdr(PT_INTERP, interp_offset, 0, 0, len(interpreter), len(interpreter)))
    phdrs.extend(extra_phdrs)

    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if endian == "<" else 2, 1, 0]) + bytes(8)
    if is64:
        header = ident + struct.pack(
            endian + "HHIQQQIHHHHHH",
            etype, machine, 1, entry, phoff, shoff, 0, ehsize, phentsize, phnum, shentsize, 1, 0,
        )  # fmt: skip
    else:
        header = ident + struct.pack(
            endian + "HHIIIIIHHHHHH",
            etype, machine, 1, entry, phoff, shoff, 0, ehsize, phentsize, phnum, shentsize, 1, 0,
        )  # fmt: skip
    table = b""
    for p in phdrs:
        if is64:
            table += struct.pack(
                endian + "IIQQQQQQ",
                p.type, p.flags, p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, p.align,
            )  # fmt: skip
        else:
            table += struct.pack(
                endian + "IIIIIIII",
                p.type, p.offset, p.vaddr & 0xFFFFFFFF, p.paddr, p.filesz, p.memsz, p.flags,
                p.align,
            )  # fmt: skip
    data = bytearray(shoff + shentsize)
    data[: len(header)] = header
    data[phoff : phoff + len(table)] = table
    data[note_offset : note_offset + len(notes)] = notes
    if interpreter:
        data[interp_offset : interp_offset + len(interpreter)] = interpreter
    data[load_offset : load_offset + len(body)] = body
    return BuiltElf(
        data=bytes(data),
        phoff=phoff,
        phentsize=phentsize,
        phnum=phnum,
        note_index=note_index,
        note_offset=note_offset,
        note_size=len(notes),
        load_offset=load_offset,
        shoff=shoff,
    )


def patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buffer = bytearray(data)
    struct.pack_into(fmt, buffer, offset, *values)
    return bytes(buffer)


# --- compressed payloads and bzImage ------------------------------------------------------------


def compress(data: bytes, how: str, *, fast: bool = False) -> bytes:
    """``data`` compressed the way the kernel's build does it (scripts/Makefile.lib); ``fast``
    trades ratio for speed (same stream format)."""
    if how == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    if how == "xz":
        filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
    if how == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=9)  # cmd_lzma: lzma -9
    if how == "bzip2":
        return bz2.compress(data, 9)
    command = {
        "lz4": ["lz4", "-l", "-1" if fast else "-9", "-c", "-q"],  # legacy frame (cmd_lz4: -l)
        "zstd": ["zstd", "-19", "-c", "-q"],
        "lzo": ["lzop", "-9", "-c", "-q"],
    }[how]
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def kernel_payload(data: bytes, how: str, *, size: int | None = None, fast: bool = False) -> bytes:
    """Compressed ``data`` followed, except for gzip, by its size as a u32 (size_append)."""
    stream = compress(data, how, fast=fast)
    if how == "gzip":
        return stream
    return stream + struct.pack("<I", len(data) if size is None else size)


def build_bzimage(
    payload: bytes,
    *,
    protocol: int = 0x020F,
    setup_sects: int = 4,
    payload_fields: bool = True,
    prefix: bytes = b"",
    version: bytes = RELEASE.encode() + b" (builder@example.org) #1 SMP Debian 6.1.0-1",
    efi_stub: bool = True,
) -> bytes:
    """A bzImage: the setup header (HdrS, protocol, kernel_version, payload_offset/length) and a
    protected-mode part of ``prefix`` + ``payload``, padded to whole paragraphs (syssize)."""
    setup = bytearray((setup_sects + 1) * 512)
    if efi_stub:
        setup[0:2] = b"MZ"
    setup[0x1F1] = setup_sects
    protected = pad(prefix + payload, 16)
    struct.pack_into("<I", setup, 0x1F4, len(protected) // 16)
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, protocol)
    setup[0x400 : 0x400 + len(version) + 1] = version + b"\0"
    struct.pack_into("<H", setup, 0x20E, 0x400 - 0x200)
    if payload_fields:
        struct.pack_into("<II", setup, 0x248, len(prefix), len(payload))
    return bytes(setup) + protected


# --- arm64 Image and PE -------------------------------------------------------------------------


def build_arm64_image(*, big_endian: bool = False, body: bytes = BANNER) -> bytes:
    """An arm64 Image header (code0 is an EFI-stub "MZ" instruction) followed by ``body``."""
    header = struct.pack(
        "<IIQQQQQQ",
        0xFA405A4D,  # "MZ" + add: the EFI stub's first instruction
        0x14000000,  # b stext
        0,  # text_offset
        0x200000,  # image_size
        0b1010 | int(big_endian),  # flags: 4K pages, anywhere; bit 0 = big-endian
        0,
        0,
        0,
    )
    return header + b"ARM\x64" + struct.pack("<I", 0x40) + body


def build_pe(*, machine: int = 0x8664, zboot: str | None = None) -> bytes:
    data = bytearray(0x200)
    data[0:2] = b"MZ"
    if zboot is not None:
        data[4:8] = b"zimg"
        struct.pack_into("<II", data, 8, 0x200, 0x100)
        data[0x18 : 0x18 + len(zboot)] = zboot.encode()
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", data, 0x84, machine, 0, 0, 0, 0, 0, 0x22)
    return bytes(data)


# --- kernel configs -----------------------------------------------------------------------------

#: What Debian bookworm's cloud kernel has (qemu-boot-facts.md, and its boot/config-*).
DEBIAN_CLOUD: Mapping[str, str] = {
    "VIRTIO_PCI": "m",
    "VIRTIO_MMIO": "m",
    "VIRTIO_BLK": "m",
    "ISO9660_FS": "m",
    "BLK_DEV_SR": "m",
    "ATA_PIIX": "m",
    "SATA_AHCI": "absent",  # linux-image-cloud-amd64 6.1 has no AHCI driver (measured)
    "DEVTMPFS_MOUNT": "absent",
}


def config_text(states: Mapping[str, str] | None = None, *, arch: str = "X86_64") -> bytes:
    """A .config: every checked option ``=y`` unless ``states`` says "m", "absent" (written as
    "is not set") or "missing" (no line at all)."""
    states = states or {}
    lines = [
        "#",
        "# Automatically generated file; DO NOT EDIT.",
        "# Linux/x86 6.1.0 Kernel Configuration",
        "#",
        'CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"',
        f"CONFIG_{arch}=y",
        "CONFIG_64BIT=y",
        'CONFIG_LOCALVERSION=""',
    ]
    for name in CHECKED_OPTIONS:
        state = states.get(name, "y")
        if state in ("y", "m"):
            lines.append(f"CONFIG_{name}={state}")
        elif state == "absent":
            lines.append(f"# CONFIG_{name} is not set")
    return ("\n".join(lines) + "\n").encode()


def ikconfig_blob(text: bytes, *, end_marker: bool = True) -> bytes:
    """The IKCONFIG blob of kernel/configs.c: ``IKCFG_ST`` + gzip'd config + ``IKCFG_ED``."""
    return b"IKCFG_ST" + gzip.compress(text, mtime=0) + (b"IKCFG_ED" if end_marker else b"")


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path
