"""Real Debian kernels (bookworm linux-image-cloud-amd64 and linux-image-amd64), fetched with apt.

Skipped where apt or the Debian mirror is unavailable, a failure when ``CI=true`` (``ci.py``).
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import pytest

from hookd import cli
from hookd.kernels import (
    KernelInspectionError,
    check_kernel,
    extract_vmlinux,
    inspect_kernel,
)
from hookd.testing.debian_kernel import DebianKernel, fetch_debian_kernel

from .builders import ikconfig_blob

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("apt")]

EXTRACTION_HINT = ("hookd kernel extract", "scripts/extract-vmlinux", "make vmlinux")


def pvh_note_type_offset(vmlinux: Path) -> int:
    """File offset of the n_type field of the XEN_ELFNOTE_PHYS32_ENTRY note (independent parser:
    walks the program headers and notes with plain struct, not hookd.kernels)."""
    with vmlinux.open("rb") as handle:
        header = handle.read(64)
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
        for index in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", table, index * phentsize
            )
            if p_type != 4:
                continue
            handle.seek(p_offset)
            notes = handle.read(p_filesz)
            position = 0
            while position + 12 <= len(notes):
                namesz, descsz, n_type = struct.unpack_from("<III", notes, position)
                if n_type == 18:
                    return int(p_offset) + position + 8
                position += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    raise AssertionError(f"{vmlinux} has no type-18 note")


def test_fetch_resolves_the_meta_package(debian_cloud_kernel: DebianKernel) -> None:
    kernel = debian_cloud_kernel
    assert kernel.package == f"linux-image-{kernel.version}"
    assert kernel.version.endswith("-cloud-amd64")
    assert kernel.package_file.name.startswith(f"{kernel.package}_{kernel.package_version}_")
    assert kernel.vmlinuz.name == f"vmlinuz-{kernel.version}"
    assert kernel.config.name == f"config-{kernel.version}"
    assert kernel.modules_dir.name == kernel.version
    assert any(kernel.modules_dir.rglob("virtio_blk.ko*"))


def test_fetch_reuses_the_cache(debian_cloud_kernel: DebianKernel) -> None:
    before = debian_cloud_kernel.package_file.stat().st_mtime_ns
    started = time.monotonic()
    again = fetch_debian_kernel(package="linux-image-cloud-amd64")
    assert again == debian_cloud_kernel
    assert again.package_file.stat().st_mtime_ns == before
    assert time.monotonic() - started < 30


def test_packaged_vmlinuz_is_refused_with_the_extraction_hint(
    debian_cloud_kernel: DebianKernel,
) -> None:
    report = inspect_kernel(debian_cloud_kernel.vmlinuz)

    assert report.format == "bzimage"
    assert report.compression == "lz4"
    assert report.version == debian_cloud_kernel.version
    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        for hint in EXTRACTION_HINT:
            assert hint in verdict.reason


def test_extracted_vmlinux_is_accepted_for_kvm_with_its_pvh_entry(
    debian_cloud_kernel: DebianKernel,
) -> None:
    report = inspect_kernel(debian_cloud_kernel.vmlinux)

    assert (report.format, report.elf_class, report.elf_machine_name) == ("elf", 64, "x86-64")
    assert report.version == debian_cloud_kernel.version
    assert report.pvh is not None
    assert report.pvh.owner == "Xen"
    assert report.pvh.descriptor_size == 8
    assert any(segment.contains_paddr(report.pvh.address) for segment in report.load_segments)
    verdict = check_kernel(report, "kvm")
    assert verdict.usable, verdict.reason
    assert f"PVH entry at {report.pvh.address:#x}" in verdict.reason


def test_extracted_vmlinux_is_accepted_for_firecracker(debian_cloud_kernel: DebianKernel) -> None:
    verdict = check_kernel(inspect_kernel(debian_cloud_kernel.vmlinux), "firecracker")
    assert verdict.usable, verdict.reason
    assert "uncompressed x86-64 ELF vmlinux" in verdict.reason


def test_vmlinux_with_the_pvh_note_patched_out_is_refused_for_kvm(
    debian_cloud_kernel: DebianKernel, tmp_path: Path
) -> None:
    copy = tmp_path / "vmlinux-nopvh"
    shutil.copyfile(debian_cloud_kernel.vmlinux, copy)
    offset = pvh_note_type_offset(copy)
    with copy.open("r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack("<I", 0x7FFF))

    report = inspect_kernel(copy, config_path=debian_cloud_kernel.config)

    assert report.pvh is None
    kvm = check_kernel(report, "kvm")
    assert not kvm.usable
    assert "no PVH ELF note" in kvm.reason
    assert "its config says CONFIG_PVH=y" in kvm.reason
    assert check_kernel(report, "firecracker").usable


def test_config_findings_and_warnings(debian_cloud_kernel: DebianKernel) -> None:
    report = inspect_kernel(debian_cloud_kernel.vmlinux)  # config-<version> sits beside it

    assert report.config is not None
    assert report.config.origin == "beside"
    assert report.config.source == str(debian_cloud_kernel.config)
    assert report.config.arch == "x86_64"
    found = dict(report.config.options)
    for module in (
        "VIRTIO_PCI",
        "VIRTIO_MMIO",
        "VIRTIO_BLK",
        "ISO9660_FS",
        "BLK_DEV_SR",
        "ATA_PIIX",
    ):
        assert found[module] == "m", module
    assert found["PVH"] == "y"
    assert found["EXT4_FS"] == "y"
    assert found["SERIAL_8250_CONSOLE"] == "y"

    kvm = check_kernel(report, "kvm")
    assert kvm.usable
    assert any(
        "CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_BLK are built as modules" in w
        and "initrds: {kvm: ...}" in w
        for w in kvm.warnings
    )
    assert any("context CD" in w and "initrds: {kvm: ...}" in w for w in kvm.warnings)

    firecracker = check_kernel(report, "firecracker")
    assert firecracker.usable
    assert any(
        "CONFIG_VIRTIO_MMIO, CONFIG_VIRTIO_BLK" in w
        and "OpenNebula ignores OS/INITRD for Firecracker (OpenNebula/one#5382)" in w
        for w in firecracker.warnings
    )
    assert not check_kernel(report, "firecracker", strict=True).usable


def test_embedded_ikconfig_is_detected(debian_cloud_kernel: DebianKernel, tmp_path: Path) -> None:
    config_text = debian_cloud_kernel.config.read_bytes()
    assert b"# CONFIG_IKCONFIG is not set" in config_text  # Debian has none: add one
    plain = tmp_path / "vmlinux"
    shutil.copyfile(debian_cloud_kernel.vmlinux, plain)
    assert inspect_kernel(plain).config is None

    with plain.open("ab") as handle:  # after the ELF's own data, like the appended relocs
        handle.write(b"\0" * 4096 + ikconfig_blob(config_text) + b"\0" * 64)
    report = inspect_kernel(plain)

    assert report.config is not None
    assert report.config.origin == "ikconfig"
    beside = inspect_kernel(debian_cloud_kernel.vmlinux).config
    assert beside is not None
    assert report.config.options == beside.options
    assert check_kernel(report, "kvm").usable


def test_scan_extraction_matches_header_extraction(
    debian_cloud_kernel: DebianKernel, tmp_path: Path
) -> None:
    data = bytearray(debian_cloud_kernel.vmlinuz.read_bytes())
    struct.pack_into("<II", data, 0x248, 0, 0)  # no payload_offset/payload_length: scan
    headerless = tmp_path / "vmlinuz-headerless"
    headerless.write_bytes(bytes(data))
    out = tmp_path / "vmlinux"

    extract_vmlinux(headerless, out)

    assert out.stat().st_size == debian_cloud_kernel.vmlinux.stat().st_size
    assert out.read_bytes() == debian_cloud_kernel.vmlinux.read_bytes()


def test_truncated_vmlinux_is_refused(debian_cloud_kernel: DebianKernel, tmp_path: Path) -> None:
    size = debian_cloud_kernel.vmlinux.stat().st_size
    with debian_cloud_kernel.vmlinux.open("rb") as source:
        for cut in (4096, size // 2, size - 1_000_000):
            source.seek(0)
            part = tmp_path / f"vmlinux-{cut}"
            part.write_bytes(source.read(cut))
            with pytest.raises(KernelInspectionError, match="truncated"):
                inspect_kernel(part)


def test_cli_on_the_real_kernel(
    debian_cloud_kernel: DebianKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            ["kernel", "check", str(debian_cloud_kernel.vmlinuz), "--hypervisor", "kvm"]
        )
        == 1
    )
    assert "hookd kernel extract" in capsys.readouterr().out.splitlines()[-1]
    assert (
        cli.main(
            ["kernel", "check", str(debian_cloud_kernel.vmlinux), "--hypervisor", "kvm"]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "OK: usable for kvm"
    assert f"version: {debian_cloud_kernel.version}" in lines


def test_xz_compressed_amd64_kernel(debian_amd64_kernel: DebianKernel) -> None:
    vmlinuz = inspect_kernel(debian_amd64_kernel.vmlinuz)
    assert (vmlinuz.format, vmlinuz.compression) == ("bzimage", "xz")

    report = inspect_kernel(debian_amd64_kernel.vmlinux)
    assert report.pvh is not None and report.pvh.owner == "Xen"
    kvm = check_kernel(report, "kvm")
    assert kvm.usable, kvm.reason
    assert report.config is not None
    assert report.config.state("EXT4_FS") == "m"
    assert any("CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_BLK, CONFIG_EXT4_FS" in w for w in kvm.warnings)
    assert check_kernel(report, "firecracker").usable
