"""Non-ELF files (bzImage, arm64 Image, PE, garbage, empty, huge, special files) and the kernel
config findings with the warnings check_kernel derives from them."""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

import pytest

from hookd.kernels import (
    CHECKED_OPTIONS,
    KernelInspectionError,
    KernelReport,
    check_kernel,
    inspect_kernel,
    verify_kernel,
)

from .builders import (
    DEBIAN_CLOUD,
    RELEASE,
    build_arm64_image,
    build_bzimage,
    build_elf,
    build_pe,
    compress,
    config_text,
    ikconfig_blob,
    kernel_payload,
    linux_notes,
    write,
)

# --- bzImage -----------------------------------------------------------------------------------


def test_bzimage_is_identified_and_refused_with_the_extraction_hint(tmp_path: Path) -> None:
    payload = kernel_payload(build_elf().data, "xz")
    path = write(tmp_path, "vmlinuz-" + RELEASE, build_bzimage(payload))
    report = inspect_kernel(path)

    assert report.format == "bzimage"
    assert report.boot_protocol == "2.15"
    assert report.compression == "xz"
    assert report.version == RELEASE
    assert report.payload_offset == 5 * 512
    assert report.payload_length == len(payload)
    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        assert "compressed bzImage" in verdict.reason
        assert f"hookd kernel extract {path} vmlinux" in verdict.reason
        assert "scripts/extract-vmlinux" in verdict.reason
        assert "make vmlinux" in verdict.reason
        assert verdict.reason.count(". ") == 0  # one sentence


def test_bzimage_without_efi_stub_and_old_protocol_is_still_a_bzimage(tmp_path: Path) -> None:
    payload = kernel_payload(build_elf().data, "gzip")
    data = build_bzimage(payload, protocol=0x0206, payload_fields=False, efi_stub=False)
    report = inspect_kernel(write(tmp_path, "bzImage", data))

    assert (report.format, report.boot_protocol) == ("bzimage", "2.06")
    assert report.compression is None  # no payload fields before 2.08
    assert not check_kernel(report, "kvm").usable


def test_bzimage_is_refused_on_aarch64(tmp_path: Path) -> None:
    data = build_bzimage(kernel_payload(build_elf().data, "gzip"))
    verdict = verify_kernel(write(tmp_path, "bzImage", data), "kvm", arch="aarch64")

    assert not verdict.usable
    assert "x86 bzImage" in verdict.reason


def test_truncated_bzimage_is_rejected(tmp_path: Path) -> None:
    data = build_bzimage(kernel_payload(build_elf().data, "xz"))
    for cut in (0x210, 0x300, 5 * 512 + 10, len(data) - 100, len(data) - 16):
        with pytest.raises(KernelInspectionError, match="truncated"):
            inspect_kernel(write(tmp_path, "bzImage", data[:cut]))


def test_bzimage_with_a_lying_payload_length_is_rejected(tmp_path: Path) -> None:
    data = bytearray(build_bzimage(kernel_payload(build_elf().data, "xz")))
    struct.pack_into("<I", data, 0x24C, 0xFFFFFFF0)
    with pytest.raises(KernelInspectionError, match="compressed payload"):
        inspect_kernel(write(tmp_path, "bzImage", bytes(data)))


# --- arm64 Image, PE ---------------------------------------------------------------------------


def test_arm64_image_is_accepted_on_aarch64_only(tmp_path: Path) -> None:
    report = inspect_kernel(write(tmp_path, "Image", build_arm64_image()))

    assert report.format == "arm64-image"
    assert report.arm64_big_endian is False
    assert report.version == RELEASE
    for hypervisor in ("kvm", "firecracker"):
        assert check_kernel(report, hypervisor, arch="aarch64").usable
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        assert "arm64 kernel Image, not an x86_64 kernel" in verdict.reason


def test_big_endian_arm64_image_is_refused(tmp_path: Path) -> None:
    report = inspect_kernel(write(tmp_path, "Image", build_arm64_image(big_endian=True)))

    verdict = check_kernel(report, "firecracker", arch="aarch64")
    assert not verdict.usable
    assert "big-endian" in verdict.reason


def test_pe_without_linux_header_is_refused(tmp_path: Path) -> None:
    report = inspect_kernel(write(tmp_path, "app.efi", build_pe()))

    assert (report.format, report.pe_machine) == ("pe", 0x8664)
    verdict = check_kernel(report, "kvm")
    assert not verdict.usable
    assert "PE/EFI executable (x86-64)" in verdict.reason


def test_efi_zboot_image_is_refused_with_its_compression(tmp_path: Path) -> None:
    report = inspect_kernel(write(tmp_path, "vmlinuz.efi", build_pe(machine=0xAA64, zboot="zstd")))

    assert (report.format, report.compression) == ("pe", "zstd")
    verdict = check_kernel(report, "firecracker", arch="aarch64")
    assert not verdict.usable
    assert "EFI zboot" in verdict.reason


def test_truncated_pe_is_rejected(tmp_path: Path) -> None:
    data = bytearray(build_pe())
    struct.pack_into("<H", data, 0x86, 40)  # 40 sections: the table runs past the file
    with pytest.raises(KernelInspectionError, match="PE section table"):
        inspect_kernel(write(tmp_path, "app.efi", bytes(data)))


# --- garbage, compressed data, empty, huge, special files ---------------------------------------


@pytest.mark.parametrize("size", [1, 3, 63, 4096, 100_000])
def test_garbage_is_not_a_kernel(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size).replace(b"\x7fELF", b"xELF")
    data = b"\0" + data[1:]  # no accidental compression magic at offset 0
    report = inspect_kernel(write(tmp_path, "garbage", data))

    assert report.format == "unknown"
    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(report, hypervisor)
        assert not verdict.usable
        assert "not a kernel image" in verdict.reason


@pytest.mark.parametrize("how", ["gzip", "xz", "bzip2", "lzma"])
def test_compressed_vmlinux_is_recognised_as_compressed_data(tmp_path: Path, how: str) -> None:
    report = inspect_kernel(write(tmp_path, "vmlinux.z", compress(build_elf().data, how)))

    assert (report.format, report.compression) == ("unknown", how)
    verdict = check_kernel(report, "kvm")
    assert not verdict.usable
    assert f"{how}-compressed data" in verdict.reason


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "vmlinux", b"")
    with pytest.raises(KernelInspectionError, match="is empty"):
        inspect_kernel(path)
    verdict = verify_kernel(path, "kvm")
    assert not verdict.usable
    assert verdict.reason == f"{path} is empty, so it is not a kernel image."


def test_sparse_8_gib_file_is_rejected_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux-huge"
    with path.open("wb") as handle:
        handle.write(build_elf().data)
        handle.truncate(8 << 30)
    if os.stat(path).st_blocks * 512 >= 1 << 30:
        pytest.skip("this filesystem does not support sparse files")
    started = time.monotonic()
    with pytest.raises(KernelInspectionError, match="more than the 1073741824-byte limit"):
        inspect_kernel(path)
    assert time.monotonic() - started < 1.0
    verdict = verify_kernel(path, "firecracker")
    assert not verdict.usable
    assert "8589934592 bytes" in verdict.reason


def test_size_limit_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "vmlinux", build_elf().data)
    with pytest.raises(KernelInspectionError, match="limit"):
        inspect_kernel(path, max_size=100)
    assert inspect_kernel(path, max_size=1 << 20).format == "elf"


def test_special_files_are_rejected_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KernelInspectionError, match="not a regular file"):
        inspect_kernel(fifo)  # would block forever without O_NONBLOCK
    with pytest.raises(KernelInspectionError, match="not a regular file"):
        inspect_kernel(tmp_path)
    with pytest.raises(KernelInspectionError, match="not a regular file"):
        inspect_kernel("/dev/zero")
    with pytest.raises(KernelInspectionError, match="does not exist"):
        inspect_kernel(tmp_path / "missing")


def test_symlinked_kernel_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path, "vmlinux-" + RELEASE, build_elf().data)
    link = tmp_path / "vmlinux"
    link.symlink_to(target.name)
    assert verify_kernel(link, "kvm").usable


# --- kernel config -----------------------------------------------------------------------------


def states(report: KernelReport) -> dict[str, str]:
    assert report.config is not None
    return dict(report.config.options)


def test_explicit_config_is_parsed(tmp_path: Path) -> None:
    kernel = write(tmp_path, "vmlinux", build_elf().data)
    config = write(tmp_path, "my.config", config_text({**DEBIAN_CLOUD, "ATA_PIIX": "missing"}))
    report = inspect_kernel(kernel, config_path=config)

    assert report.config is not None
    assert (report.config.origin, report.config.source) == ("explicit", str(config))
    assert report.config.arch == "x86_64"
    assert report.config.description == "Linux/x86 6.1.0 Kernel Configuration"
    found = states(report)
    assert list(found) == list(CHECKED_OPTIONS)
    assert found["VIRTIO_BLK"] == "m"
    assert found["EXT4_FS"] == "y"
    assert found["DEVTMPFS_MOUNT"] == "absent"
    assert found["ATA_PIIX"] == "absent"  # no line at all
    assert report.config.state("NOT_TRACKED") == "absent"


def test_config_beside_the_kernel_is_found_by_version_suffix(tmp_path: Path) -> None:
    write(tmp_path, "config-" + RELEASE, config_text(DEBIAN_CLOUD))
    write(tmp_path, "config-6.1.0-other-amd64", config_text())  # another kernel's: not used
    kernel = write(tmp_path, "vmlinuz-" + RELEASE, build_elf().data)
    report = inspect_kernel(kernel)

    assert report.config is not None
    assert report.config.origin == "beside"
    assert report.config.source == str(tmp_path / ("config-" + RELEASE))
    assert states(report)["VIRTIO_PCI"] == "m"
    # the same file under a name without the suffix finds nothing
    assert inspect_kernel(write(tmp_path, "kernel.bin", build_elf().data)).config is None


def test_config_beside_a_symlinked_kernel_and_in_a_build_tree(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    write(boot, "config-" + RELEASE, config_text(DEBIAN_CLOUD))
    write(boot, "vmlinux-" + RELEASE, build_elf().data)
    (tmp_path / "vmlinux-latest").symlink_to(f"boot/vmlinux-{RELEASE}")
    report = inspect_kernel(tmp_path / "vmlinux-latest")
    assert report.config is not None and report.config.origin == "beside"

    tree = tmp_path / "linux"
    tree.mkdir()
    write(tree, ".config", config_text())
    report = inspect_kernel(write(tree, "vmlinux", build_elf().data))
    assert report.config is not None
    assert report.config.source == str(tree / ".config")


def test_bad_explicit_config_is_an_error_and_a_bad_sibling_a_note(tmp_path: Path) -> None:
    kernel = write(tmp_path, "vmlinuz-" + RELEASE, build_elf().data)
    with pytest.raises(KernelInspectionError, match="does not exist"):
        inspect_kernel(kernel, config_path=tmp_path / "nope")
    not_config = write(tmp_path, "notes.txt", b"hello\n")
    with pytest.raises(KernelInspectionError, match="no CONFIG_ lines"):
        inspect_kernel(kernel, config_path=not_config)

    write(tmp_path, "config-" + RELEASE, b"")
    report = inspect_kernel(kernel)
    assert report.config is None
    assert any("ignored the config beside the kernel" in note for note in report.notes)


def test_embedded_ikconfig_is_found_and_parsed(tmp_path: Path) -> None:
    text = config_text(DEBIAN_CLOUD)
    body = b"\xcc" * 5000 + ikconfig_blob(text) + b"\xcc" * 100
    report = inspect_kernel(write(tmp_path, "vmlinux", build_elf(body=body).data))

    assert report.config is not None
    assert report.config.origin == "ikconfig"
    assert "embedded IKCONFIG" in report.config.source
    assert states(report)["BLK_DEV_SR"] == "m"


def test_ikconfig_across_a_scan_chunk_boundary(tmp_path: Path) -> None:
    body = b"\0" * ((1 << 20) - 500) + ikconfig_blob(config_text()) + b"\0" * 16
    report = inspect_kernel(write(tmp_path, "vmlinux", build_elf(body=body).data))
    assert report.config is not None and report.config.origin == "ikconfig"


def test_explicit_and_sibling_configs_take_precedence_over_ikconfig(tmp_path: Path) -> None:
    body = ikconfig_blob(config_text({"VIRTIO_BLK": "absent"}))
    kernel = write(tmp_path, "vmlinuz-" + RELEASE, build_elf(body=body).data)
    write(tmp_path, "config-" + RELEASE, config_text({"VIRTIO_BLK": "m"}))
    explicit = write(tmp_path, "explicit.config", config_text())

    assert states(inspect_kernel(kernel, config_path=explicit))["VIRTIO_BLK"] == "y"
    assert states(inspect_kernel(kernel))["VIRTIO_BLK"] == "m"
    (tmp_path / ("config-" + RELEASE)).unlink()
    assert states(inspect_kernel(kernel))["VIRTIO_BLK"] == "absent"


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (ikconfig_blob(config_text(), end_marker=False) + b"junkjunk", "IKCFG_ED"),
        (b"IKCFG_ST\x1f\x8b\x08" + b"\xff" * 64 + b"IKCFG_ED", "not valid gzip"),
        (ikconfig_blob(b"no config lines here\n"), "no CONFIG_ lines"),
    ],
)
def test_broken_ikconfig_becomes_a_note(tmp_path: Path, blob: bytes, expected: str) -> None:
    report = inspect_kernel(write(tmp_path, "vmlinux", build_elf(body=blob + b"\0" * 64).data))

    assert report.config is None
    assert any(expected in note for note in report.notes), report.notes
    assert check_kernel(report, "kvm").usable  # the kernel itself is fine


def test_ikconfig_bomb_is_capped(tmp_path: Path) -> None:
    import gzip

    bomb = b"IKCFG_ST" + gzip.compress(b"CONFIG_X=y\n" + bytes(20 << 20), mtime=0) + b"IKCFG_ED"
    report = inspect_kernel(write(tmp_path, "vmlinux", build_elf(body=bomb).data))
    assert report.config is None
    assert any("more than" in note for note in report.notes)


# --- warnings from config findings --------------------------------------------------------------


def checked(
    tmp_path: Path, config: dict[str, str] | None, *, notes: bytes | None = None
) -> KernelReport:
    kernel = write(tmp_path, "vmlinux", build_elf(notes=notes).data)
    if config is None:
        return inspect_kernel(kernel)
    return inspect_kernel(kernel, config_path=write(tmp_path, "c", config_text(config)))


def test_kvm_with_module_drivers_warns_that_an_initrd_is_needed(tmp_path: Path) -> None:
    verdict = check_kernel(checked(tmp_path, dict(DEBIAN_CLOUD)), "kvm")

    assert verdict.usable
    root = [w for w in verdict.warnings if "root disk" in w]
    assert len(root) == 1
    assert "CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_BLK are built as modules" in root[0]
    assert "initrds: {kvm: ...}" in root[0]
    cd = [w for w in verdict.warnings if "context CD" in w and "modules" in w]
    assert len(cd) == 1
    assert "CONFIG_ATA_PIIX, CONFIG_BLK_DEV_SR, CONFIG_ISO9660_FS" in cd[0]
    assert "initrds: {kvm: ...}" in cd[0]
    # Debian's cloud kernel has no AHCI: on 7.x (q35, a SATA CD) it cannot read the CD.
    assert any(w.startswith("CONFIG_SATA_AHCI is not set: on OpenNebula 7.x")
               for w in verdict.warnings)
    assert any("CONFIG_DEVTMPFS_MOUNT is not set" in w for w in verdict.warnings)
    assert not any("5382" in w for w in verdict.warnings)


def test_firecracker_with_module_drivers_says_opennebula_ignores_the_initrd(tmp_path: Path) -> None:
    verdict = check_kernel(checked(tmp_path, dict(DEBIAN_CLOUD)), "firecracker")

    assert verdict.usable  # a warning, unless strict
    root = [w for w in verdict.warnings if "root disk" in w]
    assert len(root) == 1
    assert "CONFIG_VIRTIO_MMIO, CONFIG_VIRTIO_BLK are built as modules" in root[0]
    assert "OpenNebula ignores OS/INITRD for Firecracker (OpenNebula/one#5382)" in root[0]
    assert not any("context CD" in w for w in verdict.warnings)  # Firecracker gets an ext image
    assert not any("initrds:" in w for w in verdict.warnings)


def test_fully_built_in_kernel_has_no_driver_warnings(tmp_path: Path) -> None:
    for hypervisor in ("kvm", "firecracker"):
        verdict = check_kernel(checked(tmp_path, {}), hypervisor)
        assert verdict.usable
        assert verdict.warnings == ()


def test_missing_drivers_are_reported_as_not_set(tmp_path: Path) -> None:
    config = {"VIRTIO_BLK": "absent", "SERIAL_8250_CONSOLE": "absent", "DEVTMPFS": "absent",
              "VT_CONSOLE": "absent"}
    verdict = check_kernel(checked(tmp_path, config), "kvm")

    assert verdict.usable
    assert any("CONFIG_VIRTIO_BLK is not set" in w for w in verdict.warnings)
    # KVM VMs of OpenNebula have no serial port: their console is VNC's tty0.
    assert any("CONFIG_VT_CONSOLE is not built in" in w for w in verdict.warnings)
    assert not any("SERIAL_8250" in w for w in verdict.warnings)
    assert any("CONFIG_DEVTMPFS is not built in" in w for w in verdict.warnings)
    firecracker = check_kernel(checked(tmp_path, config), "firecracker")
    assert any("CONFIG_SERIAL_8250_CONSOLE is not built in" in w for w in firecracker.warnings)


def test_a_kernel_without_any_cd_controller_cannot_contextualize(tmp_path: Path) -> None:
    config = {"ATA_PIIX": "absent", "SATA_AHCI": "absent"}
    strict = check_kernel(checked(tmp_path, config), "kvm", strict=True)
    assert not strict.usable
    assert "context CD" in strict.reason


def test_strict_mode_turns_unbootable_findings_into_failures(tmp_path: Path) -> None:
    debian = checked(tmp_path, dict(DEBIAN_CLOUD))
    strict_fc = check_kernel(debian, "firecracker", strict=True)
    assert not strict_fc.usable
    assert "OpenNebula/one#5382" in strict_fc.reason
    # KVM can load modules from an initrd: still usable in strict mode
    assert check_kernel(debian, "kvm", strict=True).usable
    no_iso = checked(tmp_path, {"ISO9660_FS": "absent"})
    strict_kvm = check_kernel(no_iso, "kvm", strict=True)
    assert not strict_kvm.usable
    assert "CONFIG_ISO9660_FS is not set" in strict_kvm.reason


def test_no_config_is_a_warning(tmp_path: Path) -> None:
    verdict = check_kernel(checked(tmp_path, None), "firecracker")
    assert verdict.usable
    assert verdict.warnings == (
        "No kernel config was found (pass --config, put config-<release> beside the kernel, or "
        "build with CONFIG_IKCONFIG), so built-in drivers were not checked.",
    )


def test_config_that_does_not_match_the_kernel_is_flagged(tmp_path: Path) -> None:
    report = checked(tmp_path, {"PVH": "absent"})
    warnings = check_kernel(report, "kvm").warnings
    assert any(
        "says CONFIG_PVH is not set although the kernel has a PVH note" in w for w in warnings
    )

    kernel = write(tmp_path, "vmlinux", build_elf().data)
    arm = write(tmp_path, "arm.config", config_text(arch="ARM64"))
    warnings = check_kernel(inspect_kernel(kernel, config_path=arm), "kvm").warnings
    assert any("is for arm64, not x86_64" in w for w in warnings)


def test_missing_pvh_note_with_a_pvh_config_says_the_config_does_not_match(tmp_path: Path) -> None:
    report = checked(tmp_path, {}, notes=linux_notes())
    assert report.pvh is None
    verdict = check_kernel(report, "kvm")
    assert not verdict.usable
    assert "its config says CONFIG_PVH=y" in verdict.reason
    without_config = check_kernel(checked(tmp_path, None, notes=linux_notes()), "kvm")
    assert "its config says" not in without_config.reason


def test_check_kernel_rejects_unknown_hypervisor_and_arch(tmp_path: Path) -> None:
    report = checked(tmp_path, None)
    with pytest.raises(ValueError, match="hypervisor"):
        check_kernel(report, "xen")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="architecture"):
        check_kernel(report, "kvm", arch="riscv64")  # type: ignore[arg-type]


def test_findings_describe_the_kernel(tmp_path: Path) -> None:
    lines = checked(tmp_path, dict(DEBIAN_CLOUD)).findings()

    assert lines[1].startswith("format: elf (ELF64, little-endian, x86-64, EXEC, entry 0x1000000")
    assert f"version: {RELEASE}" in lines
    assert "pvh: entry 0x1000850 (note owner 'Xen', 8-byte descriptor)" in lines
    assert "CONFIG_VIRTIO_BLK: m (module)" in lines
    assert "CONFIG_EXT4_FS: y (built in)" in lines
    assert "CONFIG_DEVTMPFS_MOUNT: - (not set)" in lines
