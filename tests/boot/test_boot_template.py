"""The harness's own logic, without QEMU: template → direct boot, context.sh, the context
ISO, and how guest reports become problems."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from hookd.testing.boot import (
    BootError,
    BootEvent,
    BootResult,
    DirectBoot,
    context_sh,
    domain_from_template,
    firecracker_cmdline,
    write_context_iso,
)
from tests.kernels.ci import unavailable


def template_xml(os_part: str, disks: str = '<DISK><IMAGE_ID>10</IMAGE_ID></DISK>',
                 context: str = "<CONTEXT><NETWORK>YES</NETWORK></CONTEXT>",
                 wrapper: bool = True) -> str:
    inner = f"<TEMPLATE><MEMORY>256</MEMORY><OS>{os_part}</OS>{disks}{context}</TEMPLATE>"
    if not wrapper:
        return inner
    return f"<VMTEMPLATE><ID>5</ID><NAME>nginx</NAME>{inner}</VMTEMPLATE>"


@pytest.fixture
def files(tmp_path: Path) -> dict[int, Path]:
    kernel = tmp_path / "vmlinux"
    initrd = tmp_path / "initrd"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    return {0: kernel, 1: initrd}


@pytest.fixture
def disks(tmp_path: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for image_id in (10, 11):
        path = tmp_path / f"disk{image_id}.raw"
        path.write_bytes(b"\0" * 512)
        out[image_id] = path
    return out


def direct(xml: str, files: dict[int, Path], disks: dict[int, Path]) -> DirectBoot:
    return domain_from_template(xml, files, disks, dev_prefixes={10: "vd", 11: "vd"})


@pytest.mark.parametrize(
    ("os_part", "cmdline"),
    [
        # LibVirtDriverKVM.cc: "root=/dev/" + ROOT + " " + KERNEL_CMD, nothing added.
        ("<ROOT>vda</ROOT><KERNEL_CMD>console=ttyS0 rw</KERNEL_CMD>",
         "root=/dev/vda console=ttyS0 rw"),
        ("<ROOT>vda</ROOT>", "root=/dev/vda "),
        ("<KERNEL_CMD>console=ttyS0</KERNEL_CMD>", "console=ttyS0"),
        ("", ""),
    ],
)
def test_cmdline_is_the_kvm_drivers(os_part: str, cmdline: str, files: dict[int, Path],
                                    disks: dict[int, Path]) -> None:
    xml = template_xml("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS>" + os_part)
    got = direct(xml, files, disks)
    assert got.cmdline == cmdline
    assert got.kernel == files[0] and got.initrd is None
    assert got.memory_mb == 256 and got.vcpus == 1 and got.name == "nginx"


def test_bare_template_kernel_initrd_and_targets(files: dict[int, Path],
                                                 disks: dict[int, Path]) -> None:
    xml = template_xml(
        '<KERNEL_DS>$FILE[IMAGE_ID="0"]</KERNEL_DS><INITRD_DS>$FILE[IMAGE_ID=1]</INITRD_DS>'
        "<ROOT>vda</ROOT>",
        disks="<DISK><IMAGE_ID>10</IMAGE_ID></DISK><DISK><IMAGE_ID>11</IMAGE_ID></DISK>",
        wrapper=False,
    )
    got = direct(xml, files, disks)
    assert got.initrd == files[1]
    assert [(d.disk_id, d.image_id, d.target) for d in got.disks] == [(0, 10, "vda"),
                                                                      (1, 11, "vdb")]
    # oned adds DISK_ID (= number of disks) and TARGET (first free hd*) to CONTEXT.
    assert got.context_map == {"NETWORK": "YES", "DISK_ID": "2", "TARGET": "hda"}


def test_explicit_target_and_os_boot(files: dict[int, Path], disks: dict[int, Path]) -> None:
    xml = template_xml(
        "<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS><BOOT>disk1,nic0</BOOT>",
        disks="<DISK><IMAGE_ID>10</IMAGE_ID></DISK>"
              "<DISK><IMAGE_ID>11</IMAGE_ID><TARGET>vda</TARGET></DISK>",
    )
    got = direct(xml, files, disks)
    assert [d.target for d in got.disks] == ["vdb", "vda"]
    assert got.root_disk == 1  # Firecracker's root drive: OS/BOOT's first disk


def test_firecracker_cmdline_appends_firecrackers_root(files: dict[int, Path],
                                                       disks: dict[int, Path]) -> None:
    xml = template_xml("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS><ROOT>sdz</ROOT>"
                       "<KERNEL_CMD>console=ttyS0 reboot=k</KERNEL_CMD>")
    got = direct(xml, files, disks)
    # OS/ROOT is not read by OpenNebula's Firecracker driver.
    assert firecracker_cmdline(got) == "console=ttyS0 reboot=k root=/dev/vda rw"
    empty = direct(template_xml("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS>"), files, disks)
    assert firecracker_cmdline(empty) == "root=/dev/vda rw"


@pytest.mark.parametrize(
    ("os_part", "disks_part", "message"),
    [
        ("<ROOT>vda</ROOT>", None, "sets no kernel"),
        ("<KERNEL_DS>$FILE[IMAGE_ID=7]</KERNEL_DS>", None,
         "OS/KERNEL_DS=$FILE[IMAGE_ID=7] does not resolve: no file for image 7"),
        ('<KERNEL_DS>$FILE[IMAGE="kernel"]</KERNEL_DS>', None, "is not of the form"),
        ("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS><INITRD_DS>$FILE[IMAGE_ID=9]</INITRD_DS>",
         None, "OS/INITRD_DS=$FILE[IMAGE_ID=9] does not resolve"),
        ("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS>", "<DISK><IMAGE_ID>12</IMAGE_ID></DISK>",
         "DISK 0 (IMAGE_ID 12) does not resolve"),
        ("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS>", "<DISK><IMAGE>nginx</IMAGE></DISK>",
         "an image referenced by name"),
        ("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS>",
         "<DISK><IMAGE_ID>10</IMAGE_ID><DEV_PREFIX>sd</DEV_PREFIX></DISK>",
         "would be sda: this harness attaches virtio-blk (vd*) disks only"),
    ],
)
def test_refusals_say_why(os_part: str, disks_part: str | None, message: str,
                          files: dict[int, Path], disks: dict[int, Path]) -> None:
    xml = template_xml(os_part) if disks_part is None else template_xml(os_part, disks_part)
    with pytest.raises(BootError) as caught:
        direct(xml, files, disks)
    assert message in str(caught.value)


def test_disk_without_a_dev_prefix_gets_oneds_default(files: dict[int, Path],
                                                    disks: dict[int, Path]) -> None:
    xml = template_xml("<KERNEL_DS>$FILE[IMAGE_ID=0]</KERNEL_DS>")
    with pytest.raises(BootError, match="would be sda"):
        domain_from_template(xml, files, disks)  # no dev_prefixes: DEFAULT_DEVICE_PREFIX sd


def test_no_template_element_is_refused(files: dict[int, Path], disks: dict[int, Path]) -> None:
    with pytest.raises(BootError, match="has no <TEMPLATE>"):
        domain_from_template("<VMTEMPLATE><ID>1</ID></VMTEMPLATE>", files, disks)


def test_context_sh_is_what_oned_writes() -> None:
    text = context_sh({"TARGET": "hda", "START_SCRIPT": "echo 'hi' \"$X\"\nexit 0",
                       "DISK_ID": "1"})
    assert text == (
        "# Context variables generated by OpenNebula\n"
        "DISK_ID='1'\n"
        "START_SCRIPT='echo '\\''hi'\\'' \"$X\"\nexit 0'\n"
        "TARGET='hda'\n"
    )
    # A POSIX shell reads every value back exactly.
    sh = shutil.which("sh")
    assert sh is not None
    script = text + 'printf "%s" "$START_SCRIPT"'
    done = subprocess.run([sh, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout == "echo 'hi' \"$X\"\nexit 0"


def test_context_iso_is_labelled_context_and_holds_context_sh(tmp_path: Path) -> None:
    if shutil.which("genisoimage") is None or shutil.which("isoinfo") is None:
        unavailable("genisoimage is not installed (Debian package genisoimage)")
    context = {"START_SCRIPT_BASE64": base64.b64encode(b"#!/bin/sh\ntrue\n").decode()}
    iso = write_context_iso(context, tmp_path / "context.iso")
    data = iso.read_bytes()
    assert data[0x8001:0x8006] == b"CD001"
    assert data[0x8028:0x8048].decode().rstrip() == "CONTEXT"
    done = subprocess.run(["isoinfo", "-i", str(iso), "-R", "-x", "/context.sh"],
                          capture_output=True, check=True)
    assert done.stdout.decode() == context_sh(context)


def result(*lines: str, exit_code: int | None = 0, timed_out: bool = False) -> BootResult:
    events: list[BootEvent] = []
    for index, line in enumerate(lines):
        for token in line.split():
            key, _, value = token.partition("=")
            events.append(BootEvent(key, value, float(index)))
    console = "\n".join(f"HOOKD-BOOT {line}" for line in lines)
    return BootResult(machine="pc", command=("qemu",), cmdline="", console=console,
                      events=tuple(events), qemu_stderr="", exit_code=exit_code,
                      duration=1.0, timeout=60, timed_out=timed_out)


def test_problems_from_guest_reports() -> None:
    clean = result("initrd=start", "init=start", "root-device=/dev/vda root-mode=rw",
                   "start-script=base64", "start-script-exit=0 start-script-ms=120",
                   "context=continued", "app-pid=7 app=running",
                   "app-wait=reported app-alive=yes", "poweroff=now")
    assert clean.problems() == []
    assert clean.start_script_seconds == 0.12 and clean.context_continued

    readonly = result("init=start", "root-device=/dev/vda root-mode=ro")
    assert readonly.problems()[0].startswith(
        "the root filesystem (/dev/vda) is mounted read-only: no `rw`")

    failed = result("init=start", "root-mode=rw", "start-script=plain",
                    "start-script-exit=2 start-script-output-b64="
                    + base64.b64encode(b"boom\nno such user\n").decode(),
                    "context=continued", "app-wait=timeout app-wait-s=60")
    assert failed.problems() == [
        "START_SCRIPT exited with status 2: no such user",
        "the app never reported (waited 60 s); START_SCRIPT said: no such user",
    ]

    never = result("init=start", "root-mode=rw", "start-script=base64", exit_code=None,
                   timed_out=True)
    assert never.problems() == [
        "START_SCRIPT did not return",
        "timed out after 60 s (last console line: HOOKD-BOOT start-script=base64)",
    ]

    undecodable = result("init=start", "root-mode=rw", "start-script=base64",
                         "start-script-decode-failed=1 start-script-exit=1",
                         "context=continued")
    assert undecodable.problems() == [
        "START_SCRIPT_BASE64 is not valid base64: net-97-start-script stops before running "
        "anything (base64 -d exited with 1)"
    ]

    missing = result("initrd=start",
                     "initrd-root-missing=/dev/vdb initrd-root-wait-s=8 "
                     "initrd-block-devices=vda,sr0")
    assert missing.problems() == [
        "root device /dev/vdb never appeared (waited 8 s; block devices: vda,sr0)"
    ]


def test_kernel_panic_and_qemu_errors_are_problems() -> None:
    panic = BootResult(
        machine="microvm", command=("qemu",), cmdline="", exit_code=0, duration=2.0,
        console="[ 0.8] Kernel panic - not syncing: VFS: Unable to mount root fs on "
                "unknown-block(0,0)\n[ 0.9] Rebooting in 1 seconds..",
        events=(), qemu_stderr="", timeout=60, timed_out=False,
    )
    assert panic.problems() == [
        "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"
    ]
    refused = BootResult(
        machine="pc", command=("qemu",), cmdline="", exit_code=1, duration=0.1, console="",
        events=(), qemu_stderr="qemu-system-x86_64: Error loading uncompressed kernel without "
                               "PVH ELF Note\n", timeout=60, timed_out=False,
    )
    assert refused.problems() == [
        "QEMU failed before the guest printed anything: qemu-system-x86_64: Error loading "
        "uncompressed kernel without PVH ELF Note"
    ]


def test_problems_from_a_systemd_guest() -> None:
    """The Debian root filesystem's proof unit (hookd.testing.rootfs) reports systemd's end
    of boot; what it reports becomes problems like the busybox guest's markers do."""
    reached = ("init=systemd init-exe=/usr/lib/systemd/systemd",
               "root-device=/dev/vda root-mode=rw root-writable=yes")
    clean = result(*reached,
                   "systemd-state=running systemd-default=graphical.target "
                   "systemd-default-state=active multi-user-target=active systemd-failed=none",
                   "systemd-start-ms=2700 systemd-finish-ms=16800", "proof=done poweroff=now")
    assert clean.problems() == []
    assert clean.systemd_reached_target and clean.proof_done
    assert clean.systemd_finish_seconds == 16.8 and clean.systemd_failed_units == ()

    degraded = result(*reached,
                      "systemd-state=degraded systemd-default=graphical.target "
                      "systemd-default-state=active multi-user-target=active "
                      "systemd-failed=a.service,b.mount", "proof=done")
    assert degraded.systemd_reached_target  # the target is active, a unit failed
    assert degraded.problems() == [
        "systemd finished booting in state degraded (failed units: a.service, b.mount)"
    ]

    jobs = base64.b64encode(b"42 dev-ttyS0.device start running\n"
                            b"43 serial-getty@ttyS0.service start waiting\n").decode()
    stuck = result(*reached, f"systemd-waiting-s=20 systemd-jobs-b64={jobs}", exit_code=None,
                   timed_out=True)
    assert not stuck.systemd_reached_target
    assert stuck.problems() == [
        "systemd reached basic.target (the proof unit started) but its boot never finished; "
        "still waiting for: dev-ttyS0.device, serial-getty@ttyS0.service",
        f"timed out after 60 s (last console line: HOOKD-BOOT systemd-waiting-s=20 "
        f"systemd-jobs-b64={jobs})",
    ]
    silent = BootResult(machine="pc", command=("qemu",), cmdline="root=/dev/vda rw",
                        console="Booting from ROM..", events=(), qemu_stderr="",
                        exit_code=None, duration=60.0, timeout=60, timed_out=True)
    assert silent.problems() == [
        "the root filesystem's /sbin/init never started",
        "timed out after 60 s (last console line: Booting from ROM..)",
        "nothing was reported, and the kernel command line has no console=ttyS0: the kernel, "
        "the initrd and systemd print on tty0, which the harness cannot read (only a root "
        "filesystem that writes to /dev/ttyS0 itself is heard)",
    ]
