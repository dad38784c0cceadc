"""Test and benchmark controls of a running simulator (``sim.controls``).

Everything here is outside OpenNebula's API: fault injection on the front door, direct
edits of the world, event-stream sabotage, Raft role, bulk seeding and counters. The same
operations are exported to other processes as the ``sim.*`` XML-RPC namespace
(:mod:`hookd.testing.sim_rpc`) and wrapped by :class:`hookd.testing.client.SimulatorClient`.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from hookd.testing import builders
from hookd.testing.export import Exporter
from hookd.testing.faults import Failure, FaultPlan
from hookd.testing.image_manager import ImageManager, set_template_error_message
from hookd.testing.objects import (
    Image,
    ImageState,
    ImageType,
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
        execute: Callable[[str, list[Any]], Any] | None = None,
        after_calls: dict[tuple[str, int], list[Callable[[], None]]] | None = None,
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
        self._execute = execute
        self._after_calls = after_calls if after_calls is not None else {}
        self.raced_edits: list[tuple[int, str, float]] = []
        self._editor: PersonEditor | None = None

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

    # -- other users -----------------------------------------------------------------------
    def add_user(self, name: str, password: str) -> int:
        """An ordinary user (group ``users``, ID 1), as ``oneuser create`` makes one."""
        from hookd.testing.oned import password_digest

        with self._world.lock:
            user = builders.add_user(self._world, name, password_digest(password),
                                     oid=self._world.users.next_oid())
            user.gid, user.gname, user.groups = 1, "users", {1}
            user.invalidate()
            return user.oid

    def add_kernel_image(self, name: str, owner: int, datastore_id: int) -> int:
        """A READY KERNEL image owned by user ``owner`` (what that user could register)."""
        with self._world.lock:
            user = self._world.users.get(owner)
            ds = self._world.datastores.get(datastore_id)
            if user is None or ds is None:
                raise ValueError(f"no user {owner} or no datastore {datastore_id}")
            now = self._world.now()
            oid = self._world.images.next_oid()
            image = Image(oid=oid, name=name, template=Template(True), type=ImageType.KERNEL,
                          regtime=now, modtime=now, source=f"{ds.base_path}/user-kernel-{oid}",
                          path=f"/home/{user.name}/vmlinux", format="raw", size_mb=12,
                          state=ImageState.READY, prev_state=ImageState.READY, ds_id=ds.oid,
                          ds_name=ds.name)
            image.uid, image.gid, image.uname, image.gname = user.oid, user.gid, user.name, \
                user.gname
            self._world.images.add(image)
            ds.images.add(oid)
            ds.invalidate()
            return oid

    # -- a person at work ------------------------------------------------------------------
    def person_edit(self, template_id: int, vector: str, key: str, value: str) -> bool:
        """A person sets ``vector/key`` of a VM template, as oned runs it: one read-modify-
        write of the whole vector, atomic (a person's tool has its own window; this one has
        none, so whatever is lost is lost by someone else's write), sent as a merge update
        through oned's own call path, with the API event a real call publishes. False when
        the template does not exist or oned refused the update."""
        if self._execute is None:
            raise RuntimeError("person_edit needs the simulator's oned")
        with self._world.lock:
            obj = self._world.templates.get(template_id)
            if obj is None:
                return False
            current = obj.template.vectors(vector.upper())
            values = dict(current[0].value) if current else {}
            values[key] = value
            body = "".join(f"<{k}>{xml_escape(v)}</{k}>" for k, v in values.items())
            text = f"<TEMPLATE><{vector.upper()}>{body}</{vector.upper()}></TEMPLATE>"
            response = self._execute("one.template.update",
                                     [self._session(), template_id, text, 1])
            return bool(response[0])

    def edit_after_read(self, template_id: int, vector: str, key: str, value: str) -> None:
        """Arm a race: right after the next ``one.template.info`` of ``template_id`` has been
        answered, a person sets ``vector/key`` (:meth:`person_edit`). Whoever read the
        template then writes it from a copy that lacks the person's change; the edits made
        this way are listed by :meth:`raced`."""
        def edit() -> None:
            if self.person_edit(template_id, vector, key, value):
                self.raced_edits.append((template_id, value, time.time()))

        with self._world.lock:
            self._after_calls.setdefault(("one.template.info", template_id), []).append(edit)

    def raced(self) -> list[tuple[int, str, float]]:
        with self._world.lock:
            return list(self.raced_edits)

    def start_person_editor(self, template_ids: list[int], rate: float, *,
                            vector: str = "CONTEXT", key: str = "SSH_PUBLIC_KEY",
                            seed: int = 0) -> None:
        """A person editing ``vector/key`` of these templates, ``rate`` edits per second,
        each time a new value, on a template chosen at random (seeded)."""
        if self._editor is not None:
            raise RuntimeError("a person editor is already running")
        self._editor = PersonEditor(self, list(template_ids), rate, vector, key, seed)
        self._editor.start()

    def stop_person_editor(self) -> list[tuple[int, str, float]]:
        """Stop the editor; every edit oned accepted: (template id, value, time)."""
        editor, self._editor = self._editor, None
        if editor is None:
            return []
        editor.stop()
        return list(editor.edits)

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


class PersonEditor:
    """The background thread of :meth:`Controls.start_person_editor`."""

    def __init__(self, controls: Controls, template_ids: list[int], rate: float, vector: str,
                 key: str, seed: int) -> None:
        if not template_ids or rate <= 0:
            raise ValueError("a person editor needs templates and a rate above 0")
        self._controls = controls
        self._ids = template_ids
        self._interval = 1.0 / rate
        self._vector = vector
        self._key = key
        self._random = random.Random(seed)  # noqa: S311 - a reproducible test schedule
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="person-editor", daemon=True)
        self.edits: list[tuple[int, str, float]] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        count = 0
        while not self._stop.wait(self._interval):
            count += 1
            template_id = self._random.choice(self._ids)
            value = f"ssh-ed25519 AAAA-person-edit-{count}"
            if self._controls.person_edit(template_id, self._vector, self._key, value):
                self.edits.append((template_id, value, time.time()))


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
