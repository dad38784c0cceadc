"""The service: wiring, the main loop, sweeps, the HA gate, signals.

Threads:

* the **main loop** (the process's main thread) polls the ZeroMQ socket, turns messages into
  jobs, pings the systemd watchdog, starts periodic sweeps and handles SIGHUP/SIGTERM flags.
  A hung main loop stops the watchdog pings, so systemd restarts hookd;
* **workers** run reconciles (:class:`hookd.reconciler.Reconciler`);
* the **supervisor** asks oned for its Raft role every ``ha.poll_interval`` seconds and runs
  sweeps when asked (start-up, every reconnection of the event stream, every
  ``reconcile.sweep_interval``, on becoming leader, after SIGHUP).

Nothing is done while this oned is a Raft follower: hookd runs on every front-end of an HA
cluster and only the leader's hookd writes.
"""

from __future__ import annotations

import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.errors import HookdError, PermanentError, TransientError
from hookd import __version__
from hookd.applier import Applier
from hookd.client import OneClient
from hookd.config import Config, ConfigError, load
from hookd.engine import Engine
from hookd.index import TemplateIndex
from hookd.intake import EchoFilter, Trigger
from hookd.logs import configure_logging, get_logger, install_excepthooks
from hookd.metrics import HookdMetrics, MetricsServer
from hookd.reconciler import Backoff, Reconciler
from hookd.sdnotify import Notifier, WatchdogPinger
from hookd.settings import oci_resolver, one_client, planner_settings
from hookd.stream import EventStream
from hookd.triggers import Cause, Why
from hookd.world import WorldCache

log = get_logger(__name__)

# Seconds the start-up sweep waits for the event stream to connect (it waits no longer once
# a connection attempt has failed).
STREAM_GRACE = 2.0


@dataclass
class Components:
    config: Config
    client: OneClient
    world: WorldCache
    index: TemplateIndex
    echo: EchoFilter
    applier: Applier
    engine: Engine
    metrics: HookdMetrics


def build(config: Config, *, session: str | None = None) -> Components:
    """Everything but threads and sockets: shared by ``run``, ``reconcile``, ``plan``."""
    metrics = HookdMetrics()
    client = one_client(config, session, metrics.observe_call)
    world = WorldCache(client, kernels=config.kernels.refs(), initrds=config.initrds.refs(),
                       owner=config.kernels.owner)
    index = TemplateIndex()
    echo = EchoFilter()
    applier = Applier(client, echo, on_fix=metrics.observe_fix)
    engine = Engine(client, world, index, applier, planner_settings(config),
                    oci_resolver(config, world), echo)
    return Components(config, client, world, index, echo, applier, engine, metrics)


class Daemon:
    def __init__(self, config_path: Path | None, *, config: Config | None = None,
                 session: str | None = None, log_stream: Any = None) -> None:
        self.config_path = config_path
        self.config = config if config is not None else load(config_path)
        self._session = session
        self._log_stream = log_stream
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._sweep_requested = threading.Event()
        self._sweep_reasons: set[str] = set()
        self._lock = threading.Lock()
        self.leader: bool | None = None
        self.first_sweep_done = False
        self.status_text = "starting"
        self._ready_sent = False

    def request_stop(self) -> None:
        self._stop.set()

    def request_sweep(self, reason: str) -> None:
        with self._lock:
            self._sweep_reasons.add(reason)
        self._sweep_requested.set()

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> int:
        self._configure_logging()
        install_excepthooks()
        self.notifier = Notifier()
        interval = self.notifier.watchdog_interval()
        self.pinger = WatchdogPinger(self.notifier, interval) if interval else None
        try:
            self.parts = build(self.config, session=self._session)
            metrics_server = self._start_metrics()
        except HookdError as exc:
            log.error("hookd.config_error", reason=exc.reason)
            return 2  # see run()
        warn_if_exposed(self.config.auth_file)
        c = self.parts
        c.metrics.set_info(__version__)
        self.stream = EventStream(
            self.config.zmq, self.config.events,
            on_trigger=self._on_trigger,
            on_connected=lambda: self.request_sweep("event stream connected"),
            on_malformed=c.metrics.observe_malformed,
            on_event=c.metrics.observe_event,
            on_state=c.metrics.set_zmq_connected,
        )
        rec = self.config.reconcile
        self.reconciler = Reconciler(
            c.engine,
            workers=rec.workers,
            backoff=Backoff(rec.backoff_initial, rec.backoff_max, rec.attempts),
            on_reconcile=c.metrics.observe_reconcile,
            on_failure=c.metrics.observe_failure,
        )
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda _signum, _frame: self._stop.set())
            signal.signal(signal.SIGINT, lambda _signum, _frame: self._stop.set())
            signal.signal(signal.SIGHUP, lambda _signum, _frame: self._reload.set())
        log.info("hookd.starting", version=__version__, config=self.config.where,
                 xmlrpc=self.config.xmlrpc, xmlrpc_from=self.config.xmlrpc_origin,
                 zmq=self.config.zmq, zmq_from=self.config.zmq_origin,
                 auth_file=str(self.config.auth_file) if self.config.auth_file else None)
        c.echo.on_concurrent = lambda image_id, template_id: self.reconciler.submit_image(
            image_id, Why(Cause.CONCURRENT, f"template {template_id}"))
        self.reconciler.start()
        self.stream.open()
        # One start-up sweep: it is asked for, and the event stream given a moment to connect
        # (its "connected" asks for a sweep too), before the supervisor can start one. Else a
        # request landing just after the sweep began made a second full sweep run at once,
        # beside the workers draining the first one's queue (issue 14).
        self.request_sweep("start-up")
        self.stream.wait_connected(STREAM_GRACE)
        supervisor = threading.Thread(target=self._supervise, name="hookd-supervisor",
                                      daemon=True)
        supervisor.start()
        try:
            self._main_loop(supervisor)
        finally:
            self._shutdown(metrics_server)
        return 0

    def _configure_logging(self) -> None:
        section = self.config.log
        configure_logging(
            level=section.level,
            stream=self._log_stream or sys.stdout,
            fmt=section.format,
            file_path=Path(section.file) if section.file else None,
        )

    def _start_metrics(self) -> MetricsServer | None:
        listen = self.config.metrics.listen
        if not listen:
            return None
        host, _, port = str(listen).rpartition(":")
        try:
            server = MetricsServer(self.parts.metrics.registry,
                                   host=host.strip("[]") or "127.0.0.1", port=int(port))
            server.start()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"metrics.listen {listen} in {self.config.where}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        log.info("metrics.listening", url=server.url)
        return server

    def _main_loop(self, supervisor: threading.Thread) -> None:
        sweep_interval = self.config.reconcile.sweep_interval
        # Wake at least twice per watchdog interval, else once a second: events wake the
        # poll at once, so a longer idle sleep costs no latency (and idle CPU stays low).
        tick = min(1.0, self.pinger.interval / 2) if self.pinger is not None else 1.0
        next_periodic = time.monotonic() + sweep_interval
        while not self._stop.is_set():
            self.stream.poll(tick)
            now = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
                sweep_interval = self.config.reconcile.sweep_interval
            if now >= next_periodic:
                next_periodic = now + sweep_interval
                self.request_sweep("periodic")
            self.parts.metrics.set_queue(self.reconciler.depth, self.reconciler.in_flight)
            if self.pinger is not None and supervisor.is_alive():
                self.pinger.maybe_ping()

    # -- triggers from the event stream --------------------------------------------------------
    def _on_trigger(self, trigger: Trigger) -> None:
        c = self.parts
        if trigger.kind in ("template", "image") and trigger.raw and c.echo.is_echo(trigger):
            return
        if trigger.kind == "image":
            self.reconciler.submit_image(trigger.object_id, trigger.why)
        elif trigger.kind == "template":
            self.reconciler.submit_template(trigger.object_id, trigger.why)
        elif trigger.kind == "template_deleted":
            c.index.remove(trigger.object_id)
        elif trigger.kind == "image_deleted":
            c.index.forget_image(trigger.object_id)
            self.reconciler.waiting.discard(trigger.object_id)
        elif trigger.kind == "world":
            c.world.invalidate()
            self.reconciler.requeue_waiting(Why(Cause.RELOAD, str(trigger.why.call),
                                                trigger.why.call))

    # -- the supervisor: HA gate and sweeps ------------------------------------------------------
    def _supervise(self) -> None:
        poll = self.config.ha.poll_interval
        next_poll = 0.0
        failures = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                ok = self._poll_raft()
                failures = 0 if ok else failures + 1
                delay = poll if ok else min(poll * 6, 0.5 * (2 ** min(failures, 6)))
                next_poll = time.monotonic() + delay
            if self.leader and self._sweep_requested.is_set():
                self._sweep_requested.clear()
                with self._lock:
                    reasons, self._sweep_reasons = self._sweep_reasons, set()
                self._run_sweep(", ".join(sorted(reasons)))
                continue
            # Sleep until the next Raft poll; an active hookd also wakes for a sweep request
            # (a request made without oned or leadership waits for them).
            timeout = max(0.05, next_poll - time.monotonic())
            if self.leader:
                self._sweep_requested.wait(timeout)
            else:
                self._stop.wait(timeout)

    def _poll_raft(self) -> bool:
        try:
            raft = self.parts.client.raft()
        except HookdError as exc:
            self._gate(None, f"waiting for oned at {self.config.xmlrpc}: {exc.reason}")
            return False
        if raft.may_act:
            role = "leader" if raft.ha_enabled else "solo (HA off)"
            self._gate(True, f"active: {role}")
        else:
            self._gate(False, f"standing by: this oned is a Raft {raft.state_name.lower()}")
        return True

    def _gate(self, leader: bool | None, status: str) -> None:
        previous = self.leader
        self.leader = leader
        self.parts.metrics.set_leader(bool(leader))
        if leader and not previous:
            log.info("ha.active", status=status)
            self.request_sweep("became active" if previous is False else "oned reachable")
        elif leader is False and previous is not False:
            log.info("ha.standby", status=status)
            self.reconciler.pause()
        elif leader is None and (previous is not None or not self._ready_sent):
            log.warning("oned.unreachable", status=status)
            self.reconciler.pause()
        if not leader:
            self._set_status(status)
            # Healthy, but waiting (for oned or leadership): tell systemd we are up.
            self._ready(status)

    def _run_sweep(self, reason: str) -> None:
        started = time.monotonic()
        self._set_status(f"sweeping ({reason})")
        try:
            stats = self.parts.engine.sweep(self.reconciler.submit_image,
                                        why=Why(Cause.SWEEP, reason))
        except (TransientError, PermanentError) as exc:
            log.warning("sweep.failed", reason=exc.reason, trigger=reason)
            self._set_status(f"sweep failed, retrying: {exc.reason}")
            self._stop.wait(2.0)
            self.request_sweep(reason)
            return
        self.parts.metrics.set_sweep(time.monotonic() - started, time.time())
        self.first_sweep_done = True
        if self.leader:
            self.reconciler.resume()
        status = (f"active: {stats.container_images} container images, "
                  f"{stats.templates} templates; last sweep {stats.duration:.1f} s "
                  f"({reason})")
        self._set_status(status)
        self._ready(status)

    def _ready(self, status: str) -> None:
        """READY=1 once: after the first sweep, or on waiting healthily for oned or leadership."""
        if not self._ready_sent:
            self._ready_sent = True
            self.notifier.ready(status)
            log.info("hookd.ready", status=status)

    def _set_status(self, text: str) -> None:
        if text != self.status_text:
            self.status_text = text
            self.notifier.status(text)

    # -- reload and stop -------------------------------------------------------------------------
    def _do_reload(self) -> None:
        """SIGHUP: everything the new file asks for is built first; any failure keeps the
        configuration in force as it was, and says so (log, systemd status)."""
        self.notifier.reloading()
        c = self.parts
        try:
            new = load(self.config_path, reload=True)
            settings = planner_settings(new)
            resolver = oci_resolver(new, c.world)
        except HookdError as exc:
            log.error("hookd.reload_failed", reason=exc.reason,
                      hint="the previous configuration stays in force")
            self.notifier.status(f"reload failed, previous configuration kept: {exc.reason}")
            self.notifier.ready(self.status_text)
            return
        if (new.xmlrpc, new.zmq, new.auth_file) != (self.config.xmlrpc, self.config.zmq,
                                                    self.config.auth_file):
            log.warning("hookd.reload_connection_unchanged",
                        hint="connection settings (endpoint, auth file, event stream) take "
                             "effect after a restart")
        if new.metrics != self.config.metrics:
            log.warning("hookd.reload_metrics_unchanged",
                        hint="metrics.listen takes effect after a restart")
        self.config = new
        self._configure_logging()
        c.world.configure(new.kernels.refs(), new.initrds.refs(), new.kernels.owner)
        c.engine.reconfigure(settings, resolver)
        requeued = self.reconciler.requeue_waiting(Why(Cause.RELOAD, "configuration"))
        self.request_sweep("configuration reloaded")
        log.info("hookd.reloaded", config=new.where, waiting_images_requeued=requeued)
        self.notifier.ready(self.status_text)

    def _record_concurrent(self, deadline: float) -> None:
        """Before exiting: the echoes of hookd's last updates close their windows, and an
        update by someone else seen in one is recorded on its image, not forgotten."""
        c = self.parts
        until = min(deadline, time.monotonic() + 2.0)
        while c.echo.awaiting_echo() and time.monotonic() < until:
            self.stream.poll(0.05)
        for image_id in c.echo.noted_images():
            if time.monotonic() >= deadline:
                break
            try:
                c.engine.reconcile_image(image_id, trigger="concurrent update (stopping)")
            except HookdError as exc:
                log.warning("hookd.concurrent_not_recorded", image_id=image_id,
                            reason=exc.reason)

    def _shutdown(self, metrics_server: MetricsServer | None) -> None:
        self.notifier.stopping()
        timeout = self.config.reconcile.shutdown_timeout
        log.info("hookd.stopping", in_flight=self.reconciler.in_flight,
                 queued=self.reconciler.depth, timeout=timeout)
        self._stop.set()
        self._sweep_requested.set()
        started = time.monotonic()
        finished = self.reconciler.stop(timeout)
        self._record_concurrent(started + timeout)
        self.stream.close()
        if metrics_server is not None:
            metrics_server.stop()
        log.info("hookd.stopped", clean=finished)


def warn_if_exposed(auth_file: Path | None) -> None:
    """oned's credentials must be readable by the service's user only (``chmod 600``)."""
    if auth_file is None:
        return
    try:
        mode = auth_file.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("hookd.credentials_exposed", auth_file=str(auth_file),
                    mode=f"{stat.S_IMODE(mode):04o}",
                    hint=f"oneadmin's password is readable by other users: chmod 600 "
                         f"{auth_file}")


def run(config_path: Path | None, **kwargs: Any) -> int:
    """The service's entry point. Exit 2 on a configuration error: the unit's
    RestartPreventExitStatus=2 keeps systemd from restarting into the same error."""
    try:
        daemon = Daemon(config_path, **kwargs)
    except ConfigError as exc:
        configure_logging(level="info")
        log.error("hookd.config_error", reason=exc.reason)
        return 2
    return daemon.run()

