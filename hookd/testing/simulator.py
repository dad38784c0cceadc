"""The in-process simulator: world + request manager + front door + hook manager child.

>>> sim = Simulator(one_version="6.8")          # doctest: +SKIP
>>> sim.start(xmlrpc="127.0.0.1:0", zmq="tcp://127.0.0.1:0")
>>> image_id, template_id = sim.export_app(app_id=0, datastore_id=101)
>>> sim.wait_image_state(image_id, "READY")
>>> sim.stop()
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from hookd.testing import sim_rpc
from hookd.testing.controls import Controls
from hookd.testing.export import Exporter
from hookd.testing.faults import FaultPlan
from hookd.testing.flavour import flavour_for
from hookd.testing.image_manager import ImageManager
from hookd.testing.objects import ImageState
from hookd.testing.oned import Oned, password_digest
from hookd.testing.publisher import Publisher
from hookd.testing.raft import RaftState
from hookd.testing.seed import SeedInfo, seed_world
from hookd.testing.system_config import build_config
from hookd.testing.world import Scheduler, World
from hookd.testing.xmlrpc_server import RpcServer


class SimulatorError(RuntimeError):
    """Misuse of the simulator (not started, already started, ...)."""


class Simulator:
    """A simulated OpenNebula front-end (oned + hook manager) on loopback."""

    def __init__(
        self,
        one_version: str = "6.8",
        auth: str = "oneadmin:opennebula",
        ready_delay: float = 0.05,
        registry: str = "localhost:5000",
        seed: bool = True,
        datastore_dir: str | None = None,
    ) -> None:
        user, sep, password = auth.partition(":")
        if not sep or not user:
            raise ValueError("auth must be '<user>:<password>' (the user is oneadmin, ID 0)")
        self.flavour = flavour_for(one_version)
        self.session = auth
        self.ready_delay = ready_delay
        self.datastore_dir = datastore_dir
        self.raft = RaftState()
        self.faults = FaultPlan()
        self.world = World(
            self.flavour,
            emit=self._emit,
            ds_location=datastore_dir if datastore_dir else "/var/lib/one//datastores",
        )
        self.seed_info: SeedInfo = seed_world(
            self.world, password_digest(password), registry=registry, populate=seed
        )
        if user != "oneadmin":
            self.world.rename_admin(user)
        self._scheduler: Scheduler | None = None
        self._publisher: Publisher | None = None
        self._server: RpcServer | None = None
        self._extra_controls: dict[str, Callable[..., Any]] = {}
        self.manager = ImageManager(self.world, self._call_later, ready_delay=ready_delay,
                                    datastore_dir=datastore_dir)
        self.oned = Oned(self.world, self.manager, self.raft, self._config_xml)
        self.controls = Controls(
            self.world, self.manager, self.faults, self.raft,
            publisher=self._require_publisher, exporter=self._exporter,
            rpc_url=lambda: self.xmlrpc_url, session=lambda: self.session,
            finish_transfers=self._finish_transfers,
            execute=self.oned.execute, after_calls=self.oned.after_calls,
        )

    # -- life-cycle ----------------------------------------------------------------------
    def start(self, xmlrpc: str = "127.0.0.1:0", zmq: str = "tcp://127.0.0.1:0") -> Simulator:
        """Start the hook manager child and the XML-RPC server; return ``self``."""
        if self._server is not None:
            raise SimulatorError("simulator already started")
        self._scheduler = Scheduler()
        self._publisher = Publisher(zmq)
        self._publisher.start()
        server = RpcServer(xmlrpc, self.oned, self.faults)
        server.sim_methods.update(sim_rpc.build(self))
        server.sim_methods.update(self._extra_controls)
        try:
            server.start()
        except OSError:
            self._publisher.stop()
            raise
        self._server = server
        return self

    def add_controls(self, methods: Mapping[str, Callable[..., Any]]) -> None:
        """Extra ``sim.*`` control methods (a benchmark's instrumentation); before start()."""
        if self._server is not None:
            raise SimulatorError("controls must be added before the simulator starts")
        self._extra_controls.update(methods)

    def stop(self) -> None:
        """Stop the server, the scheduler and the publisher child (reaped)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None

    def __enter__(self) -> Simulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- endpoints -----------------------------------------------------------------------
    @property
    def xmlrpc_url(self) -> str:
        if self._server is None:
            raise SimulatorError("simulator not started")
        return self._server.url

    @property
    def zmq_url(self) -> str:
        return self._require_publisher().endpoint

    @property
    def publisher_pid(self) -> int | None:
        return self._publisher.pid if self._publisher is not None else None

    def _require_publisher(self) -> Publisher:
        if self._publisher is None:
            raise SimulatorError("simulator not started")
        return self._publisher

    def _finish_transfers(self) -> int:
        if self._scheduler is None:
            raise SimulatorError("simulator not started")
        return self._scheduler.run_pending()

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        if self._scheduler is None:
            raise SimulatorError("simulator not started")
        self._scheduler.call_later(delay, fn)

    def _exporter(self) -> Exporter:
        return Exporter(self.xmlrpc_url, self.session, major=self.flavour.major)

    def _config_xml(self) -> str:
        server, publisher = self._server, self._publisher
        port = server.port if server is not None else 2633
        hm_port = int(publisher.endpoint.rsplit(":", 1)[1]) if publisher is not None else 2101
        return build_config(self.flavour, port=port, hm_port=hm_port,
                            ds_location=self.world.ds_location)

    def _emit(self, message_b64: str, is_state: bool) -> None:
        if is_state and self.raft.role == "follower":
            return  # state changes happen, and are published, on the leader
        publisher = self._publisher
        if publisher is not None:
            publisher.publish(message_b64)

    # -- conveniences --------------------------------------------------------------------
    def export_app(
        self, app_id: int, datastore_id: int, name: str | None = None,
        vmtemplate_name: str | None = None, tag: str | None = None,
    ) -> tuple[int, int | None]:
        """Export a marketplace app like ``onemarketapp export`` (through the front door)."""
        return self.controls.export_app(app_id, datastore_id, name, vmtemplate_name, tag)

    def call(self, method: str, *params: Any) -> list[Any]:
        """Raw ``[ok, value, code, ...]`` of ``method`` called with the admin session."""
        return self.controls.call(method, *params)

    def wait_image_state(self, image_id: int, state: str, timeout: float = 5.0) -> bool:
        """Block until image ``image_id`` is in ``state``; False on timeout or deletion."""
        wanted = int(ImageState[state.upper()])
        deadline = time.monotonic() + timeout
        with self.world.changed:
            while True:
                image = self.world.images.get(image_id)
                if image is not None and image.state == wanted:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.world.changed.wait(remaining)

    def wait_image_deleted(self, image_id: int, timeout: float = 5.0) -> bool:
        """Block until image ``image_id`` left the pool; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.world.changed:
            while self.world.images.get(image_id) is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.world.changed.wait(remaining)
            return True

    def image_xml(self, image_id: int) -> str:
        """What ``one.image.info`` would return for ``image_id``."""
        with self.world.lock:
            image = self.world.images.get(image_id)
            if image is None:
                raise KeyError(f"image {image_id} does not exist")
            return image.xml(self.flavour)

    def template_xml(self, template_id: int) -> str:
        """What ``one.template.info`` would return for ``template_id``."""
        with self.world.lock:
            template = self.world.templates.get(template_id)
            if template is None:
                raise KeyError(f"template {template_id} does not exist")
            return template.xml(self.flavour)

    def info(self) -> dict[str, str]:
        """Endpoints, session and version (``sim.info``)."""
        return {
            "xmlrpc_url": self.xmlrpc_url,
            "zmq_url": self.zmq_url,
            "session": self.session,
            "one_version": self.flavour.version,
        }

    def seed_info_dict(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in dataclasses.asdict(self.seed_info).items()}
