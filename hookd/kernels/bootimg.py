"""Non-ELF kernel containers: the x86 bzImage, the arm64 ``Image``, PE files, compressed streams.

References:
- x86 boot protocol: Linux ``Documentation/arch/x86/boot.rst`` ("THE REAL-MODE KERNEL HEADER"):
  ``setup_sects`` at 0x1F1 (0 means 4), ``syssize`` at 0x1F4 (16-byte paragraphs, 32-bit from 2.04),
  ``boot_flag`` 0xAA55 at 0x1FE, ``header`` "HdrS" at 0x202, ``version`` at 0x206,
  ``kernel_version`` at 0x20E (pointer to a NUL-terminated string, less 0x200), ``xloadflags`` at
  0x236 (2.12+), ``payload_offset``/``payload_length`` at 0x248/0x24C (2.08+, relative to the start
  of the protected-mode code, which begins at ``(setup_sects + 1) * 512``).
- The payload is ``vmlinux.bin`` (+ relocs) compressed and followed by its uncompressed size as a
  little-endian u32 (``arch/x86/boot/compressed/Makefile`` header comment and
  ``scripts/Makefile.lib`` ``size_append``); gzip carries the size in its own trailer.
- arm64 Image: ``Documentation/arch/arm64/booting.rst``: ``text_offset`` at 8, ``image_size`` at 16,
  ``flags`` at 24 (bit 0: big-endian), magic ``ARM\\x64`` at 0x38, PE offset at 0x3C.
- EFI zboot (``drivers/firmware/efi/libstub/zboot-header.S``): "MZ", "zimg" at 4, payload offset
  and size at 8 and 12, the compression type string at 0x18.
- Compression magics as in the kernel tree's ``scripts/extract-vmlinux``.
"""

from __future__ import annotations

import struct
from typing import Final

from hookd.kernels._reader import KernelFile
from hookd.kernels.model import KernelInspectionError, KernelReport

#: (name, magic) in the order ``scripts/extract-vmlinux`` tries them.
COMPRESSION_MAGICS: Final[tuple[tuple[str, bytes], ...]] = (
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00\x00"),
    ("lzo", b"\x89LZO"),
    ("lz4", b"\x02\x21\x4c\x18"),  # LZ4 legacy frame, what the kernel's lz4 -l produces
    ("zstd", b"\x28\xb5\x2f\xfd"),
)
BZIMAGE_HEADER_END: Final = 0x268  # through init_size (0x260) and handover_offset (0x264)


def identify_compression(data: bytes) -> str | None:
    """The compression whose magic ``data`` starts with, or None."""
    for name, magic in COMPRESSION_MAGICS:
        if data.startswith(magic):
            if name == "bzip2" and (len(data) < 4 or data[3] not in b"123456789"):
                continue
            return name
    return None


def is_bzimage(head: bytes) -> bool:
    # QEMU checks for "HdrS" first too (hw/i386/x86-common.c x86_load_linux): with it, the file
    # takes the Linux boot protocol path whatever else it looks like (an EFI stub also starts "MZ").
    return head[0x202:0x206] == b"HdrS"


def protected_mode_offset(head: bytes) -> int:
    """Where the protected-mode code starts, after ``setup_sects`` 512-byte sectors (0 means 4)."""
    return ((head[0x1F1] or 4) + 1) * 512


def parse_bzimage(f: KernelFile) -> KernelReport:
    head = f.read_upto(0, BZIMAGE_HEADER_END)
    if len(head) < 0x210:
        raise KernelInspectionError(
            f"{f.path} is truncated: it has a Linux boot header but only {len(head)} bytes."
        )
    problems: list[str] = []
    setup_sects = head[0x1F1] or 4
    protected_offset = protected_mode_offset(head)
    (boot_flag,) = struct.unpack_from("<H", head, 0x1FE)
    if boot_flag != 0xAA55:
        problems.append(f"boot_flag is {boot_flag:#06x} instead of 0xaa55")
    (protocol_raw,) = struct.unpack_from("<H", head, 0x206)
    if protected_offset > f.size:
        raise KernelInspectionError(
            f"{f.path} is truncated: its {setup_sects} setup sectors end past the end of the file."
        )
    if protocol_raw >= 0x204:
        (syssize,) = struct.unpack_from("<I", head, 0x1F4)
        # arch/x86/boot/tools/build.c pads the image to exactly syssize paragraphs; signing tools
        # (sbsign) append to the file, so a larger file is fine, a shorter one is truncated.
        if protected_offset + syssize * 16 > f.size + 15:
            raise KernelInspectionError(
                f"{f.path} is truncated: its boot header says the kernel is "
                f"{protected_offset + syssize * 16} bytes, the file has {f.size}."
            )

    version = None
    (version_pointer,) = struct.unpack_from("<H", head, 0x20E)
    if version_pointer:
        raw = f.read_upto(version_pointer + 0x200, 256).split(b"\0", 1)[0]
        token = raw.split(b" ", 1)[0]
        if token and all(0x21 <= c < 0x7F for c in token):
            version = token.decode("ascii")

    compression: str | None = None
    payload_offset: int | None = None
    payload_length: int | None = None
    if protocol_raw >= 0x208 and len(head) >= 0x250:
        relative, length = struct.unpack_from("<II", head, 0x248)
        if length:
            payload_offset, payload_length = protected_offset + relative, length
            if payload_offset + length > f.size:
                raise KernelInspectionError(
                    f"{f.path} is truncated: its compressed payload (bytes {payload_offset}-"
                    f"{payload_offset + length}) ends past the end of the file ({f.size} bytes)."
                )
            compression = identify_compression(f.read_upto(payload_offset, 16))
            if compression is None:
                problems.append("the payload starts with no known compression magic")
    return KernelReport(
        path=str(f.path),
        size=f.size,
        format="bzimage",
        version=version,
        boot_protocol=f"{protocol_raw >> 8}.{protocol_raw & 0xFF:02d}",
        compression=compression,
        payload_offset=payload_offset,
        payload_length=payload_length,
        notes=tuple(problems),
    )


def is_arm64_image(head: bytes) -> bool:
    return head[0x38:0x3C] == b"ARM\x64"


def parse_arm64(f: KernelFile, head: bytes) -> KernelReport:
    image_size, flags = struct.unpack_from("<QQ", head, 16)
    return KernelReport(
        path=str(f.path),
        size=f.size,
        format="arm64-image",
        arm64_big_endian=bool(flags & 1),
        arm64_image_size=image_size,
    )


def parse_pe(f: KernelFile, head: bytes) -> KernelReport | None:
    """A PE image ("MZ" and a "PE\\0\\0" header inside the file), or None for plain MZ data."""
    if len(head) < 0x40:
        return None
    (pe_offset,) = struct.unpack_from("<I", head, 0x3C)
    pe_header = f.read_upto(pe_offset, 24)
    if len(pe_header) < 24 or pe_header[:4] != b"PE\0\0":
        return None
    machine, sections = struct.unpack_from("<HH", pe_header, 4)
    (optional_size,) = struct.unpack_from("<H", pe_header, 20)
    tables_end = pe_offset + 24 + optional_size + 40 * sections
    if tables_end > f.size:
        raise KernelInspectionError(
            f"{f.path} is truncated: its PE section table ends at byte {tables_end}, past the end "
            f"of the file ({f.size} bytes)."
        )
    compression = None
    if head[4:8] == b"zimg":
        compression = head[0x18:0x38].split(b"\0", 1)[0].decode("ascii", "replace") or "unknown"
    return KernelReport(
        path=str(f.path), size=f.size, format="pe", pe_machine=machine, compression=compression
    )
