"""Prometheus metrics without a client library: text exposition format 0.0.4.

* :class:`Counter` and :class:`Gauge` — thread-safe, with labels; values are floats.
* :class:`Registry` — holds the metric families and renders them (:meth:`Registry.render`).
* :class:`MetricsServer` — ``GET /metrics`` on a background thread, **loopback only** unless
  ``allow_non_loopback=True``: the endpoint has no authentication and reveals image and
  template activity, so exposing it is an explicit decision (put a reverse proxy with TLS
  and authentication in front, or scrape through an SSH tunnel).
* :class:`HookdMetrics` — the metric set the daemon exposes; create one per process.

The format (https://prometheus.io/docs/instrumenting/exposition_formats/)::

    # HELP hookd_fixes_total Templates fixed, by hypervisor.
    # TYPE hookd_fixes_total counter
    hookd_fixes_total{hypervisor="kvm"} 3

Label values escape ``\\``, ``"`` and newline; HELP text escapes ``\\`` and newline.
"""

from __future__ import annotations

import http.server
import ipaddress
import math
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from hookd.logs import get_logger

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "HookdMetrics",
    "MetricsBindError",
    "MetricsServer",
    "Registry",
    "escape_help",
    "escape_label_value",
    "format_value",
]

log = get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# -- text helpers ------------------------------------------------------------------------------
def escape_help(text: str) -> str:
    """HELP text: backslash and line feed are escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(value: str) -> str:
    """Label value: backslash, double quote and line feed are escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without ``.0``; infinities and NaN as Prometheus spells them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


# -- metric families ---------------------------------------------------------------------------
LabelKey = tuple[str, ...]


class _Family:
    """A metric family: name, help, label names and one float per label-value tuple."""

    type_name: ClassVar[str] = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        names = tuple(labelnames)
        for label in names:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate label names for {name}: {names}")
        self.name = name
        self.documentation = documentation
        self.labelnames = names
        self._lock = threading.Lock()
        self._values: dict[LabelKey, float] = {}
        if not names:
            self._values[()] = 0.0

    def _key(self, labels: dict[str, Any]) -> LabelKey:
        if len(labels) != len(self.labelnames) or any(n not in labels for n in self.labelnames):
            raise ValueError(
                f"{self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def _add(self, key: LabelKey, amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def _set(self, key: LabelKey, value: float) -> None:
        with self._lock:
            self._values[key] = value

    def value(self, **labels: str) -> float:
        """The current value of one series (0 when it was never touched)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def clear(self) -> None:
        """Remove every labelled series (an unlabelled metric goes back to 0)."""
        with self._lock:
            self._values.clear()
            if not self.labelnames:
                self._values[()] = 0.0

    def samples(self) -> list[tuple[LabelKey, float]]:
        """A consistent snapshot, sorted by label values."""
        with self._lock:
            return sorted(self._values.items())

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {escape_help(self.documentation)}"
        yield f"# TYPE {self.name} {self.type_name}"
        for key, value in self.samples():
            if key:
                pairs = ",".join(
                    f'{n}="{escape_label_value(v)}"' for n, v in zip(self.labelnames, key,
                                                                     strict=True)
                )
                yield f"{self.name}{{{pairs}}} {format_value(value)}"
            else:
                yield f"{self.name} {format_value(value)}"


class Counter(_Family):
    """A monotonically increasing count. ``inc(amount, **labels)``."""

    type_name = "counter"

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"a counter only goes up: inc({amount!r}) on {self.name}")
        self._add(self._key(labels), float(amount))

    def labels(self, **labels: str) -> _CounterChild:
        """A handle on one series, created at 0 (so it is exported before the first inc)."""
        key = self._key(labels)
        self._add(key, 0.0)
        return _CounterChild(self, key)


class _CounterChild:
    __slots__ = ("_family", "_key")

    def __init__(self, family: Counter, key: LabelKey) -> None:
        self._family = family
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0 or math.isnan(amount):
            raise ValueError(f"a counter only goes up: inc({amount!r}) on {self._family.name}")
        self._family._add(self._key, float(amount))


class Gauge(_Family):
    """A value that goes up and down. ``set(value, **labels)``, ``inc``, ``dec``."""

    type_name = "gauge"

    def set(self, value: float, /, **labels: str) -> None:
        self._set(self._key(labels), float(value))

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        self._add(self._key(labels), float(amount))

    def dec(self, amount: float = 1.0, /, **labels: str) -> None:
        self._add(self._key(labels), -float(amount))


class Registry:
    """The metric families of one process, rendered in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    def register(self, family: _Family) -> None:
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name} is already registered")
            self._families[family.name] = family

    def counter(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Counter:
        metric = Counter(name, documentation, labelnames)
        self.register(metric)
        return metric

    def gauge(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Gauge:
        metric = Gauge(name, documentation, labelnames)
        self.register(metric)
        return metric

    def get(self, name: str) -> _Family | None:
        with self._lock:
            return self._families.get(name)

    def render(self) -> str:
        """The whole exposition, ending with a newline."""
        with self._lock:
            families = list(self._families.values())
        lines: list[str] = []
        for family in families:
            lines.extend(family.render())
        return "\n".join(lines) + "\n" if lines else ""


# -- the HTTP endpoint -------------------------------------------------------------------------
class MetricsBindError(ValueError):
    """The requested listen address is not loopback and non-loopback was not allowed."""


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and numeric address to bind for ``host``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MetricsBindError(f"cannot resolve metrics listen address {host!r}: {exc}") from None
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise MetricsBindError(f"no address for {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def _is_loopback(host: str, port: int) -> bool:
    if host in ("", "*"):
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    addresses = {str(info[4][0]) for info in infos}
    try:
        return bool(addresses) and all(
            ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses
        )
    except ValueError:
        return False


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a stuck client cannot hold a thread for long
    server_version = "hookd-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                payload = self.server.registry.render().encode("utf-8")
            except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
                log.error("metrics.render_failed", error=f"{type(exc).__name__}: {exc}")
                self._send(500, b"metrics rendering failed\n", "text/plain; charset=utf-8", body)
                return
            self._send(200, payload, CONTENT_TYPE, body)
        elif path == "/":
            self._send(200, b"hookd: metrics at /metrics\n", "text/plain; charset=utf-8", body)
        else:
            self._send(404, b"not found: try /metrics\n", "text/plain; charset=utf-8", body)

    def _send(self, code: int, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every 15 s are not worth a log line; http.server would print to stderr.
        return

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("metrics.http_error", client=self.client_address[0], detail=format % args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    registry: Registry


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``registry`` at ``http://host:port/metrics`` from a background thread.

    ``host`` must resolve to loopback addresses only, unless ``allow_non_loopback=True``
    (a refused address raises :class:`MetricsBindError`, a ``ValueError``, at construction).
    ``port=0`` picks a free port; read :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        registry: Registry,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_non_loopback: bool = False,
    ) -> None:
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid metrics port {port}")
        if not allow_non_loopback and not _is_loopback(host, port):
            raise MetricsBindError(
                f"refusing to serve metrics on {host or 'all interfaces'!r}: not a loopback "
                f"address (the endpoint has no authentication); listen on 127.0.0.1 or ::1, "
                f"or allow it explicitly"
            )
        self.registry = registry
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        family, address = _resolve(self.host or "0.0.0.0", self._requested_port)  # noqa: S104
        cls = _Server6 if family == socket.AF_INET6 else _Server
        server = cls((address, self._requested_port), _Handler)
        server.registry = self.registry
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2},
            name="hookd-metrics", daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- hookd's metric set ------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^a-zA-Z0-9_.:/-]+")


class _Bounded:
    """Caps the distinct values of a free-form label: beyond ``limit``, values become ``other``.

    Label values come from events and errors; an unbounded set would grow the exposition (and
    Prometheus' series count) without limit.
    """

    def __init__(self, known: Iterable[str] = (), limit: int = 32) -> None:
        self._seen = set(known)
        self._limit = len(self._seen) + limit
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        text = _UNSAFE.sub("_", str(value).strip())[:64] or "unknown"
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) < self._limit:
                self._seen.add(text)
                return text
        return "other"


class HookdMetrics:
    """The metrics hookd exposes, with the callbacks the daemon's components call."""

    EVENT_KINDS = ("state", "api", "other")
    TRIGGERS = ("event", "sweep", "retry", "reload", "cli", "other")
    FAILURE_REASONS = ("transient", "permanent", "internal")
    HYPERVISORS = ("kvm", "firecracker", "lxc", "vcenter")
    # Reconcile reasons whose first word is not the trigger name.
    _TRIGGER_ALIASES: ClassVar[dict[str, str]] = {
        "configuration": "reload", "reloaded": "reload", "periodic": "sweep",
        "start-up": "sweep", "startup": "sweep", "template": "event", "image": "event",
        "ready": "event",
    }

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry if registry is not None else Registry()
        self.events_received = r.counter(
            "hookd_events_received_total",
            "Messages received from oned's event stream, by kind (state: image READY, "
            "api: API call hooks, other).", ("kind",))
        self.malformed_messages = r.counter(
            "hookd_malformed_messages_total",
            "Event-stream messages dropped as malformed, by reason.", ("reason",))
        self.reconciles = r.counter(
            "hookd_reconciles_total",
            "Reconciles started, by trigger (event, sweep, retry, reload, cli).", ("trigger",))
        self.fixes = r.counter(
            "hookd_fixes_total", "VM templates fixed, by hypervisor.", ("hypervisor",))
        self.failures = r.counter(
            "hookd_failures_total",
            "Failed reconciles, by reason (transient: retried; permanent; internal: a bug).",
            ("reason",))
        self.queue_depth = r.gauge(
            "hookd_queue_depth", "Reconcile jobs waiting for a worker (including retries).")
        self.in_flight = r.gauge("hookd_in_flight", "Reconciles running now.")
        self.last_sweep_duration = r.gauge(
            "hookd_last_sweep_duration_seconds", "Duration of the last full sweep.")
        self.last_sweep_timestamp = r.gauge(
            "hookd_last_sweep_timestamp_seconds",
            "Unix time of the end of the last full sweep (0: none yet).")
        self.zmq_connected = r.gauge(
            "hookd_zmq_connected", "1 while the ZeroMQ event stream of oned is connected.")
        self.raft_leader = r.gauge(
            "hookd_raft_leader",
            "1 while this front-end may act (Raft leader, or HA off); 0 on a follower.")
        self.xmlrpc_calls = r.counter(
            "hookd_xmlrpc_calls_total", "XML-RPC calls made to oned, by method.", ("method",))
        self.info = r.gauge("hookd_info", "hookd's version (value is always 1).", ("version",))

        for kind in self.EVENT_KINDS:
            self.events_received.labels(kind=kind)
        for trigger in self.TRIGGERS:
            self.reconciles.labels(trigger=trigger)
        for reason in self.FAILURE_REASONS:
            self.failures.labels(reason=reason)
        for hypervisor in self.HYPERVISORS:
            self.fixes.labels(hypervisor=hypervisor)
        self._malformed_label = _Bounded()
        self._failure_label = _Bounded(self.FAILURE_REASONS)
        self._hypervisor_label = _Bounded(self.HYPERVISORS)
        self._method_label = _Bounded(limit=128)

    # -- callbacks (signatures match the components' on_* hooks) ---------------------------
    def observe_event(self, kind: str) -> None:
        self.events_received.inc(kind=kind if kind in self.EVENT_KINDS else "other")

    def observe_malformed(self, reason: str) -> None:
        self.malformed_messages.inc(reason=self._malformed_label(reason))

    def observe_reconcile(self, trigger: str) -> None:
        """One reconcile; ``trigger`` is a label or a raw reason (its first word is used)."""
        word = str(trigger).strip().split(" ", 1)[0].lower()
        word = "event" if word.startswith("one.") else self._TRIGGER_ALIASES.get(word, word)
        self.reconciles.inc(trigger=word if word in self.TRIGGERS else "other")

    def observe_fix(self, hypervisor: str) -> None:
        self.fixes.inc(hypervisor=self._hypervisor_label(str(hypervisor).lower()))

    def observe_failure(self, reason: str) -> None:
        self.failures.inc(reason=self._failure_label(reason))

    def observe_call(self, method: str, *_ignored: object) -> None:
        """One XML-RPC call (extra arguments — duration, success — are accepted, unused)."""
        self.xmlrpc_calls.inc(method=self._method_label(method))

    def set_queue(self, depth: int, in_flight: int) -> None:
        self.queue_depth.set(depth)
        self.in_flight.set(in_flight)

    def set_sweep(self, duration: float, timestamp: float) -> None:
        self.last_sweep_duration.set(duration)
        self.last_sweep_timestamp.set(timestamp)

    def set_zmq_connected(self, connected: bool) -> None:
        self.zmq_connected.set(1 if connected else 0)

    def set_leader(self, leader: bool) -> None:
        self.raft_leader.set(1 if leader else 0)

    def set_info(self, version: str) -> None:
        self.info.clear()
        self.info.set(1, version=version)
