"""What every per-hypervisor handler receives, and helpers they share."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from handlers.disks import DiskRef, disks
from handlers.facts import ImageFacts, VmTemplateFacts
from handlers.model import AttrPath, KernelChoice, PlannerSettings, Want, World
from handlers.plan import VECTOR_PREFIX, short_hash
from handlers.template import REMOVE, Template, Vector, WriteValue


@dataclass(frozen=True, slots=True)
class HandlerInput:
    image: ImageFacts
    template: VmTemplateFacts
    hypervisor: str
    disk_index: int  # the DISK that holds the image and must be the root disk
    is_boot_disk: bool  # True when the drivers' own rule already makes it the root disk
    world: World
    settings: PlannerSettings
    record: Mapping[str, str]  # the template's HOOKD vector: what hookd wrote before

    @property
    def disks(self) -> list[DiskRef]:
        return disks(self.template)

    def current(self, path: AttrPath) -> str | None:
        return current_value(self.template, path)

    def person_value(self, path: AttrPath) -> str | None:
        """The current value when a person set it (not hookd), else None."""
        value = self.current(path)
        if value is None or value == "":
            return None
        if self.record.get(path.record_key) == short_hash(value):  # hookd's own value
            return None
        return value


def current_value(template: VmTemplateFacts, path: AttrPath) -> str | None:
    """The value at ``path``; a top-level vector as :func:`encode_vector` writes it."""
    tmpl = template.template
    if path.vector is None:
        single = tmpl.get(path.name)
        if single is not None:
            return single
        whole = tmpl.vector(path.name)
        return encode_vector(whole) if whole is not None else None
    if path.index is None:
        vec = tmpl.vector(path.vector)
        return vec.get(path.name) if vec is not None else None
    vectors = tmpl.vectors(path.vector)
    if path.index >= len(vectors):
        return None
    return vectors[path.index].get(path.name)


def rebuilt(template: Template, values: Iterable[tuple[AttrPath, str | None]],
            single: Callable[[str], WriteValue]) -> list[tuple[str, tuple[WriteValue, ...]]]:
    """The whole top-level attributes of a merge update that puts each value at its path
    (None removes it; ``single`` turns a top-level value into what is written) and keeps
    everything else of the vectors it touches; a vector left empty is removed."""
    singles: dict[str, WriteValue] = {}
    vectors: dict[str, Vector] = {}
    indexed: dict[str, list[Vector]] = {}
    for path, value in values:
        if path.vector is None:
            singles[path.name] = REMOVE if value is None else single(value)
        elif path.index is None:
            base = vectors.get(path.vector, template.vector(path.vector) or Vector())
            vectors[path.vector] = base.set(path.name, value)
        else:
            group = indexed.setdefault(path.vector, list(template.vectors(path.vector)))
            if path.index < len(group):
                group[path.index] = group[path.index].set(path.name, value)
    attributes: list[tuple[str, tuple[WriteValue, ...]]] = []
    attributes += [(name, (value,)) for name, value in singles.items()]
    attributes += [(name, (vector if vector else REMOVE,)) for name, vector in vectors.items()]
    attributes += [(name, tuple(group)) for name, group in indexed.items()]
    return attributes


def encode_vector(vector: Vector) -> str:
    """A whole vector as one string, to compare, hash and keep in hookd's record."""
    return VECTOR_PREFIX + json.dumps(list(vector.items), separators=(",", ":"))


def decode_value(value: str) -> str | Vector:
    """The inverse of :func:`encode_vector` (plain strings pass through)."""
    if value.startswith(VECTOR_PREFIX):
        items = json.loads(value[len(VECTOR_PREFIX):])
        return Vector(tuple((str(k), str(v)) for k, v in items))
    return value


OS_KERNEL_DS = AttrPath("OS", "KERNEL_DS")
OS_INITRD_DS = AttrPath("OS", "INITRD_DS")
OS_ROOT = AttrPath("OS", "ROOT")
OS_KERNEL_CMD = AttrPath("OS", "KERNEL_CMD")
OS_BOOT = AttrPath("OS", "BOOT")
SCHED_REQUIREMENTS = AttrPath(None, "SCHED_REQUIREMENTS")
START_SCRIPT_BASE64 = AttrPath("CONTEXT", "START_SCRIPT_BASE64")


def kernel_want(kernel: KernelChoice, path: AttrPath = OS_KERNEL_DS) -> Want:
    return Want(path, kernel.file_ref, "set")


def boot_want(inp: HandlerInput) -> list[Want]:
    """Make our disk the root for drivers that root the first disk or OS/BOOT's first entry."""
    if inp.is_boot_disk:
        return []
    os_vec = inp.template.template.vector("OS") or Vector()
    boot = os_vec.get("BOOT") or ""
    rest = [entry.strip() for entry in boot.split(",")
            if entry.strip() and entry.strip().lower() != f"disk{inp.disk_index}"]
    value = ",".join([f"disk{inp.disk_index}", *rest[1:]] if rest else [f"disk{inp.disk_index}"])
    return [Want(OS_BOOT, value, "merge")]


def usable_kernel(hypervisor: str, world: World) -> KernelChoice | str:
    """The usable kernel for a kernel-needing hypervisor, or why it must wait."""
    key = "kvm" if hypervisor in ("kvm", "qemu") else hypervisor
    kernel = world.kernels.get(key)
    if kernel is None:
        problem = world.kernel_problems.get(key)
        if problem:
            return f"waiting for a {key} kernel: {problem}"
        return f"waiting for a {key} kernel (set kernels.{key} in hookd.conf)"
    if not kernel.usable:
        return f"waiting for a {key} kernel: {kernel.reason}"
    return kernel
