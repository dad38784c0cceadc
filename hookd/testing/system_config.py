"""``one.system.config``: the ``OPENNEBULA_CONFIGURATION`` document.

oned serialises its parsed ``oned.conf`` as a template (``Nebula::get_configuration_xml``,
``src/nebula/Nebula.cc``): attributes sorted by name, values in CDATA, vectors for
``*_MAD`` / ``*_CONF`` sections. The values below are the stock ``share/etc/oned.conf``
values recorded from oned 6.8.3 (DEFAULT_DEVICE_PREFIX ``sd``, DEFAULT_CDROM_DEVICE_PREFIX
``hd``, API_LIST_ORDER ``DESC``, ...), with the ports and datastore location of this
simulator, and the driver lists of the chosen flavour.

The 7.x flavour follows ``share/etc/oned.conf`` at release-7.4.0 (checked against the
configuration recorded from a real oned 7.4.0): there is no DEFAULT_CDROM_DEVICE_PREFIX
(the CD-ROM prefix follows the VM's chipset, ``src/vm/VirtualMachineDisk.cc``),
IMAGE_RESTRICTED_ATTR is only ``SOURCE``, VM_MADs have no IMPORTED_VMS_ACTIONS, FEDERATION
has MASTER_ONED_GRPC, the datastore driver lists are longer and every TM_MAD_CONF carries
DS_LIVE_MIGRATE and DS_MIGRATE_SNAP (the bootstrap datastores use the ``local`` TM).
"""

from __future__ import annotations

from hookd.testing.flavour import Flavour
from hookd.testing.template_lang import SingleAttribute, Template, VectorAttribute

# TM_MAD_CONF entries the simulator's datastores use (recorded oned.conf values).
TM_MAD_CONF: dict[str, dict[str, str]] = {
    "dummy": {"CLONE_TARGET": "SYSTEM", "DS_MIGRATE": "YES", "LN_TARGET": "NONE",
              "NAME": "dummy", "SHARED": "YES"},
    "shared": {"ALLOW_ORPHANS": "FORMAT", "CLONE_TARGET": "SYSTEM", "CLONE_TARGET_SSH": "SYSTEM",
               "DISK_TYPE_SSH": "FILE", "DS_MIGRATE": "YES", "LN_TARGET": "NONE",
               "LN_TARGET_SSH": "SYSTEM", "NAME": "shared", "SHARED": "YES",
               "TM_MAD_SYSTEM": "ssh"},
    "qcow2": {"ALLOW_ORPHANS": "FORMAT", "CLONE_TARGET": "SYSTEM", "CLONE_TARGET_SSH": "SYSTEM",
              "DISK_TYPE_SSH": "FILE", "DRIVER": "qcow2", "DS_MIGRATE": "YES",
              "LN_TARGET": "NONE", "LN_TARGET_SSH": "SYSTEM", "NAME": "qcow2", "SHARED": "YES",
              "TM_MAD_SYSTEM": "ssh"},
    "ssh": {"ALLOW_ORPHANS": "YES", "CLONE_TARGET": "SYSTEM", "DS_MIGRATE": "YES",
            "LN_TARGET": "SYSTEM", "NAME": "ssh", "SHARED": "NO"},
}

# release-7.4.0 share/etc/oned.conf: the same drivers with the live/snapshot migration flags,
# plus "local", the TM_MAD of the bootstrap datastores (src/datastore/DatastorePool.cc).
TM_MAD_CONF_7: dict[str, dict[str, str]] = {
    **{name: {**conf, "DS_LIVE_MIGRATE": "YES", "DS_MIGRATE_SNAP": "YES"}
       for name, conf in TM_MAD_CONF.items()},
    "local": {"ALLOW_ORPHANS": "FORMAT", "CLONE_TARGET": "SYSTEM", "DS_LIVE_MIGRATE": "YES",
              "DS_MIGRATE": "YES", "DS_MIGRATE_SNAP": "YES", "LN_TARGET": "SYSTEM",
              "NAME": "local", "SHARED": "NO"},
}


def tm_mad_conf(flavour: Flavour) -> dict[str, dict[str, str]]:
    """The TM_MAD_CONF entries of the flavour's stock oned.conf."""
    return TM_MAD_CONF_7 if flavour.major >= 7 else TM_MAD_CONF


_IMPORTED_KVM = (
    "terminate, terminate-hard, hold, release, suspend,\n        resume, delete, reboot, "
    "reboot-hard, resched, unresched, disk-attach,\n        disk-detach, nic-attach, "
    "nic-detach, snapshot-create, snapshot-delete,\n        resize, updateconf, update"
)
_IMPORTED_LXC = (
    "terminate, terminate-hard, reboot, reboot-hard,\n        poweroff, poweroff-hard, "
    "suspend, resume, stop, delete,  nic-attach,\n        nic-detach, resize, updateconf, update"
)

_VM_MADS: dict[str, dict[str, str]] = {
    "kvm": {"ARGUMENTS": "-t 15 -r 0 kvm -p", "DEFAULT": "vmm_exec/vmm_exec_kvm.conf",
            "EXECUTABLE": "one_vmm_exec", "IMPORTED_VMS_ACTIONS": _IMPORTED_KVM,
            "KEEP_SNAPSHOTS": "yes", "LIVE_RESIZE": "yes", "NAME": "kvm",
            "SUNSTONE_NAME": "KVM", "SUPPORT_SHAREABLE": "yes", "TYPE": "kvm"},
    "qemu": {"ARGUMENTS": "-t 15 -r 0 kvm", "DEFAULT": "vmm_exec/vmm_exec_kvm.conf",
             "EXECUTABLE": "one_vmm_exec", "IMPORTED_VMS_ACTIONS": _IMPORTED_KVM,
             "KEEP_SNAPSHOTS": "yes", "LIVE_RESIZE": "yes", "NAME": "qemu",
             "SUNSTONE_NAME": "QEMU", "SUPPORT_SHAREABLE": "yes", "TYPE": "qemu"},
    "lxd": {"ARGUMENTS": "-t 15 -r 0 lxd", "EXECUTABLE": "one_vmm_exec",
            "IMPORTED_VMS_ACTIONS": _IMPORTED_LXC, "KEEP_SNAPSHOTS": "no", "NAME": "lxd",
            "SUNSTONE_NAME": "LXD", "TYPE": "xml"},
    "lxc": {"ARGUMENTS": "-t 15 -r 0 lxc", "EXECUTABLE": "one_vmm_exec",
            "IMPORTED_VMS_ACTIONS": _IMPORTED_LXC, "KEEP_SNAPSHOTS": "no", "NAME": "lxc",
            "SUNSTONE_NAME": "LXC", "TYPE": "xml"},
    "firecracker": {"ARGUMENTS": "-t 15 -r 0 firecracker", "EXECUTABLE": "one_vmm_exec",
                    "KEEP_SNAPSHOTS": "no", "NAME": "firecracker",
                    "SUNSTONE_NAME": "Firecracker", "TYPE": "xml"},
    "vcenter": {"ARGUMENTS": "-p -t 15 -r 0 -s sh vcenter", "COLD_NIC_ATTACH": "yes",
                "DS_LIVE_MIGRATION": "yes", "EXECUTABLE": "one_vmm_sh",
                "KEEP_SNAPSHOTS": "yes", "LIVE_RESIZE": "yes", "NAME": "vcenter",
                "SUNSTONE_NAME": "VMWare vCenter", "TYPE": "xml"},
    "dummy": {"EXECUTABLE": "one_vmm_dummy", "NAME": "dummy", "SUNSTONE_NAME": "Testing",
              "TYPE": "xml"},
}

_MARKET_CONF: dict[str, dict[str, str]] = {
    "one": {"APP_ACTIONS": "monitor", "NAME": "one", "PUBLIC": "yes", "REQUIRED_ATTRS": "",
            "SUNSTONE_NAME": "OpenNebula.org Marketplace"},
    "linuxcontainers": {"APP_ACTIONS": "monitor", "NAME": "linuxcontainers", "PUBLIC": "yes",
                        "REQUIRED_ATTRS": "", "SUNSTONE_NAME": "LinuxContainers.org"},
    "turnkeylinux": {"APP_ACTIONS": "monitor", "NAME": "turnkeylinux", "PUBLIC": "yes",
                     "REQUIRED_ATTRS": "", "SUNSTONE_NAME": "TurnkeyLinux"},
    "dockerhub": {"APP_ACTIONS": "monitor", "NAME": "dockerhub", "PUBLIC": "yes",
                  "REQUIRED_ATTRS": "", "SUNSTONE_NAME": "DockerHub"},
    "docker_registry": {"APP_ACTIONS": "monitor", "NAME": "docker_registry",
                        "REQUIRED_ATTRS": "BASE_URL", "SUNSTONE_NAME": "DockerRegistry"},
}


def build_config(flavour: Flavour, *, port: int, hm_port: int, ds_location: str) -> str:
    """The ``OPENNEBULA_CONFIGURATION`` XML for this simulator."""
    major7 = flavour.major >= 7
    singles = {
        "API_LIST_ORDER": "DESC",
        "CONTEXT_RESTRICTED_DIRS": "/etc",
        "CONTEXT_SAFE_DIRS": "",
        "DATASTORE_CAPACITY_CHECK": "yes",
        "DATASTORE_LOCATION": ds_location,
        "DEFAULT_AUTH": "default",
        "DEFAULT_CDROM_DEVICE_PREFIX": "hd",
        "DEFAULT_DEVICE_PREFIX": "sd",
        "DEFAULT_IMAGE_PERSISTENT": "",
        "DEFAULT_IMAGE_PERSISTENT_NEW": "",
        "DEFAULT_IMAGE_TYPE": "OS",
        "DEFAULT_UMASK": "177",
        "ENABLE_OTHER_PERMISSIONS": "YES",
        "KEEPALIVE_MAX_CONN": "30",
        "KEEPALIVE_TIMEOUT": "15",
        "LISTEN_ADDRESS": "127.0.0.1",
        "MANAGER_TIMER": "15",
        "MAX_CONN": "15",
        "MAX_CONN_BACKLOG": "15",
        "MONITORING_INTERVAL_DATASTORE": "300",
        "MONITORING_INTERVAL_MARKET": "600",
        "PORT": str(port),
        "RPC_LOG": "NO",
        "SCRIPTS_REMOTE_DIR": "/var/tmp/one",  # noqa: S108 - oned.conf value
        "SESSION_EXPIRATION_TIME": "900",
        "TIMEOUT": "15",
    }
    if major7:
        # release-7.4.0 oned.conf has no DEFAULT_CDROM_DEVICE_PREFIX: a CD-ROM's prefix is
        # "sd" on q35/virt machines and "hd" otherwise (src/vm/VirtualMachineDisk.cc:884).
        del singles["DEFAULT_CDROM_DEVICE_PREFIX"]
    tmpl = Template(False)
    for name, value in singles.items():
        tmpl.set(SingleAttribute(name, value, normalized=True))
    # release-7.4.0 share/etc/oned.conf:932 restricts only SOURCE (vCenter is gone).
    for name in ("SOURCE",) if major7 else ("SOURCE", "VCENTER_IMPORTED"):
        tmpl.set(SingleAttribute("IMAGE_RESTRICTED_ATTR", name, normalized=True))
    markets = ",".join(("http", "s3", *flavour.market_mads))
    if major7:  # release-7.4.0 share/etc/oned.conf:571-574
        ds_args = ("-t 15 -d dummy,fs,lvm,ceph,dev,iscsi_libvirt,restic,rsync,netapp,purefa,"
                   "virtiofs,interactive -s dummy,lvm,shared,ssh,local,ceph,fs_lvm,fs_lvm_ssh,"
                   "qcow2,netapp,purefa")
    else:
        ds_args = ("-t 15 -d dummy,fs,lvm,ceph,dev,iscsi_libvirt,restic,rsync -s shared,ssh,"
                   "ceph,fs_lvm,fs_lvm_ssh,qcow2")
    federation = {"MASTER_ONED": "", "MODE": "STANDALONE", "SERVER_ID": "-1", "ZONE_ID": "0"}
    if major7:  # release-7.4.0 share/etc/oned.conf:187-193
        federation["MASTER_ONED_GRPC"] = ""
    vectors: list[tuple[str, dict[str, str]]] = [
        ("HM_MAD", {"ARGUMENTS": f"-p {hm_port} -l {hm_port + 1} -b 127.0.0.1",
                    "EXECUTABLE": "one_hm"}),
        ("MARKET_MAD", {"ARGUMENTS": f"-t 15 -m {markets}", "EXECUTABLE": "one_market"}),
        ("DATASTORE_MAD", {"ARGUMENTS": ds_args, "EXECUTABLE": "one_datastore"}),
        ("DB", {"BACKEND": "sqlite", "TIMEOUT": "2500"}),
        ("FEDERATION", federation),
        ("VNC_PORTS", {"RESERVED": "32768:65536", "START": "5900"}),
    ]
    # release-7.4.0 has no "shared"/"ssh" DS_MAD_CONF (they are TM drivers only).
    for name in ("dummy", "fs") if major7 else ("dummy", "fs", "shared", "ssh"):
        conf = {"NAME": name, "PERSISTENT_ONLY": "NO", "REQUIRED_ATTRS": ""}
        if name == "fs":
            conf["MARKETPLACE_ACTIONS"] = "export"
        vectors.append(("DS_MAD_CONF", conf))
    vectors.extend(("TM_MAD_CONF", conf) for conf in tm_mad_conf(flavour).values())
    vectors.extend(("MARKET_MAD_CONF", _MARKET_CONF[m]) for m in flavour.market_mads)
    for mad in flavour.vm_mads:
        conf = dict(_VM_MADS[mad])
        if major7:  # no wild VM import in 7.x: no IMPORTED_VMS_ACTIONS in its oned.conf
            conf.pop("IMPORTED_VMS_ACTIONS", None)
        vectors.append(("VM_MAD", conf))
    for name, values in vectors:
        tmpl.set(VectorAttribute(name, values, normalized=True))
    return tmpl.to_xml("OPENNEBULA_CONFIGURATION")
