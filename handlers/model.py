"""Inputs and outputs of the pure planning core.

Everything a handler may look at is in :class:`World` and the facts it carries; everything it
may decide is in :class:`HandlerResult`. Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from handlers.facts import AppFacts, DatastoreFacts, HostFacts, ImageFacts, MarketFacts
from handlers.plan import Status

# The hypervisor names OpenNebula uses as VM_MAD (and as HYPERVISOR in host templates).
# qemu is the KVM driver without acceleration; lxd is 6.x's LXD driver (host kernel, like lxc).
KERNEL_HYPERVISORS = frozenset({"kvm", "qemu", "firecracker"})


@dataclass(frozen=True, slots=True)
class KernelChoice:
    """A configured kernel (or initrd) as checked against oned and, if readable, its file."""

    image_id: int
    name: str
    usable: bool
    reason: str = ""
    warnings: tuple[str, ...] = ()
    owner: str = ""
    datastore: str = ""

    @property
    def file_ref(self) -> str:
        # The $FILE[IMAGE_ID=n] form oned resolves at instantiation
        # (VirtualMachine::set_os_file, src/vm/VirtualMachineParser.cc).
        return f"$FILE[IMAGE_ID={self.image_id}]"


@dataclass(frozen=True, slots=True)
class OciProcessFacts:
    """What the image config says to run (filled from handlers.start_script.OciProcess)."""

    script: str  # the START_SCRIPT hookd would inject (already rendered by the pure builder)
    config_digest: str | None
    source: str  # "registry:<host>", "docker-engine", "one_entrypoint"
    note: str = ""  # why this source (e.g. the registry failure behind a fallback)


@dataclass(frozen=True, slots=True)
class OciProblem:
    """Why no script can be built (permanent): shown in the image status."""

    reason: str


@dataclass(frozen=True, slots=True)
class OciUnavailable:
    """The image was fixed from its real config (``config_digest``), which cannot be read
    now: a START_SCRIPT hookd installed from it stays, and the fallback is never used."""

    reason: str
    config_digest: str


OciFacts = OciProcessFacts | OciProblem | OciUnavailable


@dataclass(frozen=True, slots=True)
class World:
    """The slice of the cloud one image's plan depends on."""

    one_version: tuple[int, int, int] = (6, 8, 0)
    default_dev_prefix: str = "sd"
    default_cdrom_prefix: str = "hd"
    datastore: DatastoreFacts | None = None
    hosts: tuple[HostFacts, ...] = ()  # hosts in the clusters of the image's datastore
    app: AppFacts | None = None
    market: MarketFacts | None = None
    kernels: Mapping[str, KernelChoice | None] = field(default_factory=dict)
    initrds: Mapping[str, KernelChoice | None] = field(default_factory=dict)
    kernel_problems: Mapping[str, str] = field(default_factory=dict)
    disk_images: Mapping[int, ImageFacts] = field(default_factory=dict)  # other images, by ID
    oci: OciFacts | None = None


StartScriptPolicy = Literal["keep", "append"]


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    prefer: tuple[str, ...] = ("lxc", "firecracker", "kvm")
    pin: bool = True
    retarget: bool = True  # the export's LXC template to KVM where nothing else runs it
    datastore_overrides: Mapping[int, str] = field(default_factory=dict)
    cluster_overrides: Mapping[int, str] = field(default_factory=dict)
    scope_datastores: frozenset[int] = frozenset()  # empty: every datastore
    # OpenNebula's KVM driver writes no serial device into the domain, only the graphics
    # (VNC) console: that is tty0 (src/vmm/LibVirtDriverKVM.cc 6.8.3, 7.4.0; measured on
    # both). Firecracker's console is its 8250 serial port: ttyS0.
    kvm_cmdline: tuple[str, ...] = ("rw", "console=tty0")
    firecracker_cmdline: tuple[str, ...] = (
        # OpenNebula's Firecracker driver docs (firecracker_driver.rst, 6.8) example.
        "console=ttyS0", "reboot=k", "panic=1", "pci=off",
        "i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd",
    )
    start_script: bool = True
    start_script_policy: StartScriptPolicy = "keep"
    opt_attribute: str = "HOOKD_MANAGE"


@dataclass(frozen=True, slots=True)
class AttrPath:
    """Where a value lives in a template: ``OS/ROOT``, ``DISK[1]/DEV_PREFIX``, ``NAME``."""

    vector: str | None
    name: str
    index: int | None = None

    def __str__(self) -> str:
        if self.vector is None:
            return self.name
        if self.index is None:
            return f"{self.vector}/{self.name}"
        return f"{self.vector}[{self.index}]/{self.name}"

    @property
    def record_key(self) -> str:
        """The key under the template's HOOKD vector that remembers what hookd wrote."""
        if self.vector is None:
            return self.name
        if self.index is None:
            return f"{self.vector}_{self.name}"
        return f"{self.vector}{self.index}_{self.name}"


WantMode = Literal["set", "merge", "take"]


@dataclass(frozen=True, slots=True)
class Want:
    """A value a handler wants in place.

    ``set``: a value a person already put there is respected (kept). ``merge``: the value was
    derived from the current one (kernel command-line tokens added), so it is applied unless a
    person changed the attribute after hookd set it. ``take``: the facts prove the current
    value is not a person's (the template is the marketplace export's, unchanged), so hookd
    takes it over, unless a person changed it after hookd did. ``value`` None: remove it.
    """

    path: AttrPath
    value: str | None
    mode: WantMode = "set"


@dataclass(frozen=True, slots=True)
class HandlerResult:
    status: Status
    reason: str = ""
    wants: tuple[Want, ...] = ()
    notes: tuple[str, ...] = ()
