"""hookd's Prometheus metrics, on ``prometheus_client``.

* :class:`HookdMetrics` — the metric set the daemon exposes, in a
  :class:`~prometheus_client.CollectorRegistry` of its own, with the callbacks the daemon's
  components call.
* :class:`MetricsServer` — ``GET /metrics`` on a background thread, **loopback only**: the
  endpoint has no authentication and reveals image and template activity (to expose it, put
  a reverse proxy with TLS and authentication in front, or scrape through an SSH tunnel).

The exposition itself (text format 0.0.4, or OpenMetrics when the scraper asks for it, gzip
when accepted) is ``prometheus_client``'s.
"""

from __future__ import annotations

import http.server
import ipaddress
import re
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import MetricsHandler, choose_encoder
from prometheus_client.registry import Collector

from hookd.logs import get_logger

log = get_logger(__name__)

# No ``*_created`` series beside counters and histograms: in the text format each is one more
# gauge per series, and hookd's counters all start with the process.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Buckets of ``hookd_xmlrpc_call_duration_seconds``: oned on loopback answers an info call in
#: well under a millisecond to a few; a large pool page takes seconds; ``one.timeout`` (30 s by
#: default) ends the slowest.
XMLRPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                  1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# -- the HTTP endpoint -------------------------------------------------------------------------
class MetricsBindError(ValueError):
    """The requested listen address is not loopback."""


def _is_loopback(host: str, port: int) -> bool:
    if host in ("", "*"):
        return False
    try:
        addresses = {str(info[4][0])
                     for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        return bool(addresses) and all(
            ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)
    except (socket.gaierror, ValueError):
        return False


class _Handler(MetricsHandler):
    """prometheus_client's handler (format negotiation, gzip, ``name[]``), at ``/metrics`` only.

    Other paths answer 404, methods other than GET and HEAD 501.
    """

    timeout = 10  # a stuck client cannot hold a thread for long
    server_version = "hookd-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            self.send_error(404, "not found: metrics are at /metrics")
        elif self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Type", choose_encoder(self.headers.get("Accept", ""))[1])
            self.end_headers()
        else:
            super().do_GET()

    do_HEAD = do_GET


class MetricsServer(http.server.ThreadingHTTPServer):
    """Serves ``registry`` at ``http://host:port/metrics`` from a background thread.

    ``host`` must resolve to loopback addresses only (a refused address raises
    :class:`MetricsBindError`, a ``ValueError``). The constructor binds (``port=0`` picks a
    free port), :meth:`start` serves.
    """

    daemon_threads = True

    def __init__(self, registry: Collector, host: str = "127.0.0.1", port: int = 0) -> None:
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid metrics port {port}")
        if not _is_loopback(host, port):
            raise MetricsBindError(
                f"refusing to serve metrics on {host or 'all interfaces'!r}: not a loopback "
                f"address (the endpoint has no authentication); listen on 127.0.0.1 or ::1"
            )
        try:
            self.address_family, _, _, _, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as exc:
            raise MetricsBindError(
                f"cannot resolve metrics listen address {host!r}: {exc}") from None
        super().__init__((str(sockaddr[0]), port), _Handler.factory(registry))
        self.host = host
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hookd-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join(timeout)
        self.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback to stderr, past the log's redaction.
        if isinstance(sys.exc_info()[1], ConnectionError):  # the scraper hung up
            log.debug("metrics.client_gone", client=str(client_address[0]))
        else:
            log.error("metrics.request_failed", client=str(client_address[0]), exc_info=True)


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
            if text not in self._seen and len(self._seen) >= self._limit:
                return "other"
            self._seen.add(text)
        return text


class HookdMetrics:
    """The metrics hookd exposes, with the callbacks the daemon's components call."""

    EVENT_KINDS = ("state", "api", "other")
    TRIGGERS = ("event", "sweep", "retry", "reload", "cli", "other")
    FAILURE_REASONS = ("transient", "permanent", "internal")
    HYPERVISORS = ("kvm", "firecracker", "lxc", "vcenter")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.events_received = Counter(
            "hookd_events_received_total",
            "Messages received from oned's event stream, by kind (state: image READY, "
            "api: API call hooks, other).", ("kind",), registry=r)
        self.malformed_messages = Counter(
            "hookd_malformed_messages_total",
            "Event-stream messages dropped as malformed, by reason.", ("reason",), registry=r)
        self.reconciles = Counter(
            "hookd_reconciles_total",
            "Reconciles started, by trigger (event, sweep, retry, reload, cli).", ("trigger",),
            registry=r)
        self.fixes = Counter(
            "hookd_fixes_total", "VM templates fixed, by hypervisor.", ("hypervisor",),
            registry=r)
        self.failures = Counter(
            "hookd_failures_total",
            "Failed reconciles, by reason (transient: retried; permanent; internal: a bug).",
            ("reason",), registry=r)
        self.queue_depth = Gauge(
            "hookd_queue_depth", "Reconcile jobs waiting for a worker (including retries).",
            registry=r)
        self.in_flight = Gauge("hookd_in_flight", "Reconciles running now.", registry=r)
        self.last_sweep_duration = Gauge(
            "hookd_last_sweep_duration_seconds", "Duration of the last full sweep.", registry=r)
        self.last_sweep_timestamp = Gauge(
            "hookd_last_sweep_timestamp_seconds",
            "Unix time of the end of the last full sweep (0: none yet).", registry=r)
        self.zmq_connected = Gauge(
            "hookd_zmq_connected", "1 while the ZeroMQ event stream of oned is connected.",
            registry=r)
        self.raft_leader = Gauge(
            "hookd_raft_leader",
            "1 while this front-end may act (Raft leader, or HA off); 0 on a follower.",
            registry=r)
        self.xmlrpc_calls = Counter(
            "hookd_xmlrpc_calls_total", "XML-RPC calls made to oned, by method.", ("method",),
            registry=r)
        self.xmlrpc_call_duration = Histogram(
            "hookd_xmlrpc_call_duration_seconds",
            "Duration of the XML-RPC calls made to oned (failed ones included), by method.",
            ("method",), buckets=XMLRPC_BUCKETS, registry=r)
        self.info = Gauge("hookd_info", "hookd's version (value is always 1).", ("version",),
                          registry=r)

        # Series that exist from the start, so rate() and absent() work before the first event.
        for metric, values in ((self.events_received, self.EVENT_KINDS),
                               (self.reconciles, self.TRIGGERS),
                               (self.failures, self.FAILURE_REASONS),
                               (self.fixes, self.HYPERVISORS)):
            for value in values:
                metric.labels(value)
        self._malformed_label = _Bounded()
        self._failure_label = _Bounded(self.FAILURE_REASONS)
        self._hypervisor_label = _Bounded(self.HYPERVISORS)
        self._method_label = _Bounded(limit=128)

    # -- callbacks (signatures match the components' on_* hooks) ---------------------------
    def observe_event(self, kind: str) -> None:
        self.events_received.labels(kind=kind if kind in self.EVENT_KINDS else "other").inc()

    def observe_malformed(self, reason: str) -> None:
        self.malformed_messages.labels(reason=self._malformed_label(reason)).inc()

    def observe_reconcile(self, trigger: str) -> None:
        self.reconciles.labels(trigger=trigger if trigger in self.TRIGGERS else "other").inc()

    def observe_fix(self, hypervisor: str) -> None:
        self.fixes.labels(hypervisor=self._hypervisor_label(str(hypervisor).lower())).inc()

    def observe_failure(self, reason: str) -> None:
        self.failures.labels(reason=self._failure_label(reason)).inc()

    def observe_call(self, method: str, duration: float, ok: bool) -> None:
        """The XML-RPC client's observer. Failed calls are timed too (a timeout is the slowest
        answer of all); ``ok`` is not a label: it would double the histogram's series, and a
        failing call shows up as a failed reconcile (``hookd_failures_total``)."""
        label = self._method_label(method)
        self.xmlrpc_calls.labels(method=label).inc()
        self.xmlrpc_call_duration.labels(method=label).observe(duration)

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
        self.info.labels(version=version).set(1)
