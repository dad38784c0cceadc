"""ELF kernels: PVH note parsing, the KVM/Firecracker rules, and hostile or truncated headers."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.errors import PermanentError
from hookd.kernels import (
    KernelInspectionError,
    KernelReport,
    check_kernel,
    inspect_kernel,
    verify_kernel,
)

from .builders import (
    BANNER,
    LOAD_PADDR,
    PT_NOTE,
    PVH_ENTRY,
    RELEASE,
    BuiltElf,
    Phdr,
    build_elf,
    linux_notes,
    note,
    patch,
    pvh_note,
    write,
)


def inspect_bytes(tmp_path: Path, data: bytes, name: str = "vmlinux-test") -> KernelReport:
    return inspect_kernel(write(tmp_path, name, data))


def test_pvh_note_with_8_byte_descriptor_is_found_and_accepted(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf().data)

    assert report.format == "elf"
    assert (report.elf_class, report.elf_machine_name, report.elf_type_name) == (
        64,
        "x86-64",
        "EXEC",
    )
    assert report.pvh is not None
    assert report.pvh.address == PVH_ENTRY
    assert report.pvh.owner == "Xen"
    assert report.pvh.descriptor_size == 8
    assert report.version == RELEASE
    kvm = check_kernel(report, "kvm")
    firecracker = check_kernel(report, "firecracker")
    assert kvm.usable, kvm.reason
    assert "PVH entry at 0x1000850" in kvm.reason
    assert firecracker.usable, firecracker.reason


def test_pvh_note_with_4_byte_descriptor_is_accepted(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(notes=pvh_note(PVH_ENTRY + 0x10, size=4)).data)

    assert report.pvh is not None
    assert (report.pvh.address, report.pvh.descriptor_size) == (PVH_ENTRY + 0x10, 4)
    assert check_kernel(report, "kvm").usable


def test_pvh_entry_is_the_low_32_bits_and_high_bits_are_refused(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(notes=pvh_note((1 << 32) | PVH_ENTRY)).data)

    assert report.pvh is not None
    assert report.pvh.address == PVH_ENTRY
    verdict = check_kernel(report, "kvm")
    assert not verdict.usable
    assert "not a 32-bit physical address" in verdict.reason


def test_elf_with_only_other_notes_is_refused_for_kvm_but_fine_for_firecracker(
    tmp_path: Path,
) -> None:
    notes = linux_notes() + note(b"Xen", 17, b"\x01\x88\0\0")  # type 17, not 18
    report = inspect_bytes(tmp_path, build_elf(notes=notes).data)

    assert report.pvh is None
    assert set(report.note_owners) == {"Xen", "Linux"}
    kvm = check_kernel(report, "kvm")
    assert not kvm.usable
    assert "no PVH ELF note" in kvm.reason
    assert "Error loading uncompressed kernel without PVH ELF Note" in kvm.reason
    assert "CONFIG_PVH=y" in kvm.reason
    assert check_kernel(report, "firecracker").usable


def test_qemu_matches_the_note_type_only_so_another_owner_is_a_warning(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(notes=pvh_note(owner=b"NotXen")).data)

    assert report.pvh is not None
    assert report.pvh.owner == "NotXen"
    verdict = check_kernel(report, "kvm")
    assert verdict.usable
    assert any("not 'Xen'" in warning for warning in verdict.warnings)


def test_pvh_descriptor_of_an_odd_size_is_unusable(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(notes=linux_notes() + pvh_note(size=6)).data)

    assert report.pvh is None
    assert report.pvh_problem is not None
    verdict = check_kernel(report, "kvm")
    assert not verdict.usable
    assert "6-byte descriptor" in verdict.reason


def test_two_disagreeing_pvh_notes_are_refused(tmp_path: Path) -> None:
    notes = linux_notes() + pvh_note(PVH_ENTRY) + pvh_note(PVH_ENTRY + 0x100)
    verdict = check_kernel(inspect_bytes(tmp_path, build_elf(notes=notes).data), "kvm")

    assert not verdict.usable
    assert "disagree" in verdict.reason


def test_pvh_entry_outside_the_loaded_segments_is_refused(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(notes=linux_notes() + pvh_note(0x500000)).data)

    verdict = check_kernel(report, "kvm")
    assert not verdict.usable
    assert "outside every loadable segment" in verdict.reason


def test_notes_in_an_8_byte_aligned_segment_are_parsed(tmp_path: Path) -> None:
    notes = note(b"GNU", 5, bytes(16), alignment=8) + pvh_note()
    # pvh_note is 4-aligned: 12 + 4 ("Xen\0") + 8 = 24 bytes, also a multiple of 8
    report = inspect_bytes(tmp_path, build_elf(notes=notes, note_align=8).data)

    assert report.pvh is not None
    assert report.pvh.address == PVH_ENTRY
    assert "GNU" in report.note_owners


def test_32_bit_elf_is_refused_for_x86_64(tmp_path: Path) -> None:
    built = build_elf(elf_class=32, machine=3, entry=LOAD_PADDR, notes=pvh_note(size=4))
    report = inspect_bytes(tmp_path, built.data)

    assert (report.elf_class, report.elf_machine_name) == (32, "i386")
    assert report.pvh is not None  # parsed correctly, and still refused
    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        assert "32-bit ELF" in verdict.reason


@pytest.mark.parametrize(
    ("machine", "name"), [(183, "AArch64"), (243, "RISC-V"), (21, "PowerPC64")]
)
def test_non_x86_elf_is_refused_for_x86_64(tmp_path: Path, machine: int, name: str) -> None:
    report = inspect_bytes(tmp_path, build_elf(machine=machine).data)

    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        assert f"ELF for {name}, not an x86-64 kernel" in verdict.reason


def test_aarch64_elf_vmlinux_is_refused_on_aarch64_with_the_image_hint(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(machine=183).data)

    verdict = check_kernel(report, "firecracker", arch="aarch64")
    assert not verdict.usable
    assert "arch/arm64/boot/Image" in verdict.reason
    x86 = check_kernel(inspect_bytes(tmp_path, build_elf().data, "x"), "kvm", arch="aarch64")
    assert not x86.usable
    assert "not an aarch64 kernel" in x86.reason


def test_big_endian_elf_is_parsed_and_refused(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_elf(endian=">").data)

    assert report.elf_endian == "big"
    assert report.pvh is not None
    assert report.pvh.address == PVH_ENTRY
    assert not check_kernel(report, "kvm").usable


@pytest.mark.parametrize(
    ("etype", "words"),
    [(3, "ET_DYN"), (1, "ET_REL"), (4, "ET_CORE"), (0, "ET_NONE")],
)
def test_elf_that_is_not_an_executable_is_refused(tmp_path: Path, etype: int, words: str) -> None:
    report = inspect_bytes(tmp_path, build_elf(etype=etype).data)

    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        assert words in verdict.reason
        assert "not an executable kernel image" in verdict.reason


def test_dynamically_linked_program_is_refused(tmp_path: Path) -> None:
    built = build_elf(interpreter=b"/lib64/ld-linux-x86-64.so.2\0")
    verdict = check_kernel(inspect_bytes(tmp_path, built.data), "firecracker")

    assert not verdict.usable
    assert "dynamically linked program" in verdict.reason


def test_system_programs_are_refused(tmp_path: Path) -> None:
    for program in ("/bin/ls", "/bin/sh"):
        for hypervisor in ("kvm", "firecracker"):
            verdict = verify_kernel(program, hypervisor)
            assert not verdict.usable, program
            assert "not an executable kernel image" in verdict.reason or (
                "dynamically linked program" in verdict.reason
            )


def test_static_executable_without_linux_markers_is_refused(tmp_path: Path) -> None:
    built = build_elf(notes=note(b"GNU", 3, bytes(20)), body=b"\x90" * 256)
    verdict = check_kernel(inspect_bytes(tmp_path, built.data), "firecracker")

    assert not verdict.usable
    assert "does not look like a Linux kernel" in verdict.reason


def test_elf_without_loadable_data_is_refused(tmp_path: Path) -> None:
    built = build_elf()
    # Turn the PT_LOAD into a PT_NULL entry.
    data = patch(built.data, built.phdr_offset(0), "<I", 0)
    verdict = check_kernel(inspect_bytes(tmp_path, data), "firecracker")

    assert not verdict.usable
    assert "no loadable segment" in verdict.reason


def test_firecracker_refuses_an_entry_below_1_mib(tmp_path: Path) -> None:
    verdict = check_kernel(inspect_bytes(tmp_path, build_elf(entry=0x8000).data), "firecracker")

    assert not verdict.usable
    assert "below 1 MiB" in verdict.reason
    assert "InvalidEntryAddress" in verdict.reason


def test_firecracker_refuses_a_segment_below_1_mib(tmp_path: Path) -> None:
    low = Phdr(1, 0x40, 0x9000, 0x9000, 0x10, 0x10)
    built = build_elf(extra_phdrs=[low])
    verdict = check_kernel(inspect_bytes(tmp_path, built.data), "firecracker")

    assert not verdict.usable
    assert "InvalidProgramHeaderAddress" in verdict.reason


def test_firecracker_refuses_an_entry_outside_the_loaded_segments(tmp_path: Path) -> None:
    verdict = check_kernel(inspect_bytes(tmp_path, build_elf(entry=0x7000000).data), "firecracker")

    assert not verdict.usable
    assert "outside every loadable segment" in verdict.reason


# --- hostile headers ---------------------------------------------------------------------------

Mutation = Callable[[BuiltElf], bytes]


def _note_header(built: BuiltElf, namesz: int, descsz: int) -> bytes:
    return patch(built.data, built.note_offset, "<II", namesz, descsz)


def _phdr_field(built: BuiltElf, index: int, field_offset: int, value: int) -> bytes:
    return patch(built.data, built.phdr_offset(index) + field_offset, "<Q", value)


# ELF64 program header field offsets: p_offset 8, p_vaddr 16, p_paddr 24, p_filesz 32, p_memsz 40
MUTATIONS: list[tuple[str, Mutation, str]] = [
    ("namesz overflows", lambda b: _note_header(b, 0xFFFFFFFF, 4), "overrun the segment"),
    ("descsz overflows", lambda b: _note_header(b, 4, 0xFFFFFFF0), "overrun the segment"),
    ("note one byte too long", lambda b: _note_header(b, 4, b.note_size), "overrun the segment"),
    (
        "note segment beyond the file",
        lambda b: _phdr_field(b, 1, 8, len(b.data) + 4096),
        "past the end of the file",
    ),
    ("note segment size 2**63", lambda b: _phdr_field(b, 1, 32, 1 << 63), "past the end"),
    ("note segment size 2**64-1", lambda b: _phdr_field(b, 1, 32, (1 << 64) - 1), "past the end"),
    ("load segment beyond the file", lambda b: _phdr_field(b, 0, 32, 1 << 40), "past the end"),
    ("load offset wraps", lambda b: _phdr_field(b, 0, 8, (1 << 64) - 8), "past the end"),
    ("load memsz < filesz", lambda b: _phdr_field(b, 0, 40, 1), "memory size smaller"),
    ("load wraps the address space", lambda b: _phdr_field(b, 0, 24, (1 << 64) - 16), "wraps"),
    ("e_phnum 0xffff", lambda b: patch(b.data, 56, "<H", 0xFFFF), "extended program header"),
    ("e_phnum 200", lambda b: patch(b.data, 56, "<H", 200), "claims 200 program headers"),
    ("e_phentsize 40", lambda b: patch(b.data, 54, "<H", 40), "entries are 40 bytes"),
    ("e_phoff beyond the file", lambda b: patch(b.data, 32, "<Q", 1 << 62), "program header table"),
    ("e_phoff inside the header", lambda b: patch(b.data, 32, "<Q", 16), "overlaps the ELF header"),
    ("e_shoff beyond the file", lambda b: patch(b.data, 40, "<Q", len(b.data)), "section header"),
    ("e_shentsize huge", lambda b: patch(b.data, 58, "<H", 0xFFFF), "section header entries"),
    ("ELF class 3", lambda b: patch(b.data, 4, "<B", 3), "unknown ELF class"),
    ("ELF data 0", lambda b: patch(b.data, 5, "<B", 0), "unknown ELF data encoding"),
    ("EI_VERSION 2", lambda b: patch(b.data, 6, "<B", 2), "unknown ELF version"),
    ("e_version 0", lambda b: patch(b.data, 20, "<I", 0), "ELF header version"),
]


@pytest.mark.parametrize(
    ("mutation", "expected"), [(m[1], m[2]) for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_hostile_headers_are_rejected_with_a_clear_reason(
    tmp_path: Path, mutation: Mutation, expected: str
) -> None:
    built = build_elf()
    path = write(tmp_path, "vmlinux-evil", mutation(built))

    with pytest.raises(KernelInspectionError) as raised:
        inspect_kernel(path)
    assert isinstance(raised.value, PermanentError)
    assert expected in raised.value.reason
    assert str(path) in raised.value.reason
    for hypervisor in ("kvm", "firecracker"):
        verdict = verify_kernel(path, hypervisor)
        assert not verdict.usable
        assert verdict.reason == raised.value.reason


def test_stray_bytes_at_the_end_of_a_note_segment_are_rejected(tmp_path: Path) -> None:
    notes = pvh_note() + b"\x01\x02\x03\x04"
    with pytest.raises(KernelInspectionError, match="stray bytes"):
        inspect_bytes(tmp_path, build_elf(notes=notes).data)
    # zero padding is fine
    padded = inspect_bytes(tmp_path, build_elf(notes=pvh_note() + bytes(4)).data, "ok")
    assert padded.pvh is not None


def test_too_many_notes_are_rejected(tmp_path: Path) -> None:
    notes = note(b"", 1, b"") * 8193 + pvh_note()
    with pytest.raises(KernelInspectionError, match="more than 8192 ELF notes"):
        inspect_bytes(tmp_path, build_elf(notes=notes).data)


def test_oversized_note_segment_is_rejected_without_reading_it(tmp_path: Path) -> None:
    notes = note(b"Xen", 1, bytes((1 << 20) + 16))
    with pytest.raises(KernelInspectionError, match="limit"):
        inspect_bytes(tmp_path, build_elf(notes=notes).data)


def test_note_segment_with_lying_sizes_inside_a_second_segment(tmp_path: Path) -> None:
    built = build_elf()
    # A second PT_NOTE pointing into the first one's middle: its "note" header is garbage.
    second = Phdr(PT_NOTE, built.note_offset + 2, 0, 0, 20, 20)
    evil = build_elf(extra_phdrs=[second])
    with pytest.raises(KernelInspectionError, match="overrun"):
        inspect_bytes(tmp_path, evil.data)


def test_every_truncation_of_a_kernel_is_rejected(tmp_path: Path) -> None:
    """Cut a valid PVH vmlinux at every byte offset: each prefix is rejected, none crashes."""
    good = build_elf().data
    assert verify_kernel(write(tmp_path, "full", good), "kvm").usable
    path = tmp_path / "vmlinux-cut"
    for length in range(len(good)):
        path.write_bytes(good[:length])
        for hypervisor in ("kvm", "firecracker"):
            verdict = verify_kernel(path, hypervisor)
            assert not verdict.usable, length
            assert verdict.reason, length
        if length >= 4:  # the ELF magic is there: inspection itself must refuse
            with pytest.raises(KernelInspectionError):
                inspect_kernel(path)


# --- fuzzing -----------------------------------------------------------------------------------

_SEED_FILES = [
    build_elf().data,
    build_elf(elf_class=32, machine=3, notes=pvh_note(size=4)).data,
    build_elf(notes=note(b"GNU", 5, bytes(16), alignment=8) + pvh_note(), note_align=8).data,
]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.sampled_from(range(len(_SEED_FILES))),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1023), st.integers(0, 255)), max_size=12
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=1023)),
)
def test_mutated_kernels_only_ever_raise_kernel_inspection_errors(
    seed: int, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_SEED_FILES[seed])
    for position, value in edits:
        if position < len(data):
            data[position] = value
    if cut is not None:
        del data[cut:]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "vmlinux-fuzz"
        path.write_bytes(bytes(data))
        try:
            report = inspect_kernel(path)
        except KernelInspectionError as error:
            assert error.reason.endswith(".")
            return
        for hypervisor in ("kvm", "firecracker"):
            for arch in ("x86_64", "aarch64"):
                verdict = check_kernel(report, hypervisor, arch=arch)
                assert verdict.reason
        assert report.findings()


def test_banner_is_found_across_scan_chunk_boundaries(tmp_path: Path) -> None:
    # Put the banner astride the 1 MiB scan chunk boundary.
    body = b"\0" * ((1 << 20) - 300) + BANNER + b"\0" * 64
    report = inspect_bytes(tmp_path, build_elf(body=body).data)
    assert report.version == RELEASE


def test_reading_a_kernel_reads_headers_by_offset(tmp_path: Path) -> None:
    """A kernel with a large body inspects in bounded memory: the body is streamed, not loaded."""
    import tracemalloc

    body = BANNER + bytes(64 << 20)
    path = write(tmp_path, "vmlinux-big", build_elf(body=body).data)
    tracemalloc.start()
    try:
        report = inspect_kernel(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.pvh is not None
    assert peak < 8 << 20, peak


def test_pvh_struct_layout_matches_the_linux_note() -> None:
    """The 8-byte descriptor as Linux emits it: namesz 4, descsz 8, type 0x12, "Xen\\0", u64."""
    raw = pvh_note(0x1000850)
    assert struct.unpack_from("<III", raw) == (4, 8, 0x12)
    assert raw[12:16] == b"Xen\0"
    assert struct.unpack_from("<Q", raw, 16) == (0x1000850,)
