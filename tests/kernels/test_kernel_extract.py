"""extract_vmlinux on synthetic bzImages: every payload format, the header and the scan paths,
and the limits (output cap, timeout, missing tools, corrupt payloads, atomic output)."""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

import pytest

from hookd.kernels import (
    KernelExtractionError,
    KernelInspectionError,
    check_kernel,
    extract_vmlinux,
)

from .builders import (
    BANNER,
    PVH_ENTRY,
    build_bzimage,
    build_elf,
    compress,
    kernel_payload,
    write,
)
from .ci import require_program

TOOL_OF = {"lz4": ("lz4", "lz4"), "zstd": ("zstd", "zstd"), "lzo": ("lzop", "lzop")}
ALL = ["gzip", "xz", "bzip2", "lzma", "lz4", "zstd", "lzo"]


def needs_tool(how: str) -> None:
    if how in TOOL_OF:
        require_program(*TOOL_OF[how])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("how", ALL)
def test_extracts_every_payload_format_through_the_boot_header(tmp_path: Path, how: str) -> None:
    needs_tool(how)
    elf = build_elf().data
    bzimage = write(tmp_path, "vmlinuz", build_bzimage(kernel_payload(elf, how)))
    out = tmp_path / "vmlinux"

    report = extract_vmlinux(bzimage, out)

    assert out.read_bytes() == elf
    assert report.path == str(out)
    assert report.format == "elf"
    assert report.pvh is not None and report.pvh.address == PVH_ENTRY
    assert check_kernel(report, "kvm").usable
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("how", ALL)
def test_extracts_by_scanning_when_the_header_has_no_payload_fields(
    tmp_path: Path, how: str
) -> None:
    needs_tool(how)
    elf = build_elf().data
    # Decoys before the payload: magics that do not start a stream decompressing to an ELF.
    decoys = (
        b"\x1f\x8b\x08\x00garbage"
        + b"\x5d\x00\x00\x00\x04junk"
        + b"\xfd7zXZ\x00\x00"
        + b"\x02\x21\x4c\x18\xff\xff\xff\xff"
        + b"\x28\xb5\x2f\xfd\x00"
        + b"BZh9"
        + compress(b"not an ELF at all" * 20, "gzip")
    )
    data = build_bzimage(
        kernel_payload(elf, how), protocol=0x0206, payload_fields=False, prefix=decoys
    )
    out = tmp_path / "vmlinux"

    extract_vmlinux(write(tmp_path, "vmlinuz", data), out)

    assert out.read_bytes() == elf


@pytest.mark.parametrize("how", ["xz", "gzip", "zstd"])
def test_extracts_a_bare_compressed_vmlinux(tmp_path: Path, how: str) -> None:
    needs_tool(how)
    elf = build_elf().data
    out = tmp_path / "vmlinux"
    extract_vmlinux(write(tmp_path, "vmlinux.z", compress(elf, how)), out)
    assert out.read_bytes() == elf


@pytest.mark.parametrize("fields", [True, False])
def test_multi_block_lz4_payload(tmp_path: Path, fields: bool) -> None:
    """Legacy lz4 frames hold 8 MiB blocks: a 20 MiB kernel spans three."""
    require_program("lz4", "lz4")
    rng = random.Random(7)
    body = BANNER + bytes(rng.choice(b"abcdefgh") for _ in range(1 << 16)) * 320
    elf = build_elf(body=body).data
    data = build_bzimage(kernel_payload(elf, "lz4", fast=True), payload_fields=fields)
    out = tmp_path / "vmlinux"

    extract_vmlinux(write(tmp_path, "vmlinuz", data), out)

    assert out.stat().st_size == len(elf) > 20 << 20
    assert out.read_bytes() == elf


def test_payload_that_is_not_an_elf_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    out = tmp_path / "vmlinux"
    out.write_bytes(b"previous")
    data = build_bzimage(kernel_payload(b"\x00not an elf" * 100, "xz"))

    with pytest.raises(KernelExtractionError, match="not an ELF") as raised:
        extract_vmlinux(write(tmp_path, "vmlinuz", data), out)

    assert "named by its boot header" in raised.value.reason
    assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_payload_that_decompresses_to_a_broken_elf_is_refused(tmp_path: Path) -> None:
    broken = build_elf().data[:200]  # ELF magic, program headers pointing past the end
    data = build_bzimage(kernel_payload(broken, "gzip"))
    with pytest.raises(KernelExtractionError, match="not a well-formed ELF"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_size_recorded_after_the_payload_is_verified(tmp_path: Path) -> None:
    elf = build_elf().data
    data = build_bzimage(kernel_payload(elf, "xz", size=len(elf) + 1))
    with pytest.raises(KernelExtractionError, match="records"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux")


def test_corrupt_payload_is_refused(tmp_path: Path) -> None:
    payload = bytearray(kernel_payload(build_elf().data, "xz"))
    for offset in range(40, len(payload) - 30, 7):
        payload[offset] ^= 0x5A
    with pytest.raises(KernelExtractionError):
        extract_vmlinux(write(tmp_path, "vmlinuz", build_bzimage(bytes(payload))), tmp_path / "v")
    assert leftovers(tmp_path) == []


def test_truncated_compressed_stream_is_refused(tmp_path: Path) -> None:
    stream = compress(build_elf().data, "bzip2")
    with pytest.raises(KernelExtractionError, match="truncated"):
        extract_vmlinux(write(tmp_path, "vmlinux.bz2", stream[:-20]), tmp_path / "vmlinux")


@pytest.mark.parametrize("how", ["xz", "lz4"])
def test_decompression_bomb_stops_at_the_output_limit(tmp_path: Path, how: str) -> None:
    needs_tool(how)
    bomb = build_elf(body=BANNER + bytes(32 << 20)).data
    data = build_bzimage(kernel_payload(bomb, how, fast=True))
    started = time.monotonic()
    with pytest.raises(KernelExtractionError, match="more than the 1048576-byte limit"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux", max_output=1 << 20)
    assert time.monotonic() - started < 10
    assert leftovers(tmp_path) == []


def fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_missing_tool_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_program("lz4", "lz4")
    data = build_bzimage(kernel_payload(build_elf().data, "lz4"))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(KernelExtractionError, match=r"needs the lz4 program.*package lz4"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux")


def test_hanging_tool_is_killed_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_program("lz4", "lz4")
    data = build_bzimage(kernel_payload(build_elf().data, "lz4"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "lz4", "sleep 60\n")  # a child holds the pipes open too
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    started = time.monotonic()

    with pytest.raises(KernelExtractionError, match="lz4 timed out"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux", timeout=1.0)

    assert time.monotonic() - started < 10
    assert leftovers(tmp_path) == []


def test_flooding_tool_is_stopped_at_the_output_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_program("lz4", "lz4")
    data = build_bzimage(kernel_payload(build_elf().data, "lz4"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "lz4", "printf '\\177ELF'; exec cat /dev/zero\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    with pytest.raises(KernelExtractionError, match="more than the 4194304-byte limit"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux", max_output=4 << 20)


def test_failing_tool_reports_its_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_program("zstd", "zstd")
    data = build_bzimage(kernel_payload(build_elf().data, "zstd"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "zstd", "cat >/dev/null; echo 'zstd: boom' >&2; exit 3\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    with pytest.raises(KernelExtractionError, match="zstd exited with status 3: zstd: boom"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "vmlinux")


def test_elf_input_has_nothing_to_extract(tmp_path: Path) -> None:
    with pytest.raises(KernelExtractionError, match="already an uncompressed ELF"):
        extract_vmlinux(write(tmp_path, "vmlinux", build_elf().data), tmp_path / "out")


def test_file_without_any_payload(tmp_path: Path) -> None:
    data = build_bzimage(b"\xcc" * 4096, payload_fields=False)
    with pytest.raises(KernelExtractionError, match="no compressed payload"):
        extract_vmlinux(write(tmp_path, "vmlinuz", data), tmp_path / "out")


def test_unusable_destinations(tmp_path: Path) -> None:
    bzimage = write(tmp_path, "vmlinuz", build_bzimage(kernel_payload(build_elf().data, "gzip")))
    with pytest.raises(KernelExtractionError, match="Cannot create a file"):
        extract_vmlinux(bzimage, tmp_path / "missing" / "vmlinux")
    with pytest.raises(KernelExtractionError, match="over its own bzImage"):
        extract_vmlinux(bzimage, bzimage)
    with pytest.raises(KernelInspectionError, match="does not exist"):
        extract_vmlinux(tmp_path / "nope", tmp_path / "vmlinux")


def test_extraction_replaces_an_existing_output(tmp_path: Path) -> None:
    elf = build_elf().data
    out = write(tmp_path, "vmlinux", b"old contents")
    extract_vmlinux(write(tmp_path, "vmlinuz", build_bzimage(kernel_payload(elf, "gzip"))), out)
    assert out.read_bytes() == elf


def test_input_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz-huge"
    with path.open("wb") as handle:
        handle.write(build_bzimage(kernel_payload(build_elf().data, "gzip")))
        handle.truncate(8 << 30)
    with pytest.raises(KernelInspectionError, match="limit"):
        extract_vmlinux(path, tmp_path / "vmlinux")


def test_appended_size_is_little_endian_u32(tmp_path: Path) -> None:
    payload = kernel_payload(b"x" * 1000, "xz")
    assert struct.unpack("<I", payload[-4:]) == (1000,)


def test_lz4_scan_stops_where_the_next_block_size_exceeds_the_lz4_bound(tmp_path: Path) -> None:
    """A legacy lz4 frame has no end mark: the walk ends at a "block size" above
    LZ4_COMPRESSBOUND(8 MiB), which the kernel's appended image size normally is."""
    require_program("lz4", "lz4")
    elf = build_elf().data
    # The u32 after the stream claims 9 MiB, and 10 MiB of other data follow: read as a block,
    # that data would make lz4 fail.
    payload = kernel_payload(elf, "lz4", size=9 << 20) + random.Random(1).randbytes(10 << 20)
    data = build_bzimage(payload, payload_fields=False)
    out = tmp_path / "vmlinux"

    extract_vmlinux(write(tmp_path, "vmlinuz", data), out)

    assert out.read_bytes() == elf
