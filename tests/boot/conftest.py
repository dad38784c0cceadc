"""Session fixtures for the boot proof: the Debian kernel, the initrd and the root filesystems
(busybox, and a Debian one built from packages), built once and cached (keyed by everything
that goes into them: the busybox guest in pytest's cache directory, the Debian kernel and
root filesystem in ``$HOOKD_TEST_CACHE`` or ``~/.cache/hookd-test``).

Where qemu, busybox-static, genisoimage, e2fsprogs, the Debian kernel, mmdebstrap or the
Debian mirror are missing the tests are skipped with the reason; with ``CI=true`` that is a
failure (tests/kernels/ci.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from hookd.testing.boot import (
    BootResult,
    BootUnavailable,
    Machine,
    boot_template,
    build_initrd,
    build_rootfs,
    require_boot_tools,
)
from hookd.testing.debian_kernel import DebianKernel, KernelUnavailable, fetch_debian_kernel
from hookd.testing.rootfs import DebianGuest, RootfsUnavailable, prepare_debian_guest
from tests.kernels.ci import unavailable

from .scenario import (
    APP_GROUP,
    APP_USER,
    INITRD_IMAGE_ID,
    KERNEL_IMAGE_ID,
    ROOTFS_IMAGE_ID,
)

#: How long one boot may take before the harness kills QEMU (a boot takes ~5 s under TCG).
BOOT_TIMEOUT = 120.0


@dataclass(frozen=True)
class BootGuest:
    """The built guest: the Debian kernel, the initrd and the root filesystem.

    A template refers to them by image id (the kernel and the initrd as KERNEL/RAMDISK
    images, the root filesystem as the Docker Hub image); :meth:`boot` maps the ids of this
    scenario by default, or those given (e.g. the ids an OpenNebula simulator assigned).
    """

    kernel: DebianKernel
    initrd: Path
    rootfs: Path

    def boot(
        self,
        template_xml: str,
        *,
        kernel_id: int = KERNEL_IMAGE_ID,
        initrd_id: int = INITRD_IMAGE_ID,
        rootfs_id: int = ROOTFS_IMAGE_ID,
        kernel: Path | None = None,
        machine: Machine = "pc",
        microvm_initrd: Path | None = None,
        start_script_limit: int | None = None,
        observe: str = "console=ttyS0",
    ) -> BootResult:
        """Boot a VM template XML (as oned returns it) on this guest. ``kernel`` replaces
        the file behind ``kernel_id`` (default: the PVH vmlinux).

        ``observe`` is appended to the kernel command line: OpenNebula's KVM driver gives a
        VM no serial port and hookd's KERNEL_CMD names the VNC console (``console=tty0``),
        which this harness has no screen for; the harness's QEMU has a serial port and makes
        it the last console so that what the guest says reaches the test."""
        return boot_template(
            template_xml,
            {kernel_id: kernel or self.kernel.vmlinux, initrd_id: self.initrd},
            {rootfs_id: self.rootfs},
            # The Docker Hub image's DEV_PREFIX (DockerMarket APPTEMPLATE64: DEV_PREFIX="vd").
            dev_prefixes={rootfs_id: "vd"},
            machine=machine,
            timeout=BOOT_TIMEOUT,
            extra_append=observe,
            microvm_initrd=microvm_initrd,
            start_script_limit=start_script_limit,
        )


def _cache_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(config, "cache", None)
    if cache is not None:
        path = cache.mkdir("hookd-boot")
        assert isinstance(path, Path)
        return path
    return tmp_path_factory.mktemp("hookd-boot-cache")


@pytest.fixture(scope="session")
def boot_guest(pytestconfig: pytest.Config,
               tmp_path_factory: pytest.TempPathFactory) -> BootGuest:
    try:
        require_boot_tools()
    except BootUnavailable as error:
        unavailable(f"cannot boot guests: {error.reason}")
    try:
        kernel = fetch_debian_kernel()
    except KernelUnavailable as error:
        unavailable(f"no Debian kernel to boot: {error.reason}")
    cache = _cache_dir(pytestconfig, tmp_path_factory)
    out = tmp_path_factory.mktemp("boot-guest")
    initrd = build_initrd(kernel, out / "initrd.cpio.gz", cache_dir=cache)
    rootfs = build_rootfs(out / "rootfs.ext4", users=[APP_USER], groups=[APP_GROUP],
                          cache_dir=cache)
    return BootGuest(kernel, initrd, rootfs)


@pytest.fixture(scope="session")
def debian_guest(tmp_path_factory: pytest.TempPathFactory) -> DebianGuest:
    """The Debian kernel, the initrd and the Debian root filesystem (hookd.testing.rootfs);
    the first run on a machine builds the root filesystem from the Debian mirror."""
    try:
        return prepare_debian_guest(tmp_path_factory.mktemp("debian-guest"))
    except KernelUnavailable as error:
        unavailable(f"no Debian kernel to boot: {error.reason}")
    except RootfsUnavailable as error:
        unavailable(f"no Debian root filesystem: {error.reason}")
    except BootUnavailable as error:
        unavailable(f"cannot boot guests: {error.reason}")
