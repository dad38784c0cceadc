"""Facts about oned's objects as plain immutable values (parsed by hookd.documents).

Names and enum values follow OpenNebula's own serialisation (``Image::to_xml`` in
src/image/Image.cc, ``include/Image.h``, ``include/Datastore.h``,
``MarketPlaceApp::to_xml`` in src/market/MarketPlaceApp.cc).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from handlers.template import Template

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


@dataclass(frozen=True, slots=True)
class ImageFacts:
    id: int
    name: str
    uid: int
    uname: str
    type: int
    state: int
    datastore_id: int
    datastore: str
    path: str
    source: str
    template: Template = field(default_factory=Template)

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


@dataclass(frozen=True, slots=True)
class DatastoreFacts:
    id: int
    name: str
    type: int
    cluster_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HostFacts:
    id: int
    name: str
    vm_mad: str
    cluster_id: int


@dataclass(frozen=True, slots=True)
class MarketFacts:
    id: int
    name: str
    market_mad: str


@dataclass(frozen=True, slots=True)
class AppFacts:
    id: int
    name: str
    market_id: int
    source: str
    # The VM template the app's export creates (VMTEMPLATE64), as oned would store it; None
    # when the app has none or it cannot be read.
    vm_template: Template | None = None
