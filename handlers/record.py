"""The HOOKD vector hookd keeps on every template it fixed.

It says for which image and hypervisor hookd fixed the template, holds a short hash of every
value hookd owns (so a value a person changed later is recognised and kept), and, for each
value hookd changed while something was already there, that earlier value (so a wrong fix
can be undone exactly)::

    HOOKD=[ VERSION="2", IMAGE_ID="12", HYPERVISOR="kvm",
            H_OS_ROOT="<hash>", H_OS_KERNEL_CMD="<hash>", W_OS_KERNEL_CMD="console=tty0", ... ]

A key names the attribute the way :attr:`handlers.model.AttrPath.record_key` does
(``OS_ROOT``, ``DISK0_DEV_PREFIX``, ``CONTEXT_START_SCRIPT_BASE64``, ``SCHED_REQUIREMENTS``).
Version 1 (hookd before this format) kept the hashes under bare keys and no earlier values;
it is read as such and rewritten as version 2 by the next fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from handlers.model import AttrPath
from handlers.plan import short_hash
from handlers.template import Vector

RECORD_ATTR = "HOOKD"
VERSION = "2"
_HASH = "H_"
_WAS = "W_"
_META = frozenset({"VERSION", "IMAGE_ID", "HYPERVISOR"})
# The vectors hookd writes into; everything else in a record key is a single attribute.
_VECTOR_KEY = re.compile(r"^(OS|CONTEXT)_(.+)$")
_INDEXED_KEY = re.compile(r"^(DISK)(\d{1,4})_(.+)$")


def path_of(key: str) -> AttrPath:
    """The attribute a record key stands for (the inverse of ``AttrPath.record_key`` for the
    attributes hookd writes)."""
    match = _INDEXED_KEY.match(key)
    if match is not None:
        return AttrPath(match.group(1), match.group(3), int(match.group(2)))
    match = _VECTOR_KEY.match(key)
    if match is not None:
        return AttrPath(match.group(1), match.group(2))
    return AttrPath(None, key)


@dataclass(frozen=True, slots=True)
class Record:
    image_id: int | None = None
    hypervisor: str = ""
    hashes: Mapping[str, str] = field(default_factory=dict)  # record key -> short hash
    was: Mapping[str, str] = field(default_factory=dict)  # record key -> earlier value
    version: str = VERSION

    @classmethod
    def read(cls, vector: Vector | None) -> Record:
        if vector is None:
            return cls()
        values = vector.as_dict()
        image = (values.get("IMAGE_ID") or "").strip()
        version = (values.get("VERSION") or "1").strip()
        hashes: dict[str, str] = {}
        was: dict[str, str] = {}
        for key, value in values.items():
            if key in _META:
                continue
            if version == "1":
                hashes[key] = value
            elif key.startswith(_HASH):
                hashes[key[len(_HASH):]] = value
            elif key.startswith(_WAS):
                was[key[len(_WAS):]] = value
        return cls(int(image) if image.isdigit() else None, values.get("HYPERVISOR") or "",
                   hashes, was, version)

    def before_hookd(self, key: str, current: str | None) -> str | None:
        """What the attribute was before hookd changed it, when ``current`` is still exactly
        hookd's value and the record knows (version 2); else ``current``."""
        if self.version == "1" or self.hashes.get(key) != short_hash(current):
            return current
        return self.was.get(key)

    def to_vector(self) -> Vector:
        items: list[tuple[str, str]] = [("VERSION", VERSION)]
        if self.image_id is not None:
            items.append(("IMAGE_ID", str(self.image_id)))
        if self.hypervisor:
            items.append(("HYPERVISOR", self.hypervisor))
        items += [(_HASH + key, value) for key, value in sorted(self.hashes.items())]
        items += [(_WAS + key, value) for key, value in sorted(self.was.items())]
        return Vector(tuple(items))
