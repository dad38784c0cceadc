"""The objects oned keeps in its pools and their XML, element for element.

Element order, CDATA use and value types follow the ``to_xml`` methods of oned 6.8.3
and 7.4.0 (OpenNebula/one): ``src/image/Image.cc``, ``src/vm_template/VMTemplate.cc``,
``src/datastore/Datastore.cc``, ``src/host/Host.cc`` + ``src/host/HostShare.cc``,
``src/cluster/Cluster.cc``, ``src/market/MarketPlace.cc``,
``src/market/MarketPlaceApp.cc``, ``src/um/User.cc``, ``PoolObjectSQL::perms_to_xml`` and
``PoolObjectSQL::lock_db_to_xml`` in ``src/pool/PoolObjectSQL.cc``. Numbers are written
bare, strings that oned passes through ``one_util::escape_xml`` are CDATA, names are
written raw (oned validates them on allocation instead).

Every object caches its serialised XML; whoever mutates an object calls
:meth:`PoolObject.invalidate` (the world does this), so listing a pool of 100,000
unchanged objects only concatenates cached strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from hookd.testing.flavour import Flavour
from hookd.testing.template_lang import Template


class ImageState(IntEnum):
    """``Image::ImageState`` (``include/Image.h``)."""

    INIT = 0
    READY = 1
    USED = 2
    DISABLED = 3
    LOCKED = 4
    ERROR = 5
    CLONE = 6
    DELETE = 7
    USED_PERS = 8
    LOCKED_USED = 9
    LOCKED_USED_PERS = 10


def image_state_to_str(state: int) -> str:
    """``Image::state_to_str``: lossy for USED_PERS and LOCKED_USED_PERS."""
    if state == ImageState.USED_PERS:
        return "USED"
    if state == ImageState.LOCKED_USED_PERS:
        return "LOCKED_USED"
    return ImageState(state).name


class ImageType(IntEnum):
    """``Image::ImageType`` (``include/Image.h``; FILESYSTEM only in 7.2+)."""

    OS = 0
    CDROM = 1
    DATABLOCK = 2
    KERNEL = 3
    RAMDISK = 4
    CONTEXT = 5
    BACKUP = 6
    FILESYSTEM = 7


class DatastoreType(IntEnum):
    """``Datastore::DatastoreType`` (``include/Datastore.h``)."""

    IMAGE_DS = 0
    SYSTEM_DS = 1
    FILE_DS = 2
    BACKUP_DS = 3


class LockLevel(IntEnum):
    """``PoolObjectSQL::LockStates``."""

    NONE = 0
    USE = 1
    MANAGE = 2
    ADMIN = 3


@dataclass(slots=True)
class Permissions:
    """The nine permission bits of ``PoolObjectSQL::perms_to_xml``."""

    owner_u: int = 1
    owner_m: int = 1
    owner_a: int = 0
    group_u: int = 0
    group_m: int = 0
    group_a: int = 0
    other_u: int = 0
    other_m: int = 0
    other_a: int = 0

    def to_xml(self) -> str:
        return (
            f"<PERMISSIONS><OWNER_U>{self.owner_u}</OWNER_U><OWNER_M>{self.owner_m}</OWNER_M>"
            f"<OWNER_A>{self.owner_a}</OWNER_A><GROUP_U>{self.group_u}</GROUP_U>"
            f"<GROUP_M>{self.group_m}</GROUP_M><GROUP_A>{self.group_a}</GROUP_A>"
            f"<OTHER_U>{self.other_u}</OTHER_U><OTHER_M>{self.other_m}</OTHER_M>"
            f"<OTHER_A>{self.other_a}</OTHER_A></PERMISSIONS>"
        )

    @classmethod
    def of(cls, bits: str) -> Permissions:
        """``Permissions.of("110100000")``."""
        return cls(*(int(b) for b in bits))


@dataclass(slots=True)
class LockInfo:
    """``<LOCK>`` of a locked object."""

    level: int
    owner: int
    time: int
    req_id: int

    def to_xml(self) -> str:
        return (
            f"<LOCK><LOCKED>{self.level}</LOCKED><OWNER>{self.owner}</OWNER>"
            f"<TIME>{self.time}</TIME><REQ_ID>{self.req_id}</REQ_ID></LOCK>"
        )


def cdata(value: str) -> str:
    """``one_util::escape_xml``: CDATA with no escaping of ``]]>``."""
    return f"<![CDATA[{value}]]>"


def ids_xml(tag: str, ids: set[int]) -> str:
    """``ObjectCollection::to_xml``: ``<TAG><ID>n</ID>...</TAG>`` in ascending order."""
    return f"<{tag}>" + "".join(f"<ID>{i}</ID>" for i in sorted(ids)) + f"</{tag}>"


@dataclass(slots=True, eq=False)
class PoolObject:
    """Fields shared by every pool object."""

    oid: int
    name: str
    template: Template
    uid: int = 0
    gid: int = 0
    uname: str = "oneadmin"
    gname: str = "oneadmin"
    perms: Permissions = field(default_factory=Permissions)
    lock: LockInfo | None = None
    _xml: str | None = field(default=None, repr=False)

    def invalidate(self) -> None:
        """Forget the cached XML (call after every change)."""
        self._xml = None

    def xml(self, flavour: Flavour) -> str:
        """The object's XML as ``one.<kind>.info`` returns it (cached)."""
        cached = self._xml
        if cached is None:
            cached = self.render(flavour)
            self._xml = cached
        return cached

    def render(self, flavour: Flavour) -> str:
        raise NotImplementedError

    def lock_xml(self) -> str:
        return self.lock.to_xml() if self.lock else ""


@dataclass(slots=True, eq=False)
class Image(PoolObject):
    """``Image`` (``src/image/Image.cc``)."""

    type: int = ImageType.OS
    disk_type: int = 0
    persistent: int = 0
    regtime: int = 0
    modtime: int = 0
    source: str = ""
    path: str = ""
    format: str = ""
    fs: str = ""
    size_mb: int = 0
    state: int = ImageState.INIT
    prev_state: int = ImageState.INIT
    running_vms: int = 0
    cloning_ops: int = 0
    cloning_id: int = -1
    target_snapshot: int = -1
    ds_id: int = -1
    ds_name: str = ""
    vms: set[int] = field(default_factory=set)
    clones: set[int] = field(default_factory=set)
    app_clones: set[int] = field(default_factory=set)

    def render(self, flavour: Flavour) -> str:
        parts = [
            f"<IMAGE><ID>{self.oid}</ID><UID>{self.uid}</UID><GID>{self.gid}</GID>"
            f"<UNAME>{self.uname}</UNAME><GNAME>{self.gname}</GNAME><NAME>{self.name}</NAME>",
            self.lock_xml(),
            self.perms.to_xml(),
            f"<TYPE>{self.type}</TYPE><DISK_TYPE>{self.disk_type}</DISK_TYPE>"
            f"<PERSISTENT>{self.persistent}</PERSISTENT><REGTIME>{self.regtime}</REGTIME>",
        ]
        if flavour.image_modtime:
            parts.append(f"<MODTIME>{self.modtime}</MODTIME>")
        parts.append(
            f"<SOURCE>{cdata(self.source)}</SOURCE><PATH>{cdata(self.path)}</PATH>"
            f"<FORMAT>{cdata(self.format)}</FORMAT><FS>{cdata(self.fs)}</FS>"
            f"<SIZE>{self.size_mb}</SIZE><STATE>{self.state}</STATE>"
            f"<PREV_STATE>{self.prev_state}</PREV_STATE><RUNNING_VMS>{self.running_vms}"
            f"</RUNNING_VMS><CLONING_OPS>{self.cloning_ops}</CLONING_OPS>"
            f"<CLONING_ID>{self.cloning_id}</CLONING_ID>"
            f"<TARGET_SNAPSHOT>{self.target_snapshot}</TARGET_SNAPSHOT>"
            f"<DATASTORE_ID>{self.ds_id}</DATASTORE_ID><DATASTORE>{self.ds_name}</DATASTORE>"
        )
        parts.append(ids_xml("VMS", self.vms))
        parts.append(ids_xml("CLONES", self.clones))
        parts.append(ids_xml("APP_CLONES", self.app_clones))
        parts.append(self.template.to_xml())
        parts.append(
            "<SNAPSHOTS><ALLOW_ORPHANS><![CDATA[NO]]></ALLOW_ORPHANS>"
            "<CURRENT_BASE><![CDATA[-1]]></CURRENT_BASE>"
            "<NEXT_SNAPSHOT><![CDATA[0]]></NEXT_SNAPSHOT></SNAPSHOTS>"
            "<BACKUP_INCREMENTS></BACKUP_INCREMENTS>"
        )
        if flavour.image_backup_disk_ids:
            parts.append("<BACKUP_DISK_IDS></BACKUP_DISK_IDS>")
        parts.append("</IMAGE>")
        return "".join(parts)


@dataclass(slots=True, eq=False)
class VMTemplate(PoolObject):
    """``VMTemplate`` (``src/vm_template/VMTemplate.cc``)."""

    regtime: int = 0

    def render(self, flavour: Flavour) -> str:
        return self.render_with(self.template)

    def render_with(self, template: Template) -> str:
        """``VMTemplate::to_xml(xml, tmpl)``: used for the extended info variant."""
        return (
            f"<VMTEMPLATE><ID>{self.oid}</ID><UID>{self.uid}</UID><GID>{self.gid}</GID>"
            f"<UNAME>{self.uname}</UNAME><GNAME>{self.gname}</GNAME><NAME>{self.name}</NAME>"
            f"{self.lock_xml()}{self.perms.to_xml()}<REGTIME>{self.regtime}</REGTIME>"
            f"{template.to_xml()}</VMTEMPLATE>"
        )


@dataclass(slots=True, eq=False)
class Datastore(PoolObject):
    """``Datastore`` (``src/datastore/Datastore.cc``)."""

    ds_mad: str = "fs"
    tm_mad: str = "ssh"
    base_path: str = ""
    type: int = DatastoreType.IMAGE_DS
    disk_type: int = 0
    state: int = 0
    clusters: set[int] = field(default_factory=set)
    total_mb: int = 0
    free_mb: int = 0
    used_mb: int = 0
    images: set[int] = field(default_factory=set)

    def render(self, flavour: Flavour) -> str:
        return (
            f"<DATASTORE><ID>{self.oid}</ID><UID>{self.uid}</UID><GID>{self.gid}</GID>"
            f"<UNAME>{self.uname}</UNAME><GNAME>{self.gname}</GNAME><NAME>{self.name}</NAME>"
            f"{self.perms.to_xml()}<DS_MAD>{cdata(self.ds_mad)}</DS_MAD>"
            f"<TM_MAD>{cdata(self.tm_mad)}</TM_MAD><BASE_PATH>{cdata(self.base_path)}"
            f"</BASE_PATH><TYPE>{self.type}</TYPE><DISK_TYPE>{self.disk_type}</DISK_TYPE>"
            f"<STATE>{self.state}</STATE>{ids_xml('CLUSTERS', self.clusters)}"
            f"<TOTAL_MB>{self.total_mb}</TOTAL_MB><FREE_MB>{self.free_mb}</FREE_MB>"
            f"<USED_MB>{self.used_mb}</USED_MB>{ids_xml('IMAGES', self.images)}"
            f"{self.template.to_xml()}</DATASTORE>"
        )


@dataclass(slots=True, eq=False)
class Host(PoolObject):
    """``Host`` (``src/host/Host.cc``); ``share_xml`` is the ``<HOST_SHARE>`` element."""

    state: int = 2
    prev_state: int = 2
    im_mad: str = "kvm"
    vm_mad: str = "kvm"
    cluster_id: int = 0
    cluster: str = "default"
    share_xml: str = ""
    vms: set[int] = field(default_factory=set)

    def render(self, flavour: Flavour) -> str:
        return (
            f"<HOST><ID>{self.oid}</ID><NAME>{self.name}</NAME><STATE>{self.state}</STATE>"
            f"<PREV_STATE>{self.prev_state}</PREV_STATE><IM_MAD>{cdata(self.im_mad)}</IM_MAD>"
            f"<VM_MAD>{cdata(self.vm_mad)}</VM_MAD><CLUSTER_ID>{self.cluster_id}</CLUSTER_ID>"
            f"<CLUSTER>{self.cluster}</CLUSTER>{self.share_xml}{ids_xml('VMS', self.vms)}"
            f"{self.template.to_xml()}<MONITORING/></HOST>"
        )


@dataclass(slots=True, eq=False)
class Cluster(PoolObject):
    """``Cluster`` (``src/cluster/Cluster.cc``; 7.4 appends an optional ``<PLAN>``)."""

    hosts: set[int] = field(default_factory=set)
    datastores: set[int] = field(default_factory=set)
    vnets: set[int] = field(default_factory=set)

    def render(self, flavour: Flavour) -> str:
        return (
            f"<CLUSTER><ID>{self.oid}</ID><NAME>{self.name}</NAME>"
            f"{ids_xml('HOSTS', self.hosts)}{ids_xml('DATASTORES', self.datastores)}"
            f"{ids_xml('VNETS', self.vnets)}{self.template.to_xml()}</CLUSTER>"
        )


@dataclass(slots=True, eq=False)
class MarketPlace(PoolObject):
    """``MarketPlace`` (``src/market/MarketPlace.cc``); STATE 0 enabled, 1 disabled."""

    state: int = 0
    market_mad: str = "one"
    zone_id: str = "0"
    total_mb: int = 0
    free_mb: int = 0
    used_mb: int = 0
    apps: set[int] = field(default_factory=set)

    def render(self, flavour: Flavour) -> str:
        return (
            f"<MARKETPLACE><ID>{self.oid}</ID><UID>{self.uid}</UID><GID>{self.gid}</GID>"
            f"<UNAME>{self.uname}</UNAME><GNAME>{self.gname}</GNAME><NAME>{self.name}</NAME>"
            f"<STATE>{self.state}</STATE><MARKET_MAD>{cdata(self.market_mad)}</MARKET_MAD>"
            f"<ZONE_ID>{cdata(self.zone_id)}</ZONE_ID><TOTAL_MB>{self.total_mb}</TOTAL_MB>"
            f"<FREE_MB>{self.free_mb}</FREE_MB><USED_MB>{self.used_mb}</USED_MB>"
            f"{ids_xml('MARKETPLACEAPPS', self.apps)}{self.perms.to_xml()}"
            f"{self.template.to_xml()}</MARKETPLACE>"
        )


@dataclass(slots=True, eq=False)
class MarketPlaceApp(PoolObject):
    """``MarketPlaceApp`` (``src/market/MarketPlaceApp.cc``); STATE 1 READY, TYPE 1 IMAGE."""

    regtime: int = 0
    zone_id: str = "0"
    origin_id: str = "-1"
    source: str = ""
    md5: str = ""
    size_mb: int = 0
    description: str = ""
    version: str = "1.0"
    format: str = "raw"
    apptemplate64: str = ""
    market_id: int = 0
    market_name: str = ""
    state: int = 1
    type: int = 1

    def render(self, flavour: Flavour) -> str:
        return (
            f"<MARKETPLACEAPP><ID>{self.oid}</ID><UID>{self.uid}</UID><GID>{self.gid}</GID>"
            f"<UNAME>{self.uname}</UNAME><GNAME>{self.gname}</GNAME>{self.lock_xml()}"
            f"<REGTIME>{self.regtime}</REGTIME><NAME>{self.name}</NAME>"
            f"<ZONE_ID>{cdata(self.zone_id)}</ZONE_ID>"
            f"<ORIGIN_ID>{cdata(self.origin_id)}</ORIGIN_ID><SOURCE>{cdata(self.source)}"
            f"</SOURCE><MD5>{cdata(self.md5)}</MD5><SIZE>{self.size_mb}</SIZE>"
            f"<DESCRIPTION>{cdata(self.description)}</DESCRIPTION>"
            f"<VERSION>{cdata(self.version)}</VERSION><FORMAT>{cdata(self.format)}</FORMAT>"
            f"<APPTEMPLATE64>{cdata(self.apptemplate64)}</APPTEMPLATE64>"
            f"<MARKETPLACE_ID>{self.market_id}</MARKETPLACE_ID>"
            f"<MARKETPLACE>{self.market_name}</MARKETPLACE><STATE>{self.state}</STATE>"
            f"<TYPE>{self.type}</TYPE>{self.perms.to_xml()}{self.template.to_xml()}"
            "</MARKETPLACEAPP>"
        )


@dataclass(slots=True, eq=False)
class User(PoolObject):
    """``User::to_xml_extended`` (``src/um/User.cc``) with empty quotas."""

    password: str = ""
    auth_driver: str = "core"
    enabled: int = 1
    groups: set[int] = field(default_factory=lambda: {0})

    def render(self, flavour: Flavour) -> str:
        quotas = (
            "<DATASTORE_QUOTA></DATASTORE_QUOTA><NETWORK_QUOTA></NETWORK_QUOTA>"
            "<VM_QUOTA></VM_QUOTA><IMAGE_QUOTA></IMAGE_QUOTA>"
        )
        return (
            f"<USER><ID>{self.oid}</ID><GID>{self.gid}</GID>{ids_xml('GROUPS', self.groups)}"
            f"<GNAME>{self.gname}</GNAME><NAME>{self.name}</NAME>"
            f"<PASSWORD>{cdata(self.password)}</PASSWORD>"
            f"<AUTH_DRIVER>{cdata(self.auth_driver)}</AUTH_DRIVER>"
            f"<ENABLED>{self.enabled}</ENABLED>{self.template.to_xml()}"
            f"{quotas}<DEFAULT_USER_QUOTAS>{quotas}</DEFAULT_USER_QUOTAS></USER>"
        )
