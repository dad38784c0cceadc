"""ELF header, program header and note parsing with hard limits (System V gABI, ``elf(5)``).

Reads only the ELF header, the program header table and the PT_NOTE segments, each by offset.
Every offset and size is checked against the file before it is used; anything inconsistent raises
``KernelInspectionError``: a kernel that lies about its own layout is refused, never guessed at.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final, Literal

from hookd.kernels._reader import KernelFile
from hookd.kernels.model import (
    MAX_NOTE_BYTES_TOTAL,
    MAX_NOTE_SEGMENT_BYTES,
    MAX_NOTES,
    MAX_PROGRAM_HEADERS,
    XEN_ELFNOTE_PHYS32_ENTRY,
    KernelInspectionError,
    KernelReport,
    LoadSegment,
    PvhEntry,
)

ELF_MAGIC: Final = b"\x7fELF"
PT_LOAD: Final = 1
PT_INTERP: Final = 3
PT_NOTE: Final = 4
PN_XNUM: Final = 0xFFFF
_MAX_OWNERS: Final = 32


def parse_elf(f: KernelFile) -> KernelReport:
    """Parse ``f``, which starts with the ELF magic."""
    ident = f.read_at(0, 16, what="ELF identification")
    ei_class, ei_data, ei_version = ident[4], ident[5], ident[6]
    if ei_class not in (1, 2):
        raise KernelInspectionError(f"{f.path} is malformed: unknown ELF class {ei_class}.")
    if ei_data not in (1, 2):
        raise KernelInspectionError(f"{f.path} is malformed: unknown ELF data encoding {ei_data}.")
    if ei_version != 1:
        raise KernelInspectionError(f"{f.path} is malformed: unknown ELF version {ei_version}.")
    elf_class: Literal[32, 64] = 64 if ei_class == 2 else 32
    endian: Literal["little", "big"] = "little" if ei_data == 1 else "big"
    e = "<" if ei_data == 1 else ">"

    header_size = 64 if elf_class == 64 else 52
    raw = f.read_at(0, header_size, what="ELF header")
    fmt = e + ("HHIQQQIHHHHHH" if elf_class == 64 else "HHIIIIIHHHHHH")
    fields = struct.unpack_from(fmt, raw, 16)
    e_type, e_machine, e_version, e_entry, e_phoff, e_shoff = fields[:6]
    e_phentsize, e_phnum, e_shentsize, e_shnum = fields[8:12]
    if e_version != 1:
        raise KernelInspectionError(f"{f.path} is malformed: ELF header version {e_version}.")

    phdr_format = e + ("IIQQQQQQ" if elf_class == 64 else "IIIIIIII")
    phdr_size = struct.calcsize(phdr_format)
    if e_phnum == PN_XNUM:
        raise KernelInspectionError(
            f"{f.path} uses extended program header numbering (e_phnum=0xffff), which no kernel "
            "image does."
        )
    if e_phnum > MAX_PROGRAM_HEADERS:
        raise KernelInspectionError(
            f"{f.path} claims {e_phnum} program headers, more than the limit of "
            f"{MAX_PROGRAM_HEADERS} for a kernel image."
        )
    if e_phnum and e_phentsize != phdr_size:
        raise KernelInspectionError(
            f"{f.path} is malformed: program header entries are {e_phentsize} bytes instead of "
            f"{phdr_size}."
        )
    if e_phnum and e_phoff < header_size:
        # Firecracker's loader refuses this too (InvalidProgramHeaderOffset).
        raise KernelInspectionError(
            f"{f.path} is malformed: its program header table (offset {e_phoff}) overlaps the "
            "ELF header."
        )
    table = f.read_at(e_phoff, e_phnum * phdr_size, what="program header table") if e_phnum else b""

    # The section header table of a vmlinux sits at the very end of the file: checking that it is
    # inside the file catches a kernel truncated in transit even when every segment survived.
    if e_shoff:
        if e_shentsize == 0 or e_shentsize > 4096:
            raise KernelInspectionError(
                f"{f.path} is malformed: section header entries are {e_shentsize} bytes."
            )
        count = max(e_shnum, 1)  # e_shnum == 0 means "more than 0xff00", counted in entry 0
        if e_shoff + count * e_shentsize > f.size:
            raise KernelInspectionError(
                f"{f.path} is truncated: its section header table ends at byte "
                f"{e_shoff + count * e_shentsize}, past the end of the file ({f.size} bytes)."
            )

    address_limit = 1 << elf_class
    loads: list[LoadSegment] = []
    has_interpreter = False
    note_segments: list[tuple[int, int, int, int]] = []  # index, offset, filesz, align
    for index, fields in enumerate(struct.iter_unpack(phdr_format, table)):
        if elf_class == 64:
            p_type, _, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = fields
        else:
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _, p_align = fields
        if p_filesz and p_offset + p_filesz > f.size:
            raise KernelInspectionError(
                f"{f.path} is truncated or malformed: program header {index} (type {p_type:#x}) "
                f"covers bytes {p_offset}-{p_offset + p_filesz}, past the end of the file "
                f"({f.size} bytes)."
            )
        if p_type == PT_LOAD:
            if p_memsz < p_filesz:
                raise KernelInspectionError(
                    f"{f.path} is malformed: loadable segment {index} has a memory size smaller "
                    "than its file size."
                )
            if p_paddr + p_memsz > address_limit or p_vaddr + p_memsz > address_limit:
                raise KernelInspectionError(
                    f"{f.path} is malformed: loadable segment {index} wraps around the "
                    f"{elf_class}-bit address space."
                )
            loads.append(LoadSegment(p_paddr, p_filesz, p_memsz))
        elif p_type == PT_INTERP:
            has_interpreter = True
        elif p_type == PT_NOTE and p_filesz:
            note_segments.append((index, p_offset, p_filesz, p_align))

    owners: list[str] = []
    pvh_notes: list[tuple[str, bytes]] = []
    for owner, n_type, desc in _notes(f, e, note_segments):
        if owner not in owners and len(owners) < _MAX_OWNERS:
            owners.append(owner)
        if n_type == XEN_ELFNOTE_PHYS32_ENTRY:
            pvh_notes.append((owner, desc))
    pvh, pvh_problem = _pvh(pvh_notes, endian)
    return KernelReport(
        path=str(f.path),
        size=f.size,
        format="elf",
        elf_class=elf_class,
        elf_endian=endian,
        elf_machine=e_machine,
        elf_type=e_type,
        elf_entry=e_entry,
        has_interpreter=has_interpreter,
        load_segments=tuple(loads),
        note_owners=tuple(owners),
        pvh=pvh,
        pvh_problem=pvh_problem,
    )


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _notes(
    f: KernelFile, e: str, segments: list[tuple[int, int, int, int]]
) -> Iterator[tuple[str, int, bytes]]:
    """``(owner, n_type, descriptor)`` of every note in the PT_NOTE ``segments``."""
    bytes_read = notes_seen = 0
    for index, offset, size, p_align in segments:
        if size > MAX_NOTE_SEGMENT_BYTES:
            raise KernelInspectionError(
                f"{f.path} is malformed: note segment {index} is {size} bytes, more than the "
                f"{MAX_NOTE_SEGMENT_BYTES}-byte limit."
            )
        bytes_read += size
        if bytes_read > MAX_NOTE_BYTES_TOTAL:
            raise KernelInspectionError(
                f"{f.path} is malformed: its note segments add up to more than "
                f"{MAX_NOTE_BYTES_TOTAL} bytes."
            )
        data = f.read_at(offset, size, what=f"note segment {index}")
        # Notes are 4-byte aligned; binutils (readelf) uses 8 when the segment says p_align == 8.
        # (QEMU's get_elf_note_type aligns to p_align; Linux emits p_align 4, where both agree.)
        alignment = 8 if p_align == 8 else 4
        position = 0
        while size - position >= 12:
            notes_seen += 1
            if notes_seen > MAX_NOTES:
                raise KernelInspectionError(
                    f"{f.path} is malformed: it has more than {MAX_NOTES} ELF notes."
                )
            namesz, descsz, n_type = struct.unpack_from(e + "III", data, position)
            # The descriptor starts at the next aligned offset after the 12-byte header and the
            # name (with 4-byte alignment this is the classic "name padded to 4").
            desc_start = position + _align(12 + namesz, alignment)
            if desc_start + descsz > size:
                raise KernelInspectionError(
                    f"{f.path} is malformed: the ELF note at byte {position} of note segment "
                    f"{index} claims namesz={namesz} and descsz={descsz}, which overrun the "
                    f"segment ({size} bytes)."
                )
            name = data[position + 12 : position + 12 + namesz].rstrip(b"\0")
            yield (
                name.decode("ascii", "backslashreplace")[:64],
                n_type,
                data[desc_start : desc_start + descsz],
            )
            position = desc_start + _align(descsz, alignment)
        if any(data[position:]):
            raise KernelInspectionError(
                f"{f.path} is malformed: note segment {index} ends with "
                f"{size - position} stray bytes."
            )


def _pvh(
    notes: list[tuple[str, bytes]], endian: Literal["little", "big"]
) -> tuple[PvhEntry | None, str | None]:
    """The PVH entry of the XEN_ELFNOTE_PHYS32_ENTRY ``(owner, descriptor)`` notes, or why none.

    QEMU (hw/i386/x86-common.c read_pvh_start_addr via include/hw/elf_ops.h.inc
    get_elf_note_type) matches n_type only, not the owner; the PHYS32 entry is 32-bit, Linux
    stores it as an 8-byte _ASM_PTR on x86-64: take the low 32 bits of a 4- or 8-byte descriptor.
    """
    first: PvhEntry | None = None
    for owner, desc in notes:
        if len(desc) not in (4, 8):
            if first is None:
                return None, (
                    f"the XEN_ELFNOTE_PHYS32_ENTRY note has a {len(desc)}-byte descriptor "
                    "instead of 4 or 8 bytes"
                )
            continue
        value = int.from_bytes(desc, endian)
        entry = PvhEntry(value & 0xFFFFFFFF, owner, len(desc), value)
        if first is None:
            first = entry
        elif entry.address != first.address:
            # QEMU calls the note callback once per PT_NOTE segment (the last one wins),
            # Firecracker takes the first: a kernel whose notes disagree boots differently in
            # each. Refuse it.
            return None, (
                f"two XEN_ELFNOTE_PHYS32_ENTRY notes disagree ({first.address:#x} and "
                f"{entry.address:#x})"
            )
    return first, None
