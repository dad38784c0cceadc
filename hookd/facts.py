"""Facts about oned objects: plain immutable values parsed from oned's XML.

Element names and enum values follow OpenNebula's own serialisation (``Image::to_xml`` in
src/image/Image.cc, ``include/Image.h``, ``include/Datastore.h``, ``include/RaftManager.h``,
``MarketPlaceApp::to_xml`` in src/market/MarketPlaceApp.cc). Parsing is pure: XML element
in, value out; a document that lacks an element hookd relies on raises
:class:`MalformedObject` (permanent: the object is not what oned would send).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lxml import etree

from hookd.errors import PermanentError
from hookd.template import Template

# include/Image.h: ImageState (the same in 6.0.0 .. 7.4.0)
IMAGE_STATES = {
    0: "INIT", 1: "READY", 2: "USED", 3: "DISABLED", 4: "LOCKED", 5: "ERROR", 6: "CLONE",
    7: "DELETE", 8: "USED_PERS", 9: "LOCKED_USED", 10: "LOCKED_USED_PERS",
}
READY, USED, USED_PERS = 1, 2, 8
# include/Image.h: ImageType; BACKUP (6) since 6.6, FILESYSTEM (7) since 7.2.
IMAGE_TYPES = {
    0: "OS", 1: "CDROM", 2: "DATABLOCK", 3: "KERNEL", 4: "RAMDISK", 5: "CONTEXT", 6: "BACKUP",
    7: "FILESYSTEM",
}
TYPE_OS, TYPE_CDROM, TYPE_DATABLOCK, TYPE_KERNEL, TYPE_RAMDISK = 0, 1, 2, 3, 4
# include/Datastore.h: DatastoreType
DS_IMAGE, DS_SYSTEM, DS_FILE = 0, 1, 2
# include/RaftManager.h: State
RAFT_STATES = {0: "SOLO", 1: "CANDIDATE", 2: "FOLLOWER", 3: "LEADER"}


class MalformedObject(PermanentError):
    """An XML document does not have the shape oned gives it."""


class _Children:
    """An element's direct children by tag (the first of each), for objects read by the
    hundred thousand in a sweep: one pass instead of a linear ``find`` per field."""

    __slots__ = ("_kids", "tag")

    def __init__(self, el: etree._Element) -> None:
        self.tag = el.tag
        kids: dict[str, etree._Element] = {}
        for child in el:
            tag = child.tag
            if isinstance(tag, str) and tag not in kids:
                kids[tag] = child
        self._kids = kids

    def find(self, name: str) -> etree._Element | None:
        return self._kids.get(name)


def _text(el: etree._Element | _Children, name: str, default: str | None = None) -> str:
    child = el.find(name)
    if child is None:
        if default is None:
            raise MalformedObject(f"<{el.tag}> has no <{name}>")
        return default
    return child.text or ""


def _int(el: etree._Element | _Children, name: str, default: int | None = None) -> int:
    child = el.find(name)
    if child is None or child.text is None:
        if default is None:
            raise MalformedObject(f"<{el.tag}> has no numeric <{name}>")
        return default
    try:
        return int(child.text.strip())
    except ValueError:
        raise MalformedObject(f"<{el.tag}>/<{name}> is not an integer") from None


def _ids(el: etree._Element, name: str) -> tuple[int, ...]:
    parent = el.find(name)
    if parent is None:
        return ()
    out: list[int] = []
    for child in parent.findall("ID"):
        try:
            out.append(int((child.text or "").strip()))
        except ValueError:
            raise MalformedObject(f"<{el.tag}>/<{name}> holds a non-numeric ID") from None
    return tuple(out)


def _expect(el: etree._Element, tag: str) -> None:
    if el.tag != tag:
        raise MalformedObject(f"expected <{tag}>, got <{el.tag}>")


@dataclass(frozen=True, slots=True)
class ImageFacts:
    id: int
    name: str
    uid: int
    uname: str
    type: int
    state: int
    prev_state: int
    datastore_id: int
    datastore: str
    path: str
    source: str
    persistent: bool
    template: Template = field(default_factory=Template)
    locked: bool = False

    @classmethod
    def from_element(cls, el: etree._Element) -> ImageFacts:
        _expect(el, "IMAGE")
        f = _Children(el)
        lock = f.find("LOCK")
        return cls(
            id=_int(f, "ID"),
            name=_text(f, "NAME"),
            uid=_int(f, "UID"),
            uname=_text(f, "UNAME", ""),
            type=_int(f, "TYPE"),
            state=_int(f, "STATE"),
            prev_state=_int(f, "PREV_STATE", -1),
            datastore_id=_int(f, "DATASTORE_ID"),
            datastore=_text(f, "DATASTORE", ""),
            path=_text(f, "PATH", ""),
            source=_text(f, "SOURCE", ""),
            persistent=_text(f, "PERSISTENT", "0").strip() == "1",
            template=Template.from_element(f.find("TEMPLATE")),
            locked=lock is not None and _int(lock, "LOCKED", 0) > 0,
        )

    @property
    def type_name(self) -> str:
        return IMAGE_TYPES.get(self.type, str(self.type))

    @property
    def state_name(self) -> str:
        return IMAGE_STATES.get(self.state, str(self.state))

    @property
    def from_app(self) -> int | None:
        value = self.template.get("FROM_APP")
        if value is None or not value.strip().lstrip("-").isdigit():
            return None
        return int(value.strip())

    @property
    def usable(self) -> bool:
        """READY, or in use by VMs (templates created later must still be fixed)."""
        return self.state in (READY, USED, USED_PERS)


@dataclass(frozen=True, slots=True)
class VmTemplateFacts:
    id: int
    name: str
    uid: int
    uname: str
    template: Template = field(default_factory=Template)

    @classmethod
    def from_element(cls, el: etree._Element) -> VmTemplateFacts:
        _expect(el, "VMTEMPLATE")
        f = _Children(el)
        return cls(
            id=_int(f, "ID"),
            name=_text(f, "NAME"),
            uid=_int(f, "UID"),
            uname=_text(f, "UNAME", ""),
            template=Template.from_element(f.find("TEMPLATE")),
        )


@dataclass(frozen=True, slots=True)
class DatastoreFacts:
    id: int
    name: str
    type: int
    ds_mad: str
    tm_mad: str
    cluster_ids: tuple[int, ...]
    base_path: str

    @classmethod
    def from_element(cls, el: etree._Element) -> DatastoreFacts:
        _expect(el, "DATASTORE")
        return cls(
            id=_int(el, "ID"),
            name=_text(el, "NAME"),
            type=_int(el, "TYPE"),
            ds_mad=_text(el, "DS_MAD", ""),
            tm_mad=_text(el, "TM_MAD", ""),
            cluster_ids=_ids(el, "CLUSTERS"),
            base_path=_text(el, "BASE_PATH", ""),
        )


@dataclass(frozen=True, slots=True)
class HostFacts:
    id: int
    name: str
    vm_mad: str
    im_mad: str
    cluster_id: int
    state: int
    template: Template = field(default_factory=Template)

    @classmethod
    def from_element(cls, el: etree._Element) -> HostFacts:
        _expect(el, "HOST")
        return cls(
            id=_int(el, "ID"),
            name=_text(el, "NAME"),
            vm_mad=_text(el, "VM_MAD", "").strip().lower(),
            im_mad=_text(el, "IM_MAD", "").strip().lower(),
            cluster_id=_int(el, "CLUSTER_ID", -1),
            state=_int(el, "STATE", 0),
            template=Template.from_element(el.find("TEMPLATE")),
        )


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    id: int
    name: str
    host_ids: tuple[int, ...]
    datastore_ids: tuple[int, ...]

    @classmethod
    def from_element(cls, el: etree._Element) -> ClusterFacts:
        _expect(el, "CLUSTER")
        return cls(
            id=_int(el, "ID"),
            name=_text(el, "NAME"),
            host_ids=_ids(el, "HOSTS"),
            datastore_ids=_ids(el, "DATASTORES"),
        )


@dataclass(frozen=True, slots=True)
class MarketFacts:
    id: int
    name: str
    market_mad: str

    @classmethod
    def from_element(cls, el: etree._Element) -> MarketFacts:
        _expect(el, "MARKETPLACE")
        return cls(
            id=_int(el, "ID"),
            name=_text(el, "NAME"),
            market_mad=_text(el, "MARKET_MAD", "").strip().lower(),
        )


@dataclass(frozen=True, slots=True)
class AppFacts:
    id: int
    name: str
    market_id: int
    source: str

    @classmethod
    def from_element(cls, el: etree._Element) -> AppFacts:
        _expect(el, "MARKETPLACEAPP")
        return cls(
            id=_int(el, "ID"),
            name=_text(el, "NAME"),
            market_id=_int(el, "MARKETPLACE_ID"),
            source=_text(el, "SOURCE", ""),
        )


@dataclass(frozen=True, slots=True)
class RaftFacts:
    server_id: int
    state: int

    @classmethod
    def from_element(cls, el: etree._Element) -> RaftFacts:
        _expect(el, "RAFT")
        return cls(server_id=_int(el, "SERVER_ID"), state=_int(el, "STATE"))

    @property
    def state_name(self) -> str:
        return RAFT_STATES.get(self.state, str(self.state))

    @property
    def ha_enabled(self) -> bool:
        # A solo oned reports SERVER_ID -1 and STATE 0 (recorded on 6.8.3).
        return not (self.server_id < 0 and self.state == 0)

    @property
    def may_act(self) -> bool:
        """Only the leader writes; with HA off the single oned is in charge."""
        return not self.ha_enabled or self.state == 3


def iter_pool(root: etree._Element, pool_tag: str, item_tag: str) -> Iterator[etree._Element]:
    _expect(root, pool_tag)
    for child in root:
        if child.tag == item_tag:
            yield child
