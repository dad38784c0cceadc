"""``hookd kernel check`` and ``hookd kernel extract``: output, exit codes, wiring."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hookd import cli, kernel_cli

from .builders import (
    DEBIAN_CLOUD,
    RELEASE,
    build_bzimage,
    build_elf,
    config_text,
    kernel_payload,
    linux_notes,
    write,
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    status = cli.main(["kernel", *argv])
    return status, capsys.readouterr().out.splitlines()


def test_check_good_kernel_prints_findings_and_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = write(tmp_path, "vmlinux-" + RELEASE, build_elf().data)
    write(tmp_path, "config-" + RELEASE, config_text(DEBIAN_CLOUD))

    status, lines = run(capsys, "check", str(kernel), "--hypervisor", "kvm")

    assert status == 0
    assert lines[0] == f"file: {kernel} ({kernel.stat().st_size} bytes)"
    assert "pvh: entry 0x1000850 (note owner 'Xen', 8-byte descriptor)" in lines
    assert "CONFIG_VIRTIO_BLK: m (module)" in lines
    assert any(line.startswith("warning: CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_BLK") for line in lines)
    assert lines[-1] == "OK: usable for kvm"


def test_check_bad_kernel_fails_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = write(tmp_path, "vmlinux", build_elf(notes=linux_notes()).data)

    status, lines = run(capsys, "check", str(kernel), "--hypervisor", "kvm")

    assert status == 1
    assert lines[-1].startswith(f"FAIL: {kernel} has no PVH ELF note")
    assert "pvh: no XEN_ELFNOTE_PHYS32_ENTRY note" in lines
    # the same kernel is fine for Firecracker
    status, lines = run(capsys, "check", str(kernel), "--hypervisor", "firecracker")
    assert (status, lines[-1]) == (0, "OK: usable for firecracker")


def test_check_bzimage_points_at_extract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bzimage = write(tmp_path, "vmlinuz", build_bzimage(kernel_payload(build_elf().data, "xz")))

    status, lines = run(capsys, "check", str(bzimage), "--hypervisor", "firecracker")

    assert status == 1
    assert lines[1].startswith("format: bzimage (Linux boot protocol 2.15, xz payload")
    assert f"hookd kernel extract {bzimage} vmlinux" in lines[-1]


def test_check_unreadable_and_malformed_files_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = run(capsys, "check", str(tmp_path / "none"), "--hypervisor", "kvm")
    assert (status, lines) == (1, [f"FAIL: {tmp_path / 'none'} does not exist."])

    evil = bytearray(build_elf().data)
    evil[56:58] = b"\xff\x00"  # e_phnum = 255
    path = write(tmp_path, "evil", bytes(evil))
    status, lines = run(capsys, "check", str(path), "--hypervisor", "kvm")
    assert status == 1
    assert lines == [
        f"FAIL: {path} claims 255 program headers, more than the limit of 128 for a kernel image."
    ]


def test_check_explicit_config_arch_and_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = write(tmp_path, "vmlinux", build_elf().data)
    config = write(tmp_path, "cfg", config_text(DEBIAN_CLOUD))

    status, lines = run(
        capsys, "check", str(kernel), "--hypervisor", "firecracker", "--config", str(config)
    )
    assert status == 0
    assert f"config: {config} [explicit] (Linux/x86 6.1.0 Kernel Configuration)" in lines
    assert any("OpenNebula/one#5382" in line for line in lines)

    status, lines = run(
        capsys,
        "check",
        str(kernel),
        "--hypervisor",
        "firecracker",
        "--config",
        str(config),
        "--strict",
    )
    assert status == 1
    assert "OpenNebula/one#5382" in lines[-1]

    status, lines = run(capsys, "check", str(kernel), "--hypervisor", "kvm", "--arch", "aarch64")
    assert status == 1
    assert "not an aarch64 kernel" in lines[-1]


def test_check_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["kernel", "check", str(tmp_path)])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["kernel", "check", str(tmp_path), "--hypervisor", "xen"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["kernel"])
    assert exited.value.code == 2


def test_extract_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = build_elf().data
    bzimage = write(tmp_path, "vmlinuz-" + RELEASE, build_bzimage(kernel_payload(elf, "gzip")))
    out = tmp_path / ("vmlinux-" + RELEASE)

    status, lines = run(capsys, "extract", str(bzimage), str(out))

    assert status == 0
    assert lines[-1] == f"OK: wrote {out}"
    assert out.read_bytes() == elf
    status, lines = run(capsys, "check", str(out), "--hypervisor", "kvm")
    assert (status, lines[-1]) == (0, "OK: usable for kvm")


def test_extract_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = write(tmp_path, "vmlinux", build_elf().data)

    status, lines = run(capsys, "extract", str(kernel), str(tmp_path / "out"))

    assert status == 1
    assert lines == [
        f"FAIL: {kernel} is already an uncompressed ELF, so there is nothing to extract."
    ]
    assert not (tmp_path / "out").exists()


def test_add_parser_plugs_into_another_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="hookd")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("run")
    kernel_cli.add_parser(subparsers)
    kernel = write(tmp_path, "vmlinux", build_elf().data)

    args = parser.parse_args(["kernel", "check", str(kernel), "--hypervisor", "firecracker"])

    assert args.command == "kernel"
    assert args.kernel_command == "check"
    assert args.func(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "OK: usable for firecracker"


def test_importing_the_cli_does_not_import_the_inspection_code() -> None:
    code = "import sys, hookd.kernel_cli; print('hookd.kernels' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_module_runs_standalone(tmp_path: Path) -> None:
    kernel = write(tmp_path, "vmlinux", build_elf().data)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hookd.kernel_cli",
            "kernel",
            "check",
            str(kernel),
            "--hypervisor",
            "kvm",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "OK: usable for kvm"
