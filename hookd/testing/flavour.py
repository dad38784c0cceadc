"""Which OpenNebula release the simulator imitates, and what differs between them.

Two flavours exist:

* ``6.8`` imitates oned 6.8.3, the release the recordings in
  ``shared/opennebula-recorded`` come from: container marketplaces (DockerHub, Docker
  Registry, TurnKey), Firecracker, LXD and vCenter drivers exist.
* ``7.4`` imitates oned 7.4.0: ``IMAGE/MODTIME`` and ``IMAGE/BACKUP_DISK_IDS`` exist
  (``src/image/Image.cc``), CDROM images get no ``DEV_PREFIX`` (``Image::insert``), host
  PCI devices report ``IFNAME``/``SRIOV`` (``src/im_mad/remotes/dummy-probes.d``), only the
  ``one`` and ``linuxcontainers`` marketplaces and the ``kvm``/``lxc`` drivers remain
  (``share/etc/oned.conf`` and ``src/market/MarketPlacePool.cc`` at release-7.4.0).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavour:
    """Version-dependent behaviour switches."""

    version: str
    major: int
    image_modtime: bool
    image_backup_disk_ids: bool
    cdrom_gets_dev_prefix: bool
    host_pci_ifname: bool
    host_share_ds_entries: bool
    market_mads: tuple[str, ...]
    vm_mads: tuple[str, ...]


ONE_6_8 = Flavour(
    version="6.8.3",
    major=6,
    image_modtime=False,
    image_backup_disk_ids=False,
    cdrom_gets_dev_prefix=True,
    host_pci_ifname=False,
    host_share_ds_entries=False,
    market_mads=("one", "linuxcontainers", "turnkeylinux", "dockerhub", "docker_registry"),
    vm_mads=("kvm", "qemu", "lxc", "lxd", "firecracker", "vcenter", "dummy"),
)

ONE_7_4 = Flavour(
    version="7.4.0",
    major=7,
    image_modtime=True,
    image_backup_disk_ids=True,
    cdrom_gets_dev_prefix=False,
    host_pci_ifname=True,
    host_share_ds_entries=True,
    market_mads=("one", "linuxcontainers"),
    vm_mads=("kvm", "qemu", "lxc", "dummy"),
)


def flavour_for(one_version: str) -> Flavour:
    """Map ``"6.8"``/``"6.8.3"``/``"7.4"``/``"7.4.0"`` to a flavour."""
    if one_version in ("6.8", "6.8.3"):
        return ONE_6_8
    if one_version in ("7.4", "7.4.0"):
        return ONE_7_4
    raise ValueError(f"unsupported one_version {one_version!r} (use '6.8' or '7.4')")
