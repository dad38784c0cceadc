"""Create infrastructure objects directly in the world (no API call, no event).

Used by the seed scenarios and by the world-edit controls. The attributes each object
gets mirror what oned adds when such an object is allocated (release-6.8.3):

* ``Datastore::insert`` / ``Datastore::set_tm_mad`` (``src/datastore/Datastore.cc``): the
  TM_MAD_CONF attributes (LN_TARGET, CLONE_TARGET, SHARED, DS_MIGRATE, ALLOW_ORPHANS,
  TM_MAD_SYSTEM...), ``DISK_TYPE=FILE`` for image and system datastores, default
  ``SAFE_DIRS=/var/tmp`` + ``RESTRICTED_DIRS=/``, ``BASE_PATH=<DATASTORE_LOCATION>/<id>``.
  On 7.x (``Datastore::set_tm_mad`` at release-7.4.0) every datastore also gets
  PERSISTENT_SNAPSHOTS (the TM_MAD_CONF value, default YES) and a system datastore
  DS_LIVE_MIGRATE and DS_MIGRATE_SNAP (default NO).
* Hosts as monitored by the stock probes: the recorded dummy-probe topology (two NUMA
  nodes, three PCI devices on 6.x; the 22 PCI devices of the 7.4 dummy probe,
  ``src/im_mad/remotes/dummy-probes.d/host/system/system.rb`` at release-7.4.0), and on
  7.x ``HOST_SHARE/DATASTORES`` with one ``DS`` per system datastore, MEMORY_ENCRYPTION,
  and TOTALCPU/TOTALMEMORY left in the template (7.4's ``Host::update_info`` no longer
  erases them, ``src/host/Host.cc``).
* ``MarketPlaceApp::from_template64`` (``src/market/MarketPlaceApp.cc``): NAME, SOURCE, SIZE,
  MD5, FORMAT, REGTIME, DESCRIPTION, VERSION and APPTEMPLATE64 become fields; the template
  keeps APPTEMPLATE64, VMTEMPLATE64, IMPORT_ID, PUBLISHER, LINK, DESCRIPTION, VERSION and
  any other attribute the driver printed.
"""

from __future__ import annotations

import base64
import hashlib

from hookd.testing.objects import (
    Cluster,
    Datastore,
    DatastoreType,
    Host,
    MarketPlace,
    MarketPlaceApp,
    Permissions,
    User,
)
from hookd.testing.system_config import tm_mad_conf
from hookd.testing.template_lang import SingleAttribute, Template, VectorAttribute, parse_template
from hookd.testing.world import World

KVM_CPU_FEATURES = (
    "vme,ds,acpi,ss,ht,tm,pbe,dtes64,monitor,ds_cpl,vmx,smx,est,tm2,xtpr,pdcm,osxsave,f16c,"
    "rdrand,arat,tsc_adjust,clflushopt,clwb,intel-pt,sha-ni,umip,pku,ospke,waitpkg,gfni,vaes,"
    "vpclmulqdq,rdpid,movdiri,movdir64b,pks,fsrm,md-clear,serialize,arch-lbr,stibp,"
    "arch-capabilities,core-capability,ssbd,avx-vnni,xsaveopt,xsavec,xgetbv1,xsaves,pdpe1gb,"
    "abm,invtsc,rdctl-no,ibrs-all,skip-l1dfl-vmentry,mds-no,pschange-mc-no"
)
KVM_CPU_MODELS = (
    "486 pentium pentium2 pentium3 pentiumpro coreduo n270 core2duo qemu32 kvm32 cpu64-rhel5 "
    "cpu64-rhel6 kvm64 Conroe Penryn Nehalem Nehalem-IBRS Westmere Westmere-IBRS SandyBridge "
    "SandyBridge-IBRS IvyBridge IvyBridge-IBRS SapphireRapids SapphireRapids-noTSX Opteron_G1"
)

_PCI = (
    ("0000:02:00:0", "02", "0300", "VGA compatible controller", "0863", "C79 [GeForce 9400M]",
     "0", "1", "02:00.0", "00", "10de:0863:0300"),
    ("0000:00:06:0", "00", "0c03", "USB controller", "0aa7", "MCP79 OHCI USB 1.1 Controller",
     "0", "1", "00:06.0", "06", "10de:0aa7:0c03"),
    ("0000:00:06:1", "00", "0c03", "USB controller", "0aa9", "MCP79 EHCI USB 2.0 Controller",
     "1", "0", "00:06.1", "06", "10de:0aa9:0c03"),
)


def _vector_xml(tag: str, values: dict[str, str]) -> str:
    out: list[str] = []
    VectorAttribute(tag, values, normalized=True).to_xml(out)
    return "".join(out)


# The 7.4 dummy probe's PCI devices (src/im_mad/remotes/dummy-probes.d/host/system/system.rb,
# release-7.4.0): a GPU with vGPU profiles, two USB controllers, a NIC, a ConnectX-4 with two
# SR-IOV physical functions and sixteen virtual functions.
_L40S_PROFILES = ",".join(
    f"{1145 + i} (NVIDIA L40S-{size})" for i, size in enumerate(
        ("1B", "2B", "1Q", "2Q", "3Q", "4Q", "6Q", "8Q", "12Q", "16Q", "24Q", "48Q", "1A",
         "2A", "3A", "4A", "6A", "8A", "12A", "16A", "24A", "48A")))


def _pci_74() -> list[dict[str, str]]:
    def dev(address: str, cls: str, cls_name: str, vendor: str, vendor_name: str, device: str,
            dev_name: str, numa: str, ifname: str, sriov: str, **extra: str) -> dict[str, str]:
        bus, slot, function = address[5:7], address[8:10], address[11:]
        return {"ADDRESS": address, "BUS": bus, "CLASS": cls, "CLASS_NAME": cls_name,
                "DEVICE": device, "DEVICE_NAME": dev_name, "DOMAIN": "0000",
                "FUNCTION": function, "IFNAME": ifname, "NUMA_NODE": numa,
                "SHORT_ADDRESS": f"{bus}:{slot}.{function}", "SLOT": slot, "SRIOV": sriov,
                "TYPE": f"{vendor}:{device}:{cls}", "VENDOR": vendor,
                "VENDOR_NAME": vendor_name, "VMID": "-1", **extra}

    mellanox = ("15b3", "Mellanox Technologies")
    devices = [
        dev("0000:02:00:0", "0302", "3D controller", "10de", "NVIDIA Corporation", "0863",
            "C79 [GeForce 9400M]", "1", "-", "no", PROFILES=_L40S_PROFILES),
        dev("0000:00:06:0", "0c03", "USB controller", "1b21", "ASMedia Technology Inc.", "0aa7",
            "MCP79 OHCI USB 1.1 Controller", "1", "-", "no"),
        dev("0000:00:06:1", "0c03", "USB controller", "1022", "Advanced Micro Devices, Inc.",
            "0aa9", "MCP79 EHCI USB 2.0 Controller", "0", "-", "no"),
        dev("0000:04:00:1", "0200", "Ethernet controller", "14e4",
            "Broadcom Inc. and subsidiaries", "165f", "NetXtreme BCM5720 Gigabit Ethernet PCIe",
            "0", "eno8403", "no"),
    ]
    for function in (0, 1):
        devices.append(dev(f"0000:81:00:{function}", "0200", "Ethernet controller", *mellanox,
                           "1015", "MT27710 Family [ConnectX-4 Lx]", "0", f"pf{function}", "pf",
                           SRIOV_NUM="8"))
    for slot, functions in ((0, range(2, 8)), (1, range(8)), (2, range(2))):
        for function in functions:
            devices.append(dev(f"0000:81:0{slot}:{function}", "0200", "Ethernet controller",
                               *mellanox, "1016", "MT27710 Family [ConnectX-4 Lx Virtual Function]",
                               "0", f"vf0{slot}{function}", "vf"))
    return devices


def _pci_68() -> list[dict[str, str]]:
    devices = []
    for address, bus, cls, cls_name, device, dev_name, function, numa, short, slot, typ in _PCI:
        devices.append({
            "ADDRESS": address, "BUS": bus, "CLASS": cls, "CLASS_NAME": cls_name,
            "DEVICE": device, "DEVICE_NAME": dev_name, "DOMAIN": "0000", "FUNCTION": function,
            "NUMA_NODE": numa, "SHORT_ADDRESS": short, "SLOT": slot, "TYPE": typ,
            "VENDOR": "10de", "VENDOR_NAME": "NVIDIA Corporation", "VMID": "-1",
        })
    return devices


def host_share_xml(*, probe_7x: bool, system_ds: dict[int, tuple[int, int, int]]) -> str:
    """``<HOST_SHARE>`` of a monitored host (16 cores, 16 GiB, 2 NUMA nodes, the dummy
    probe's PCI devices of 6.8 or 7.4)."""
    ds_parts = ["<DATASTORES><DISK_USAGE><![CDATA[0]]></DISK_USAGE>"]
    for ds_id, (free, total, used) in sorted(system_ds.items()):
        ds_parts.append(_vector_xml("DS", {"FREE_MB": str(free), "ID": str(ds_id),
                                           "TOTAL_MB": str(total), "USED_MB": str(used)}))
    ds_parts.append(
        "<FREE_DISK><![CDATA[20480]]></FREE_DISK><MAX_DISK><![CDATA[20480]]></MAX_DISK>"
        "<USED_DISK><![CDATA[9720]]></USED_DISK></DATASTORES>"
    )
    pci_parts = ["<PCI_DEVICES>"]
    for values in _pci_74() if probe_7x else _pci_68():
        pci_parts.append(_vector_xml("PCI", values))
    pci_parts.append("</PCI_DEVICES>")
    numa_parts = ["<NUMA_NODES>"]
    for node in (0, 1):
        numa_parts.append("<NODE>")
        for core in range(node * 8, node * 8 + 8):
            cpus = ",".join(f"{core + 16 * k}:-1" for k in range(4))
            numa_parts.append(
                f"<CORE><CPUS><![CDATA[{cpus}]]></CPUS><DEDICATED><![CDATA[NO]]></DEDICATED>"
                f"<FREE><![CDATA[4]]></FREE><ID><![CDATA[{core}]]></ID></CORE>"
            )
        for size in ("2048", "1048576"):
            numa_parts.append(
                f"<HUGEPAGE><PAGES><![CDATA[1024]]></PAGES><SIZE><![CDATA[{size}]]></SIZE>"
                "<USAGE><![CDATA[0]]></USAGE></HUGEPAGE>"
            )
        distance = "0 1" if node == 0 else "1 0"
        numa_parts.append(
            f"<MEMORY><DISTANCE><![CDATA[{distance}]]></DISTANCE><TOTAL><![CDATA[8388608]]>"
            f"</TOTAL><USAGE><![CDATA[0]]></USAGE></MEMORY><NODE_ID><![CDATA[{node}]]>"
            "</NODE_ID></NODE>"
        )
    numa_parts.append("</NUMA_NODES>")
    return (
        "<HOST_SHARE><MEM_USAGE>0</MEM_USAGE><CPU_USAGE>0</CPU_USAGE>"
        "<TOTAL_MEM>16777216</TOTAL_MEM><TOTAL_CPU>800</TOTAL_CPU><MAX_MEM>16777216</MAX_MEM>"
        "<MAX_CPU>800</MAX_CPU><RUNNING_VMS>0</RUNNING_VMS><VMS_THREAD>1</VMS_THREAD>"
        + "".join(ds_parts) + "".join(pci_parts) + "".join(numa_parts) + "</HOST_SHARE>"
    )


def _template(text: str) -> Template:
    return parse_template(text, replace_mode=False) if text else Template(False)


def add_user(world: World, name: str, password_digest: str, *, oid: int = 0) -> User:
    token = hashlib.sha1(f"token:{name}".encode(), usedforsecurity=False).hexdigest()
    tmpl = Template(True, [SingleAttribute("TOKEN_PASSWORD", token, normalized=True)])
    return world.users.add(User(oid=oid, name=name, template=tmpl, password=password_digest))


def add_cluster(world: World, name: str, *, oid: int | None = None, template: str = "") -> Cluster:
    tmpl = _template(template)
    for attr in ("RESERVED_CPU", "RESERVED_MEM"):
        if attr not in tmpl:
            tmpl.set(SingleAttribute(attr, "", normalized=True))
    cluster = Cluster(oid=world.clusters.next_oid() if oid is None else oid, name=name,
                      template=tmpl)
    return world.clusters.add(cluster)


def add_datastore(
    world: World,
    name: str,
    ds_type: str,
    *,
    ds_mad: str = "fs",
    tm_mad: str = "shared",
    cluster_ids: tuple[int, ...] = (0,),
    oid: int | None = None,
    template: str = "",
    capacity: tuple[int, int, int] = (258020, 78999, 24899),
) -> Datastore:
    """``(total_mb, free_mb, used_mb)`` in ``capacity``."""
    kind = DatastoreType[ds_type]
    tmpl = _template(template)
    tmpl.replace("TYPE", ds_type)
    confs = tm_mad_conf(world.flavour)
    conf = confs.get(tm_mad, confs["ssh"])
    snapshot_attrs = world.flavour.datastore_snapshot_attrs
    if kind == DatastoreType.SYSTEM_DS:
        ds_mad = "-"
        tmpl.replace("SHARED", "YES" if conf.get("SHARED") == "YES" else "NO")
        tmpl.replace("DS_MIGRATE", conf.get("DS_MIGRATE", "YES"))
        if snapshot_attrs:  # src/datastore/Datastore.cc:433-438 (release-7.4.0)
            tmpl.replace("DS_LIVE_MIGRATE", conf.get("DS_LIVE_MIGRATE", "NO"))
            tmpl.replace("DS_MIGRATE_SNAP", conf.get("DS_MIGRATE_SNAP", "NO"))
    else:
        tmpl.replace("DS_MAD", ds_mad)
        system = conf.get("TM_MAD_SYSTEM")
        if system:
            tmpl.replace("TM_MAD_SYSTEM", system)
            for mode in system.split(","):
                suffix = mode.strip().upper()
                for key in ("LN_TARGET_", "CLONE_TARGET_", "DISK_TYPE_"):
                    if key + suffix in conf:
                        tmpl.replace(key + suffix, conf[key + suffix])
        tmpl.replace("LN_TARGET", conf.get("LN_TARGET", "NONE"))
        tmpl.replace("CLONE_TARGET", conf.get("CLONE_TARGET", "SYSTEM"))
        if "DRIVER" in conf:
            tmpl.replace("DRIVER", conf["DRIVER"])
    tmpl.replace("TM_MAD", tm_mad)
    tmpl.replace("ALLOW_ORPHANS", conf.get("ALLOW_ORPHANS", "NO"))
    if snapshot_attrs:  # src/datastore/Datastore.cc:537-551 (release-7.4.0)
        tmpl.replace("PERSISTENT_SNAPSHOTS", conf.get("PERSISTENT_SNAPSHOTS", "YES"))
    if kind in (DatastoreType.IMAGE_DS, DatastoreType.SYSTEM_DS):
        tmpl.replace("DISK_TYPE", "FILE")
    if tmpl.get("SAFE_DIRS") is None and tmpl.get("RESTRICTED_DIRS") is None:
        tmpl.replace("SAFE_DIRS", "/var/tmp")  # noqa: S108 - oned's default, not a temp file
        tmpl.replace("RESTRICTED_DIRS", "/")
    new_oid = world.datastores.next_oid() if oid is None else oid
    location = world.ds_location if world.ds_location.endswith("/") else world.ds_location + "/"
    total, free, used = capacity if kind != DatastoreType.SYSTEM_DS else (0, 0, 0)
    ds = Datastore(
        oid=new_oid, name=name, template=tmpl, perms=Permissions.of("110100000"),
        ds_mad=ds_mad, tm_mad=tm_mad, base_path=f"{location}{new_oid}", type=kind,
        clusters=set(cluster_ids), total_mb=total, free_mb=free, used_mb=used,
    )
    world.datastores.add(ds)
    for cid in cluster_ids:
        cluster = world.clusters.get(cid)
        if cluster is not None:
            cluster.datastores.add(new_oid)
            cluster.invalidate()
    return ds


def add_host(
    world: World, name: str, vm_mad: str, cluster_id: int, *, im_mad: str | None = None,
) -> Host:
    cluster = world.clusters.get(cluster_id)
    if cluster is None:
        raise ValueError(f"cluster {cluster_id} does not exist")
    im = im_mad or vm_mad
    tmpl = Template(False)
    for key, value in (
        ("ARCH", "x86_64"), ("CPUSPEED", "3200"), ("HOSTNAME", name), ("HYPERVISOR", vm_mad),
        ("IM_MAD", im), ("KVM_CPU_FEATURES", KVM_CPU_FEATURES),
        ("KVM_CPU_MODELS", KVM_CPU_MODELS), ("MODELNAME", "Intel(R) Xeon(R) CPU @ 3.20GHz"),
        ("RESERVED_CPU", ""), ("RESERVED_MEM", ""), ("VM_MAD", vm_mad),
    ):
        tmpl.set(SingleAttribute(key, value, normalized=True))
    if world.flavour.host_probe_7x:  # the 7.4 dummy probe's memory_encryption
        tmpl.set(SingleAttribute("MEMORY_ENCRYPTION", "SEV", normalized=True))
    if world.flavour.host_keeps_totals:  # src/host/Host.cc:198-199 (release-7.4.0)
        tmpl.set(SingleAttribute("TOTALCPU", "800", normalized=True))
        tmpl.set(SingleAttribute("TOTALMEMORY", "16777216", normalized=True))
    system_ds: dict[int, tuple[int, int, int]] = {}
    if world.flavour.host_share_ds_entries:
        for ds_id in cluster.datastores:
            ds = world.datastores.get(ds_id)
            if ds is not None and ds.type == DatastoreType.SYSTEM_DS:
                system_ds[ds_id] = (78999, 258020, 24899)
    host = Host(
        oid=world.hosts.next_oid(), name=name, template=tmpl, im_mad=im, vm_mad=vm_mad,
        cluster_id=cluster_id, cluster=cluster.name,
        share_xml=host_share_xml(probe_7x=world.flavour.host_probe_7x,
                                 system_ds=system_ds),
    )
    world.hosts.add(host)
    cluster.hosts.add(host.oid)
    cluster.invalidate()
    return host


def add_market(
    world: World, name: str, market_mad: str, *, oid: int | None = None, state: int = 0,
    description: str = "", template: str = "",
) -> MarketPlace:
    tmpl = _template(template)
    tmpl.erase("STATE")
    tmpl.replace("MARKET_MAD", market_mad)
    if description:
        tmpl.replace("DESCRIPTION", description)
    market = MarketPlace(
        oid=world.markets.next_oid() if oid is None else oid, name=name, template=tmpl,
        perms=Permissions.of("111100100"), state=state, market_mad=market_mad,
    )
    return world.markets.add(market)


def add_app(
    world: World,
    market_id: int,
    *,
    name: str,
    source: str,
    md5: str,
    size_mb: int,
    regtime: int,
    description: str,
    publisher: str,
    link: str,
    apptemplate: str,
    vmtemplate: str | None,
    fmt: str = "raw",
    version: str = "1.0",
    extra: dict[str, str] | None = None,
) -> MarketPlaceApp:
    market = world.markets.get(market_id)
    if market is None:
        raise ValueError(f"marketplace {market_id} does not exist")
    app64 = base64.b64encode(apptemplate.encode()).decode("ascii")
    tmpl = Template(False)
    attrs = {"APPTEMPLATE64": app64, "DESCRIPTION": description, "IMPORT_ID": "-1",
             "LINK": link, "PUBLISHER": publisher, "VERSION": version, **(extra or {})}
    if vmtemplate is not None:
        attrs["VMTEMPLATE64"] = base64.b64encode(vmtemplate.encode()).decode("ascii")
    for key, value in attrs.items():
        if value != "":
            tmpl.set(SingleAttribute(key, value, normalized=True))
    app = MarketPlaceApp(
        oid=world.apps.next_oid(), name=name, template=tmpl, perms=Permissions.of("110100100"),
        regtime=regtime, source=source, md5=md5, size_mb=size_mb, description=description,
        version=version, format=fmt, apptemplate64=app64, market_id=market_id,
        market_name=market.name,
    )
    world.apps.add(app)
    market.apps.add(app.oid)
    market.invalidate()
    return app
