"""The Firecracker stand-in: QEMU's microvm machine with what OpenNebula's Firecracker driver
and Firecracker v0.24.2 give the kernel (see hookd.testing.boot's docstring)."""

from __future__ import annotations

import pytest

from hookd.kernels import verify_kernel
from hookd.testing.boot import domain_from_template, firecracker_cmdline

from .conftest import BootGuest
from .scenario import (
    KERNEL_IMAGE_ID,
    ROOTFS_IMAGE_ID,
    PlannedTemplate,
    assert_app_ran_as_configured,
    image_config,
    plan_dockerhub_template,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.requires_system("qemu"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def firecracker_template() -> PlannedTemplate:
    planned = plan_dockerhub_template("firecracker", image_config())
    assert planned.plan.status == "applied", planned.plan.reason
    return planned


def test_firecracker_boot_args_come_from_the_template(
    boot_guest: BootGuest, firecracker_template: PlannedTemplate
) -> None:
    direct = domain_from_template(
        firecracker_template.xml,
        {KERNEL_IMAGE_ID: boot_guest.kernel.vmlinux},
        {ROOTFS_IMAGE_ID: boot_guest.rootfs},
        dev_prefixes={ROOTFS_IMAGE_ID: "vd"},
    )
    os_vec = firecracker_template.after.template.vector("OS")
    assert os_vec is not None
    # hookd's Firecracker handler sets no ROOT and no INITRD: Firecracker adds the root.
    assert os_vec.get("ROOT") is None and os_vec.get("INITRD_DS") is None
    assert direct.initrd is None
    assert firecracker_cmdline(direct) == f"{os_vec.get('KERNEL_CMD')} root=/dev/vda rw"


def test_debian_kernel_cannot_boot_as_opennebula_runs_firecracker(
    boot_guest: BootGuest, firecracker_template: PlannedTemplate
) -> None:
    """Documented failure. OpenNebula ignores INITRD for Firecracker (OpenNebula/one#5382), and
    Debian kernels build virtio-mmio and virtio-blk as modules: with no initrd nothing can load
    them, so there is no /dev/vda and the kernel panics. (Under Firecracker v0.24.2 itself it
    would fail even with an initrd: that version announces its disks only as
    virtio_mmio.device= arguments, which need CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, unset in
    Debian's kernels.) hookd's kernel check says so in its warnings."""
    verdict = verify_kernel(boot_guest.kernel.vmlinux, "firecracker")
    assert any("OpenNebula ignores OS/INITRD for Firecracker" in w for w in verdict.warnings)
    config = boot_guest.kernel.config.read_text()
    assert "# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set" in config
    assert "CONFIG_VIRTIO_MMIO=m" in config and "CONFIG_VIRTIO_BLK=m" in config

    result = boot_guest.boot(firecracker_template.xml, machine="microvm")
    assert not result.booted
    assert result.cmdline.startswith("console=ttyS0 reboot=k panic=1 pci=off ")
    assert " root=/dev/vda rw tsc_early_khz=" in result.cmdline
    assert "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)" in \
        result.problems(), result.report()
    # panic=1 (from the template) reboots, and QEMU (-no-reboot) exits.
    assert not result.timed_out and result.kill_reason is None


def test_microvm_stand_in_with_an_initrd_boots_and_starts_the_app(
    boot_guest: BootGuest, firecracker_template: PlannedTemplate
) -> None:
    """The stand-in for a Firecracker-ready kernel (drivers built in): the same kernel plus the
    initrd OpenNebula would not pass. Boots with Firecracker's command line (root=/dev/vda rw
    appended to KERNEL_CMD), the context as a second virtio disk, and runs the START_SCRIPT."""
    result = boot_guest.boot(firecracker_template.xml, machine="microvm",
                             microvm_initrd=boot_guest.initrd)
    report = result.report()
    assert not result.problems(), report
    assert result.root_device == "/dev/vda" and result.root_mode == "rw", report
    assert result.context_device == "/dev/vdb", report
    assert result.start_script_exit == 0, report
    seconds = result.start_script_seconds
    assert seconds is not None and seconds < 2.0, report
    assert result.context_continued
    assert_app_ran_as_configured(result, image_config())
