"""The boot proof with a real distribution: a Debian bookworm root filesystem built from
packages (mmdebstrap), shaped like a Linux Containers image (systemd, no kernel, no
one-context), boots to systemd's target with the kernel and initrd hookd's KVM template
attaches, booted the way OpenNebula's KVM driver would."""

from __future__ import annotations

import pytest

from handlers.facts import VmTemplateFacts
from handlers.template import Vector
from hookd.testing.boot import BootResult
from hookd.testing.rootfs import PROOF_UNIT, DebianGuest

from .scenario import (
    INITRD_IMAGE_ID,
    KERNEL_IMAGE_ID,
    ROOTFS_IMAGE_ID,
    PlannedTemplate,
    oned_template_xml,
    plan_linuxcontainers_template,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.requires_system("qemu"),
    pytest.mark.requires_system("mmdebstrap"),
    # The first run on a machine downloads the kernel and builds the root filesystem.
    pytest.mark.timeout(1800),
]


@pytest.fixture(scope="module")
def lxc_template() -> PlannedTemplate:
    planned = plan_linuxcontainers_template()
    assert planned.plan.status == "applied", planned.plan.reason
    return planned


def boot(guest: DebianGuest, template_xml: str, observe: str = "") -> BootResult:
    """``observe``: appended to the command line, for the harness's serial port (a VM of
    OpenNebula's KVM driver has none; hookd's KERNEL_CMD names the VNC console, tty0)."""
    return guest.boot(template_xml, kernel_id=KERNEL_IMAGE_ID, initrd_id=INITRD_IMAGE_ID,
                      rootfs_id=ROOTFS_IMAGE_ID, extra_append=observe)


def vector(planned: PlannedTemplate, name: str) -> Vector:
    found = planned.after.template.vector(name)
    assert found is not None, f"the template has no {name}"
    return found


def assert_systemd_reached_its_target(result: BootResult, guest: DebianGuest) -> None:
    report = result.report()
    assert not result.problems(), report
    # The root filesystem's own init is PID 1, and it finished booting with nothing failed.
    assert result.init_name == "systemd", report
    assert result.marker("init-exe") == "/usr/lib/systemd/systemd", report
    assert result.marker("unit") == PROOF_UNIT, report
    assert result.systemd_reached_target, report
    assert result.systemd_state == "running" and result.systemd_failed_units == (), report
    assert result.marker("basic-target") == "active", report
    # Debian 12 on the template's kernel, its root read-write on the virtio disk.
    assert (result.marker("os-id"), result.marker("os-version-id")) == ("debian", "12"), report
    assert result.marker("kernel-release") == guest.kernel.version, report
    assert result.root_device == "/dev/vda" and result.marker("root-fstype") == "ext4", report
    assert result.root_mode == "rw" and result.root_writable, report
    # The guest saw the command line the KVM driver builds from the template.
    assert result.guest_kernel_cmdline == result.cmdline, report
    # Nothing in the image reads OpenNebula's context (a Linux Containers image has no
    # one-context); the CD is there all the same.
    assert result.marker("one-context") == "absent", report
    assert (result.marker("context-cd") or "").startswith("/dev/sr"), report
    # It powered itself off: QEMU exited on its own.
    assert result.marker("poweroff") == "now" and result.exit_code == 0, report
    assert not result.timed_out, report


def test_image_is_shaped_like_a_linux_containers_image(debian_guest: DebianGuest) -> None:
    rootfs = debian_guest.rootfs
    assert rootfs.suite == "bookworm" and rootfs.architecture == "amd64"
    for package in ("systemd", "systemd-sysv", "udev", "dbus", "systemd-resolved"):
        assert rootfs.has_package(package), f"{package} is not installed"
    # No kernel, no boot loader, no one-context: the template brings the kernel.
    names = [name for name, _ in rootfs.packages]
    assert not [n for n in names if n.startswith(("linux-image", "grub", "one-context"))]


def test_debian_rootfs_boots_to_systemds_target_with_hookds_kvm_template(
    debian_guest: DebianGuest, lxc_template: PlannedTemplate
) -> None:
    os_vec = vector(lxc_template, "OS")
    # What hookd wrote for KVM on 7.4: kernel and initrd by image id, the root on the
    # virtio disk (the image has no DEV_PREFIX, so hookd set vd on the DISK), rw.
    assert os_vec.get("KERNEL_DS") == f"$FILE[IMAGE_ID={KERNEL_IMAGE_ID}]"
    assert os_vec.get("INITRD_DS") == f"$FILE[IMAGE_ID={INITRD_IMAGE_ID}]"
    assert os_vec.get("ROOT") == "vda"
    assert "rw" in (os_vec.get("KERNEL_CMD") or "").split()
    assert vector(lxc_template, "DISK").get("DEV_PREFIX") == "vd"
    # The export's LXC template, re-targeted: nothing LXC-only is left for the KVM VM.
    after = lxc_template.after.template
    assert after.get("HYPERVISOR") == "kvm"
    assert after.get("SCHED_REQUIREMENTS") == "HYPERVISOR=kvm & ARCH=x86_64"
    assert after.vector("RAW") is None and after.get("LXC_UNPRIVILEGED") is None
    # A Linux Containers image needs no START_SCRIPT, and hookd adds none.
    context = vector(lxc_template, "CONTEXT")
    assert context.get("START_SCRIPT") is None and context.get("START_SCRIPT_BASE64") is None

    assert (os_vec.get("KERNEL_CMD") or "").split()[-1] == "console=tty0"  # VNC's console
    result = boot(debian_guest, lxc_template.xml, observe="console=ttyS0")

    assert result.cmdline == f"root=/dev/vda {os_vec.get('KERNEL_CMD')} console=ttyS0"
    assert_systemd_reached_its_target(result, debian_guest)
    assert result.systemd_default_target == "graphical.target"
    # With the harness's console=ttyS0 the kernel and the initrd are heard too.
    assert result.marker("initrd-root") == "/dev/vda", result.report()
    finish = result.systemd_finish_seconds
    assert finish is not None and finish < result.duration, result.report()


def test_proof_does_not_need_console_on_the_serial_port(
    debian_guest: DebianGuest, lxc_template: PlannedTemplate
) -> None:
    """OpenNebula's KVM driver defines no serial console: with KERNEL_CMD="rw" alone the
    kernel, the initrd and systemd print on tty0 (VNC). The proof unit writes to the serial
    port itself, so the boot is still proven."""
    os_vec = vector(lxc_template, "OS")
    bare = lxc_template.after.template.replaced("OS", [os_vec.set("KERNEL_CMD", "rw")])
    facts = lxc_template.after
    xml = oned_template_xml(VmTemplateFacts(facts.id, facts.name, facts.uid, facts.uname, bare))

    result = boot(debian_guest, xml)

    assert result.cmdline == "root=/dev/vda rw"
    assert_systemd_reached_its_target(result, debian_guest)
    # Nothing but the proof reached the serial port: no kernel log, no initrd report.
    assert "Linux version" not in result.console, result.report()
    assert result.marker("initrd") is None, result.report()
