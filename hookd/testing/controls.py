"""Test and benchmark controls of a running simulator (``sim.controls``).

Everything here is outside OpenNebula's API: fault injection on the front door, direct
edits of the world, event-stream sabotage, Raft role, bulk seeding and counters. The same
operations are exported to other processes as the ``sim.*`` XML-RPC namespace
(:mod:`hookd.testing.sim_rpc`) and wrapped by :class:`hookd.testing.client.SimulatorClient`.
"""

from __future__ import annotations

import hashlib
import threading
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from hookd.testing import builders
from hookd.testing.export import Exporter
from hookd.testing.faults import Failure, FaultPlan
from hookd.testing.image_manager import ImageManager, set_template_error_message
from hookd.testing.objects import (
    Image,
    ImageState,
    LockInfo,
    PoolObject,
    VMTemplate,
)
from hookd.testing.publisher import Publisher
from hookd.testing.raft import RaftState
from hookd.testing.request import ERROR_CODES
from hookd.testing.rm_common import new_req_id
from hookd.testing.rm_image import image_insert, name_error
from hookd.testing.template_lang import Template, TemplateParseError, parse_template
from hookd.testing.world import Pool, World

PLACEHOLDERS = ("{i}", "{image_id}")


class Controls:
    """In-process controls; every method is thread-safe."""

    def __init__(
        self,
        world: World,
        manager: ImageManager,
        faults: FaultPlan,
        raft: RaftState,
        publisher: Callable[[], Publisher],
        exporter: Callable[[], Exporter],
        rpc_url: Callable[[], str],
        session: Callable[[], str],
        finish_transfers: Callable[[], int],
    ) -> None:
        self._world = world
        self._manager = manager
        self._faults = faults
        self._raft = raft
        self._publisher = publisher
        self._exporter = exporter
        self._rpc_url = rpc_url
        self._session = session
        self._finish_transfers = finish_transfers

    # -- front door ----------------------------------------------------------------------
    def set_latency(self, method: str, seconds: float) -> None:
        """Delay every call of ``method`` (``"*"``: all ``one.*`` methods) by ``seconds``."""
        self._faults.set_latency(method, seconds)

    def fail_next(
        self, method: str, mode: str, count: int = 1, *, seconds: float = 0.0,
        code: int | str = 0, message: str = "Simulated failure",
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail (see :mod:`hookd.testing.faults`).

        ``mode`` is ``timeout`` (hang ``seconds``, then answer), ``http500``, ``close``,
        ``locked`` or ``error`` (answer error ``code``: a number such as 0x2000 or a name
        such as ``"internal"``).
        """
        numeric = ERROR_CODES[code] if isinstance(code, str) else int(code)
        if mode == "error" and numeric == 0:
            raise ValueError("mode 'error' needs a non-zero error code")
        self._faults.fail_next(method, Failure(mode, seconds, numeric, message), count)

    def clear_faults(self) -> None:
        self._faults.clear()

    def counters(self) -> dict[str, int]:
        """Calls received per method name since the last reset."""
        return self._faults.counters()

    def reset_counters(self) -> None:
        self._faults.reset_counters()
        with self._world.lock:
            self._world.template_changes.clear()

    def template_changes(self, kind: str = "vmtemplate") -> dict[int, int]:
        """How many updates really changed each object's template (``vmtemplate`` or
        ``image``), since the last reset: "fixed exactly once" means 1 per template."""
        with self._world.lock:
            return {oid: n for (k, oid), n in self._world.template_changes.items() if k == kind}

    # -- objects -------------------------------------------------------------------------
    def _pool(self, kind: str) -> Pool[Any]:
        pools: dict[str, Pool[Any]] = {
            "image": self._world.images, "template": self._world.templates,
            "marketapp": self._world.apps,
        }
        if kind not in pools:
            raise ValueError(f"cannot lock a {kind!r}; use image, template or marketapp")
        return pools[kind]

    def lock(self, kind: str, oid: int, level: int = 1) -> None:
        """Lock an object like ``one.<kind>.lock`` (1 use, 2 manage, 3 admin, 4 = use)."""
        levels = {1: 1, 2: 2, 3: 3, 4: 1}
        if level not in levels:
            raise ValueError("lock level must be 1, 2, 3 or 4")
        with self._world.lock:
            obj = self._require(self._pool(kind), oid)
            obj.lock = LockInfo(levels[level], 0, self._world.now(), new_req_id())
            obj.invalidate()

    def unlock(self, kind: str, oid: int) -> None:
        with self._world.lock:
            obj = self._require(self._pool(kind), oid)
            obj.lock = None
            obj.invalidate()

    @staticmethod
    def _require(pool: Pool[Any], oid: int) -> PoolObject:
        obj = pool.get(oid)
        if not isinstance(obj, PoolObject):
            raise ValueError(f"{pool.root} has no object {oid}")
        return obj

    def _image(self, image_id: int) -> Image:
        image = self._world.images.get(image_id)
        if image is None:
            raise ValueError(f"image {image_id} does not exist")
        return image

    def set_image_state(self, image_id: int, state: str) -> None:
        """Move an image to ``state`` (a name such as ``"READY"``), publishing its events."""
        with self._world.lock:
            image = self._image(image_id)
            self._world.set_image_state(image, ImageState[state.upper()])
            self._world.save_image(image)

    def set_image_error(
        self, image_id: int, message: str = "Error copying image in the datastore"
    ) -> None:
        """Put an image in ERROR with an ``ERROR`` template attribute, publishing events."""
        with self._world.lock:
            image = self._image(image_id)
            set_template_error_message(image, message)
            self._world.set_image_state(image, ImageState.ERROR)
            self._world.save_image(image)

    def finish_transfers(self) -> int:
        """Complete every pending datastore operation now (copies, clones, deletions).

        With a long ``ready_delay`` this makes "the image is still LOCKED" deterministic:
        nothing completes until the test calls this. Returns how many completed.
        """
        return self._finish_transfers()

    def fail_next_ready(
        self, image_id: int | None = None,
        message: str = "ERROR: cp: simulated datastore failure",
    ) -> None:
        """Make the next copy/clone/mkfs completion (of ``image_id`` or of any image) fail."""
        self._manager.fail_next_ready(image_id, message)

    # -- event stream --------------------------------------------------------------------
    def drop_events(self, count: int) -> None:
        """The next ``count`` messages are published to nobody."""
        self._publisher().drop_next(count)

    def restart_publisher(self, down_seconds: float = 0.5, wait: bool = True) -> None:
        """Kill the publisher child, stay down ``down_seconds``, respawn on the same port."""
        publisher = self._publisher()
        if wait:
            publisher.restart(down_seconds)
        else:
            threading.Thread(target=publisher.restart, args=(down_seconds,),
                             daemon=True).start()

    def freeze_publisher(self) -> None:
        """SIGSTOP the publisher child (TCP stays up, heartbeats go unanswered)."""
        self._publisher().freeze()

    def thaw_publisher(self) -> None:
        """SIGCONT the publisher child."""
        self._publisher().thaw()

    def publisher_stats(self) -> dict[str, int]:
        return self._publisher().stats()

    # -- raft ----------------------------------------------------------------------------
    def set_raft_role(self, role: str) -> None:
        """``solo``, ``leader``, ``follower`` or ``candidate``."""
        self._raft.set_role(role)

    # -- bulk seeding --------------------------------------------------------------------
    def bulk_images(
        self, count: int, template_text: str, ds_id: int, state: str = "READY",
        name_pattern: str = "bulk-image-{i}",
    ) -> list[int]:
        """Create ``count`` images directly (no events); ``{i}`` is the 0-based index."""
        world = self._world
        state_value = ImageState[state.upper()]
        try:
            base = parse_template(template_text, replace_mode=True)
        except TemplateParseError as exc:
            raise ValueError(str(exc)) from exc
        base.erase("NAME")
        with world.lock:
            ds = world.datastores.get(ds_id)
            if ds is None:
                raise ValueError(f"datastore {ds_id} does not exist")
            proto = Image(oid=-1, name="", template=base, ds_id=ds.oid, ds_name=ds.name)
            error = image_insert(world, proto, ds)
            if error:
                raise ValueError(error)
            if not proto.source:
                proto.source = "dummy_path" if ds.ds_mad == "dummy" else f"{ds.base_path}/{{md5}}"
            if not proto.format:
                proto.format = "dummy_format" if ds.ds_mad == "dummy" else "raw"
            if not proto.size_mb:
                proto.size_mb = 1024
            first = world.images.next_oid()
            names = [name_pattern.replace("{i}", str(i)) for i in range(count)]
            self._check_names(world.images, names)
            now = world.now()
            template_factory = _template_factory(proto.template)
            images: list[Image] = []
            for i, name in enumerate(names):
                oid = first + i
                index = str(i)
                source = proto.source.replace("{i}", index)
                if "{md5}" in source:
                    digest = hashlib.md5(f"{now}:{oid}\n".encode(), usedforsecurity=False)
                    source = source.replace("{md5}", digest.hexdigest())
                images.append(Image(
                    oid=oid, name=name, template=template_factory({"{i}": index}),
                    uname=world.admin_name,
                    type=proto.type, persistent=proto.persistent, regtime=now, modtime=now,
                    source=source, path=proto.path.replace("{i}", index), format=proto.format,
                    size_mb=proto.size_mb, state=state_value, prev_state=state_value,
                    ds_id=ds.oid, ds_name=ds.name,
                ))
            world.images.add_many(images)
            ds.images.update(range(first, first + count))
            ds.invalidate()
        return list(range(first, first + count))

    def bulk_templates(
        self, count: int, template_text: str, image_ids: list[int] | None = None,
        name_pattern: str = "bulk-template-{i}",
    ) -> list[int]:
        """Create ``count`` VM templates directly; ``{i}`` and ``{image_id}`` (cycled from
        ``image_ids``) are substituted in values."""
        world = self._world
        if "{image_id}" in template_text and not image_ids:
            raise ValueError("the template uses {image_id} but no image_ids were given")
        try:
            base = parse_template(template_text, replace_mode=False)
        except TemplateParseError as exc:
            raise ValueError(str(exc)) from exc
        base.erase("NAME")
        ids = image_ids or [0]
        with world.lock:
            first = world.templates.next_oid()
            names = [name_pattern.replace("{i}", str(i)) for i in range(count)]
            self._check_names(world.templates, names)
            now = world.now()
            factory = _template_factory(base)
            templates = [
                VMTemplate(
                    oid=first + i, name=name, uname=world.admin_name,
                    template=factory({"{i}": str(i), "{image_id}": str(ids[i % len(ids)])}),
                    regtime=now,
                )
                for i, name in enumerate(names)
            ]
            world.templates.add_many(templates)
        return list(range(first, first + count))

    @staticmethod
    def _check_names(pool: Pool[Any], names: list[str]) -> None:
        if len(set(names)) != len(names):
            raise ValueError("name_pattern must contain {i} to make names unique")
        for name in names:
            error = name_error(name)
            if error:
                raise ValueError(error)
            if pool.find_name(name, 0) is not None:
                raise ValueError(f"NAME {name!r} is already taken")

    # -- world edits ---------------------------------------------------------------------
    def add_cluster(self, name: str, template: str = "") -> int:
        with self._world.lock:
            return builders.add_cluster(self._world, name, template=template).oid

    def add_host(self, name: str, vm_mad: str, cluster_id: int, im_mad: str | None = None) -> int:
        with self._world.lock:
            return builders.add_host(self._world, name, vm_mad, cluster_id, im_mad=im_mad).oid

    def add_datastore(
        self, name: str, ds_type: str = "IMAGE_DS", *, ds_mad: str = "fs",
        tm_mad: str = "shared", cluster_ids: tuple[int, ...] | list[int] = (0,),
        template: str = "",
    ) -> int:
        with self._world.lock:
            return builders.add_datastore(
                self._world, name, ds_type, ds_mad=ds_mad, tm_mad=tm_mad,
                cluster_ids=tuple(cluster_ids), template=template,
            ).oid

    def add_marketplace(self, name: str, market_mad: str, template: str = "") -> int:
        with self._world.lock:
            return builders.add_market(self._world, name, market_mad, template=template).oid

    def add_app(
        self, market_id: int, name: str, source: str, *, apptemplate: str = "",
        vmtemplate: str | None = None, size_mb: int = 2048, md5: str = "",
        description: str = "", regtime: int = 0,
    ) -> int:
        with self._world.lock:
            return builders.add_app(
                self._world, market_id, name=name, source=source,
                md5=md5 or hashlib.md5(f"{name} {source}".encode(),
                                       usedforsecurity=False).hexdigest(),
                size_mb=size_mb, regtime=regtime or self._world.now(),
                description=description, publisher="hookd.testing", link="",
                apptemplate=apptemplate, vmtemplate=vmtemplate,
            ).oid

    # -- through the front door ----------------------------------------------------------
    def export_app(
        self, app_id: int, datastore_id: int, name: str | None = None,
        vmtemplate_name: str | None = None, tag: str | None = None,
    ) -> tuple[int, int | None]:
        """``onemarketapp export`` as the Ruby client does it; ``(image_id, template_id)``."""
        return self._exporter().export(app_id, datastore_id, name, vmtemplate_name, tag)

    def call(self, method: str, *params: Any) -> list[Any]:
        """Call ``method`` through the front door with the admin session prepended."""
        proxy = xmlrpc.client.ServerProxy(self._rpc_url())
        response = getattr(proxy, method)(self._session(), *params)
        return list(response)


def _template_factory(base: Template) -> Callable[[dict[str, str]], Template]:
    """Build per-object copies of ``base``, substituting placeholders in values."""
    uses = any(p in v for v in base.values() for p in PLACEHOLDERS)

    def make(values: dict[str, str]) -> Template:
        if not uses:
            return base.copy()
        return base.map_values(lambda v: _sub(v, values))

    return make


def _sub(value: str, values: dict[str, str]) -> str:
    for key, replacement in values.items():
        if key in value:
            value = value.replace(key, replacement)
    return value
