"""Which VM templates use which image, kept fresh from sweeps and API events.

A lookup costs O(templates of that image), never a scan of the template pool. DISK
references follow ``VirtualMachineDisk::get_image_id``/``get_uid`` (src/vm/VirtualMachineDisk.cc):
``IMAGE_ID`` wins; otherwise ``IMAGE`` (a name) owned by ``IMAGE_UID``, else ``IMAGE_UNAME``,
else the VM owner (the template owner is hookd's proxy for the future VM owner).

Memory matters at 100,000 templates: references are stored as small tuples and template-id
sets as ints until a second template shares the key.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from handlers.facts import ImageFacts, VmTemplateFacts
from handlers.template import Vector

# A reference key: ("i", image_id) | ("u", name, uid) | ("n", name, uname)
Key = tuple[str, int] | tuple[str, str, int] | tuple[str, str, str]


def template_refs(template: VmTemplateFacts) -> tuple[Key, ...]:
    return disk_refs(template.template.vectors("DISK"), template.uid)


def disk_refs(disks: Iterable[Vector], owner_uid: int) -> tuple[Key, ...]:
    """The references of a template's DISK vectors (``owner_uid``: the template's UID)."""
    refs: list[Key] = []
    for disk in disks:
        image_id = (disk.get("IMAGE_ID") or "").strip()
        if image_id:
            if image_id.isdigit():
                refs.append(("i", int(image_id)))
            continue
        name = disk.get("IMAGE")
        if not name:
            continue
        uid = (disk.get("IMAGE_UID") or "").strip()
        uname = disk.get("IMAGE_UNAME")
        if uid:
            if uid.isdigit():
                refs.append(("u", name, int(uid)))
        elif uname:
            refs.append(("n", name, uname))
        else:
            refs.append(("u", name, owner_uid))
    return tuple(dict.fromkeys(refs))


@dataclass(frozen=True, slots=True)
class KnownImage:
    name: str
    uid: int
    uname: str


class TemplateIndex:
    """Thread-safe reverse index: image reference -> template ids."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[Key, int | set[int]] = {}
        self._refs: dict[int, tuple[Key, ...]] = {}
        self._images: dict[int, KnownImage] = {}
        self._names: dict[Key, int] = {}
        self._seen: set[int] | None = None

    # -- templates ---------------------------------------------------------------------
    def put(self, template: VmTemplateFacts) -> tuple[Key, ...]:
        return self.put_refs(template.id, template_refs(template))

    def put_refs(self, template_id: int, refs: tuple[Key, ...]) -> tuple[Key, ...]:
        """:meth:`put` for a template whose references were read already (:func:`disk_refs`)."""
        with self._lock:
            old = self._refs.get(template_id, ())
            if old != refs:
                for key in old:
                    self._discard(key, template_id)
                for key in refs:
                    self._add(key, template_id)
                if refs:
                    self._refs[template_id] = refs
                else:
                    self._refs.pop(template_id, None)
            if self._seen is not None:
                self._seen.add(template_id)
        return refs

    def remove(self, template_id: int) -> None:
        with self._lock:
            for key in self._refs.pop(template_id, ()):
                self._discard(key, template_id)

    def _add(self, key: Key, template_id: int) -> None:
        current = self._by_key.get(key)
        if current is None:
            self._by_key[key] = template_id
        elif isinstance(current, int):
            if current != template_id:
                self._by_key[key] = {current, template_id}
        else:
            current.add(template_id)

    def _discard(self, key: Key, template_id: int) -> None:
        current = self._by_key.get(key)
        if current is None:
            return
        if isinstance(current, int):
            if current == template_id:
                del self._by_key[key]
            return
        current.discard(template_id)
        if len(current) == 1:
            self._by_key[key] = next(iter(current))
        elif not current:
            del self._by_key[key]

    def templates_for(self, image_id: int, name: str, uid: int, uname: str) -> list[int]:
        out: set[int] = set()
        with self._lock:
            for key in (("i", image_id), ("u", name, uid), ("n", name, uname)):
                value = self._by_key.get(key)
                if isinstance(value, int):
                    out.add(value)
                elif value is not None:
                    out.update(value)
        return sorted(out)

    def templates_for_image(self, image: ImageFacts) -> list[int]:
        return self.templates_for(image.id, image.name, image.uid, image.uname)

    def disk_image_ids(self, template_ids: Iterable[int]) -> set[int]:
        """The images the templates' disks use, as last seen (by ID, or by name for images
        the index knows)."""
        with self._lock:
            refs = [key for tid in template_ids for key in self._refs.get(tid, ())]
        return set(self.resolve(refs))

    def __len__(self) -> int:
        with self._lock:
            return len(self._refs)

    # -- full rebuilds by a sweep --------------------------------------------------------
    def begin_sweep(self) -> None:
        with self._lock:
            self._seen = set()

    def end_sweep(self) -> list[int]:
        """Forget templates the sweep did not see (deleted while no event told us)."""
        with self._lock:
            seen = self._seen or set()
            self._seen = None
            gone = [tid for tid in self._refs if tid not in seen]
            for tid in gone:
                for key in self._refs.pop(tid, ()):
                    self._discard(key, tid)
            return gone

    # -- images worth resolving by name ----------------------------------------------------
    def remember_image(self, image_id: int, name: str, uid: int, uname: str) -> None:
        with self._lock:
            self._forget_locked(image_id)
            self._images[image_id] = KnownImage(name, uid, uname)
            self._names[("u", name, uid)] = image_id
            self._names[("n", name, uname)] = image_id

    def forget_image(self, image_id: int) -> None:
        with self._lock:
            self._forget_locked(image_id)

    def _forget_locked(self, image_id: int) -> None:
        old = self._images.pop(image_id, None)
        if old is not None:
            for key in (("u", old.name, old.uid), ("n", old.name, old.uname)):
                if self._names.get(key) == image_id:
                    del self._names[key]

    def resolve(self, refs: Iterable[Key]) -> list[int]:
        """Image ids a template's references point to (by-name refs: known images only)."""
        out: set[int] = set()
        with self._lock:
            for key in refs:
                if key[0] == "i":
                    out.add(int(key[1]))
                elif key in self._names:
                    out.add(self._names[key])
        return sorted(out)
