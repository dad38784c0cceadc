"""Gathering facts: the slice of the cloud a plan depends on, read through the client.

Slowly changing facts (datastores, hosts, clusters, marketplaces and their apps, oned's
version and device prefixes, the configured kernels) are cached and refreshed by every
sweep, by SIGHUP, by API events that change hosts or clusters, and at most ``ttl`` seconds
after the last refresh. Per-image facts (the image, its templates, the OCI config) are read
for every reconcile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from handlers.disks import disks
from handlers.errors import PermanentError
from handlers.facts import (
    DS_FILE,
    READY,
    TYPE_KERNEL,
    TYPE_RAMDISK,
    AppFacts,
    DatastoreFacts,
    HostFacts,
    ImageFacts,
    MarketFacts,
    VmTemplateFacts,
)
from handlers.model import KernelChoice, OciFacts, World
from hookd.client import NotFound, OneClient
from hookd.logs import get_logger

log = get_logger(__name__)


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int("".join(ch for ch in piece if ch.isdigit()) or "0")
             for piece in text.strip().split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def inspect_kernel_file(path: Path, hypervisor: str) -> tuple[bool, str, tuple[str, ...]]:
    """(usable, reason, warnings) for a kernel file on this front-end."""
    from hookd.kernels import verify_kernel

    verdict = verify_kernel(path, "kvm" if hypervisor in ("kvm", "qemu") else "firecracker")
    return verdict.usable, verdict.reason, tuple(verdict.warnings)


@dataclass
class WorldSnapshot:
    """What the cache knows; read-only for callers (``hookd check`` shows it)."""

    version: tuple[int, int, int] = (0, 0, 0)
    version_text: str = ""
    default_prefix: str = "sd"
    cdrom_prefix: str = "hd"
    datastores: dict[int, DatastoreFacts] = field(default_factory=dict)
    hosts: list[HostFacts] = field(default_factory=list)
    markets: dict[int, MarketFacts] = field(default_factory=dict)
    kernels: dict[str, KernelChoice | None] = field(default_factory=dict)
    initrds: dict[str, KernelChoice | None] = field(default_factory=dict)
    kernel_problems: dict[str, str] = field(default_factory=dict)
    loaded: float = 0.0


class WorldCache:
    def __init__(
        self,
        client: OneClient,
        *,
        kernels: Mapping[str, int | str | None],
        initrds: Mapping[str, int | str | None],
        owner: int | str = "oneadmin",
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.RLock()
        # One refresh at a time: when the TTL runs out, every busy worker finds the world
        # stale at once, and a refresh reads whole pools (see :meth:`refresh`).
        self._refreshing = threading.Lock()
        self._snap = WorldSnapshot()
        self._apps: dict[int, AppFacts | None] = {}
        self._disk_images: dict[int, tuple[float, ImageFacts | None]] = {}
        self._named: dict[str, list[ImageFacts]] = {}
        self.configure(kernels, initrds, owner)

    # -- configuration -------------------------------------------------------------------
    def configure(self, kernels: Mapping[str, int | str | None],
                  initrds: Mapping[str, int | str | None], owner: int | str = "oneadmin") -> None:
        with self._lock:
            self._kernel_refs = {k: v for k, v in kernels.items() if v is not None}
            self._initrd_refs = {k: v for k, v in initrds.items() if v is not None}
            self._owner = owner
            self._snap.loaded = 0.0

    def _owned(self, image: ImageFacts) -> bool:
        owner = self._owner
        if isinstance(owner, int) or str(owner).isdigit():
            return image.uid == int(owner)
        return image.uname == owner

    def wanted_names(self) -> set[str]:
        """Kernel/initrd image names the configuration refers to (resolved by sweeps)."""
        with self._lock:
            return {str(v) for v in (*self._kernel_refs.values(), *self._initrd_refs.values())
                    if isinstance(v, str)}

    def note_named_images(self, named: Mapping[str, list[ImageFacts]]) -> None:
        with self._lock:
            self._named = {k: list(v) for k, v in named.items()}

    # -- refresh -------------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._snap.loaded = 0.0

    def refresh(self, *, scan_names: bool = True) -> None:
        """Reload the slowly changing facts. Kernels configured by name are found with a
        walk of the image pool unless ``scan_names`` is off (a sweep walks it anyway and
        hands the names over with :meth:`note_named_images`).

        Refreshes never overlap: one that is asked for while another runs waits for it, then
        reads again (what it was asked after may not be in the one that was running)."""
        with self._refreshing:
            self._refresh(scan_names=scan_names)

    def _refresh(self, *, scan_names: bool) -> None:
        client = self._client
        snap = WorldSnapshot()
        snap.version_text = client.version()
        snap.version = parse_version(snap.version_text)
        try:
            config = client.system_config()
            snap.default_prefix = (config.findtext("DEFAULT_DEVICE_PREFIX") or "sd").strip() or "sd"
            snap.cdrom_prefix = (config.findtext("DEFAULT_CDROM_DEVICE_PREFIX") or "hd").strip() \
                or "hd"
        except PermanentError as exc:
            log.warning("world.system_config_unavailable", reason=exc.reason,
                        assumed={"DEFAULT_DEVICE_PREFIX": "sd",
                                 "DEFAULT_CDROM_DEVICE_PREFIX": "hd"})
        snap.datastores = {d.id: d for d in client.datastores()}
        snap.hosts = client.hosts()
        snap.markets = {m.id: m for m in client.markets()}
        if scan_names:
            self._scan_names()
        self._resolve_kernels(snap)
        snap.loaded = self._clock()
        with self._lock:
            self._snap = snap
            self._apps.clear()
            self._disk_images.clear()
        log.info("world.refreshed", one_version=snap.version_text, hosts=len(snap.hosts),
                 datastores=len(snap.datastores),
                 kernels={hv: (c.image_id if c else None) for hv, c in snap.kernels.items()},
                 kernel_problems=snap.kernel_problems or None)

    def _scan_names(self) -> None:
        wanted = self.wanted_names()
        if not wanted:
            return
        named: dict[str, list[ImageFacts]] = {}
        for image in self._client.iter_images():
            if image.name in wanted and image.type in (TYPE_KERNEL, TYPE_RAMDISK):
                named.setdefault(image.name, []).append(image)
        self.note_named_images(named)

    def refresh_kernels(self) -> None:
        """Re-resolve the configured kernels and initrds (after names were looked up)."""
        with self._lock:
            snap = replace(self._snap, kernels={}, initrds={}, kernel_problems={})
        self._resolve_kernels(snap)
        with self._lock:
            self._snap = snap

    def _resolve_kernels(self, snap: WorldSnapshot) -> None:
        with self._lock:
            kernel_refs = dict(self._kernel_refs)
            initrd_refs = dict(self._initrd_refs)
            named = dict(self._named)
        for hv, ref in kernel_refs.items():
            choice, problem = self._resolve(ref, TYPE_KERNEL, hv, snap, named)
            snap.kernels[hv] = choice
            if problem:
                snap.kernel_problems[hv] = problem
        for hv, ref in initrd_refs.items():
            choice, problem = self._resolve(ref, TYPE_RAMDISK, hv, snap, named)
            if choice is None and problem:
                choice = KernelChoice(-1, str(ref), False, problem)
            snap.initrds[hv] = choice

    def _stale(self) -> bool:
        with self._lock:
            return self._clock() - self._snap.loaded > self._ttl or not self._snap.loaded

    def ensure_fresh(self) -> None:
        """Refresh when older than the TTL. Workers that find the world stale together
        share one refresh: the first refreshes, the others wait for it and use its result
        (eight concurrent refreshes of a 100,000-image cloud peaked at +280 MB, issue 14)."""
        if not self._stale():
            return
        with self._refreshing:
            if self._stale():
                # Kernel names come from the last sweep: no pool walk on the reconcile path.
                self._refresh(scan_names=False)

    def _resolve(self, ref: int | str, kind: int, hypervisor: str, snap: WorldSnapshot,
                 named: Mapping[str, list[ImageFacts]]) -> tuple[KernelChoice | None, str]:
        what = "kernel" if kind == TYPE_KERNEL else "initrd"
        image: ImageFacts | None = None
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            try:
                image = self._client.image(int(ref))
            except NotFound:
                return None, f"{what} image {ref} does not exist"
        else:
            # A name is no identity: any user can create an image with it. Only images of
            # the configured owner in a file datastore (Kernels & Files) count.
            same_name = [i for i in named.get(ref, []) if i.type == kind]
            matches = [i for i in same_name if self._owned(i)
                       and (d := snap.datastores.get(i.datastore_id)) is not None
                       and d.type == DS_FILE]
            where = f"owned by {self._owner} in a file datastore"
            if not matches:
                others = ", ".join(f"{i.id} (owner {i.uname}, datastore {i.datastore_id})"
                                   for i in same_name)
                return None, (f"no {what} image named {ref!r} {where} (looked up at each "
                              f"sweep)" + (f"; not used: {others}" if others else ""))
            if len(matches) > 1:
                ids = ", ".join(str(i.id) for i in matches)
                return None, (f"several {what} images {where} are named {ref!r} ({ids}): "
                              f"use an ID")
            image = self._client.image(matches[0].id)
            if not self._owned(image):
                return None, f"{what} image {image.id} named {ref!r} is no longer {where}"
        expected = "KERNEL" if kind == TYPE_KERNEL else "RAMDISK"
        ds = snap.datastores.get(image.datastore_id)
        unusable = ""
        if image.type != kind:
            unusable = f"is {image.type_name}, not {expected}"
        elif image.state != READY:
            unusable = f"is {image.state_name}, not READY"
        elif ds is None or ds.type != DS_FILE:
            unusable = "is not in a file datastore (Kernels & Files)"
        if unusable or ds is None:
            return KernelChoice(image.id, image.name, False,
                                f"image {image.id} ({image.name}) {unusable}"), ""
        owner, where = image.uname, f"{ds.id} ({ds.name})"
        if kind != TYPE_KERNEL:
            return KernelChoice(image.id, image.name, True, owner=owner, datastore=where), ""
        path = Path(image.source) if image.source else None
        if path is None or not path.is_file():
            return KernelChoice(image.id, image.name, True, "", (
                f"kernel {image.id} not inspected: its file is not readable on this "
                f"front-end",), owner=owner, datastore=where), ""
        try:
            usable, reason, warnings = inspect_kernel_file(path, hypervisor)
        except PermanentError as exc:
            usable, reason, warnings = False, exc.reason, ()
        return KernelChoice(image.id, image.name, usable,
                            "" if usable else f"kernel {image.id} ({image.name}): {reason}",
                            warnings, owner=owner, datastore=where), ""

    # -- per image ---------------------------------------------------------------------------
    @property
    def version(self) -> tuple[int, int, int]:
        return self._snap.version

    @property
    def snapshot(self) -> WorldSnapshot:
        return self._snap

    def app(self, app_id: int) -> AppFacts | None:
        with self._lock:
            if app_id in self._apps:
                return self._apps[app_id]
        try:
            app: AppFacts | None = self._client.app(app_id)
        except NotFound:
            app = None
        with self._lock:
            self._apps[app_id] = app
        return app

    def base_world(self, image: ImageFacts) -> World:
        snap = self._snap
        ds = snap.datastores.get(image.datastore_id)
        clusters = set(ds.cluster_ids) if ds else set()
        hosts = tuple(h for h in snap.hosts if h.cluster_id in clusters)
        app = self.app(image.from_app) if image.from_app is not None else None
        market = snap.markets.get(app.market_id) if app is not None else None
        return World(
            one_version=snap.version,
            default_dev_prefix=snap.default_prefix,
            default_cdrom_prefix=snap.cdrom_prefix,
            datastore=ds,
            hosts=hosts,
            app=app,
            market=market,
            kernels=dict(snap.kernels),
            initrds=dict(snap.initrds),
            kernel_problems=dict(snap.kernel_problems),
        )

    def image_by_id(self, image_id: int) -> ImageFacts | None:
        now = self._clock()
        with self._lock:
            cached = self._disk_images.get(image_id)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
        try:
            facts: ImageFacts | None = self._client.image(image_id)
        except NotFound:
            facts = None
        with self._lock:
            self._disk_images[image_id] = (now, facts)
        return facts

    def prefetch_images(self, image_ids: Iterable[int], *, skip: int) -> None:
        """Read (or find cached) the facts of these images, so that planning right after a
        template was read needs no call for them."""
        for image_id in image_ids:
            if image_id != skip:
                self.image_by_id(image_id)

    def other_disk_images(self, image: ImageFacts,
                          templates: Iterable[VmTemplateFacts]) -> dict[int, ImageFacts]:
        """Facts for the other images the templates' disks use, by image ID."""
        out: dict[int, ImageFacts] = {}
        for template in templates:
            for disk in disks(template):
                if disk.image_id is None or disk.image_id == image.id or disk.image_id in out:
                    continue
                other = self.image_by_id(disk.image_id)
                if other is not None:
                    out[disk.image_id] = other
        return out


def with_template(world: World, disk_images: Mapping[int, ImageFacts],
                  oci: OciFacts | None) -> World:
    return replace(world, disk_images=dict(disk_images), oci=oci)
