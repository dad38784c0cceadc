"""Prometheus exposition: a strict parser checks the text; the server, loopback rule, threads."""

from __future__ import annotations

import http.client
import math
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from hookd.metrics import (
    CONTENT_TYPE,
    Counter,
    Gauge,
    HookdMetrics,
    MetricsBindError,
    MetricsServer,
    Registry,
    format_value,
)

# -- a strict parser for text format 0.0.4 ----------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HELP = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_PAIR = re.compile(rf'({_LABEL_NAME})="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


@dataclass
class Family:
    type: str
    help: str | None = None
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


def _unescape(text: str, quotes: bool) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            mapping = {"\\": "\\", "n": "\n"} | ({'"': '"'} if quotes else {})
            if nxt not in mapping:
                raise AssertionError(f"invalid escape \\{nxt} in {text!r}")
            out.append(mapping[nxt])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _PAIR.match(text, pos)
        assert match, f"bad label set {text!r} at {pos}"
        pairs.append((match.group(1), _unescape(match.group(2), quotes=True)))
        pos = match.end()
    names = [n for n, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate label in {text!r}"
    return tuple(sorted(pairs))


def _parse_value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def parse_exposition(text: str) -> dict[str, Family]:
    """Parse, failing on anything a Prometheus server would reject (or we consider sloppy)."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: str | None = None
    for line in text[:-1].split("\n"):
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            match = _HELP.match(line)
            assert match, line
            assert match.group(1) not in helps, f"second HELP for {match.group(1)}"
            helps[match.group(1)] = _unescape(match.group(2), quotes=False)
            continue
        if line.startswith("# TYPE "):
            match = _TYPE.match(line)
            assert match, line
            name = match.group(1)
            assert name not in families, f"second TYPE for {name}"
            families[name] = Family(match.group(2), helps.get(name))
            current = name
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        match = _SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        name = match.group(1)
        assert name == current, f"sample {name} outside its family block ({current})"
        labels = _parse_labels(match.group(2) or "")
        family = families[name]
        assert labels not in family.samples, f"duplicate series {line!r}"
        family.samples[labels] = _parse_value(match.group(3))
    for name, family in families.items():
        assert family.help is not None, f"{name} has no HELP"
    return families


# -- values, labels, escaping ----------------------------------------------------------------


def test_counters_and_gauges_render_as_valid_exposition() -> None:
    registry = Registry()
    requests = registry.counter("app_requests_total", "Requests.\nSecond line \\ ok.",
                                ("method", "code"))
    temperature = registry.gauge("app_temperature_celsius", "Temperature.")
    requests.inc(method="GET", code="200")
    requests.inc(2.5, method="GET", code="200")
    requests.inc(method='we"ird\\va\nlue', code="500")
    requests.labels(method="POST", code="201")  # exported at 0 before any increment
    temperature.set(-3.25)
    families = parse_exposition(registry.render())
    assert list(families) == ["app_requests_total", "app_temperature_celsius"]
    req = families["app_requests_total"]
    assert req.type == "counter"
    assert req.help == "Requests.\nSecond line \\ ok."
    assert req.samples == {
        (("code", "200"), ("method", "GET")): 3.5,
        (("code", "500"), ("method", 'we"ird\\va\nlue')): 1.0,
        (("code", "201"), ("method", "POST")): 0.0,
    }
    temp = families["app_temperature_celsius"]
    assert temp.type == "gauge" and temp.samples == {(): -3.25}
    assert requests.value(method="GET", code="200") == 3.5


def test_exact_text_of_a_small_registry() -> None:
    registry = Registry()
    counter = registry.counter("x_total", "X.", ("k",))
    counter.inc(k='a"b')
    registry.gauge("y", "Y.").set(float("inf"))
    assert registry.render() == (
        "# HELP x_total X.\n"
        "# TYPE x_total counter\n"
        'x_total{k="a\\"b"} 1\n'
        "# HELP y Y.\n"
        "# TYPE y gauge\n"
        "y +Inf\n"
    )
    assert Registry().render() == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (3.0, "3"), (-2.0, "-2"), (0.5, "0.5"), (1e20, "1e+20"), (1 / 3, repr(1 / 3)),
     (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN")],
)
def test_value_formatting(value: float, text: str) -> None:
    assert format_value(value) == text
    parsed = _parse_value(text)
    assert (math.isnan(parsed) and math.isnan(value)) or parsed == value


def test_invalid_use_is_rejected() -> None:
    registry = Registry()
    counter = registry.counter("ok_total", "Ok.", ("a",))
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("ok_total", "Again.")
    with pytest.raises(ValueError, match="invalid metric name"):
        Counter("bad-name", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        Gauge("g", "x", ("__reserved",))
    with pytest.raises(ValueError, match="invalid label name"):
        Gauge("g", "x", ("bad-label",))
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, a="x")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(b="x")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc()


def test_gauge_set_inc_dec_and_clear() -> None:
    gauge = Gauge("q", "Q.", ("v",))
    gauge.set(5, v="a")
    gauge.inc(v="a")
    gauge.dec(3, v="a")
    assert gauge.value(v="a") == 3
    gauge.clear()
    assert gauge.samples() == []
    plain = Gauge("p", "P.")
    plain.set(7)
    plain.clear()
    assert plain.samples() == [((), 0.0)]


# -- hookd's metric set ----------------------------------------------------------------------

REQUIRED = {
    "hookd_events_received_total": ("counter", ("kind",)),
    "hookd_malformed_messages_total": ("counter", ("reason",)),
    "hookd_reconciles_total": ("counter", ("trigger",)),
    "hookd_fixes_total": ("counter", ("hypervisor",)),
    "hookd_failures_total": ("counter", ("reason",)),
    "hookd_queue_depth": ("gauge", ()),
    "hookd_in_flight": ("gauge", ()),
    "hookd_last_sweep_duration_seconds": ("gauge", ()),
    "hookd_last_sweep_timestamp_seconds": ("gauge", ()),
    "hookd_zmq_connected": ("gauge", ()),
    "hookd_raft_leader": ("gauge", ()),
    "hookd_xmlrpc_calls_total": ("counter", ("method",)),
    "hookd_info": ("gauge", ("version",)),
}


def test_hookd_metrics_expose_the_documented_set() -> None:
    metrics = HookdMetrics()
    metrics.set_info("0.1.0")
    families = parse_exposition(metrics.registry.render())
    assert set(families) == set(REQUIRED)
    for name, (kind, labels) in REQUIRED.items():
        family = families[name]
        assert family.type == kind, name
        for series in family.samples:
            assert tuple(n for n, _ in series) == labels, (name, series)
    # Series that exist from the start, so rate() and absent() work before the first event.
    assert families["hookd_events_received_total"].samples == {
        (("kind", "state"),): 0, (("kind", "api"),): 0, (("kind", "other"),): 0}
    assert {s[0][1] for s in families["hookd_reconciles_total"].samples} >= {
        "event", "sweep", "retry", "reload", "cli"}
    assert families["hookd_info"].samples == {(("version", "0.1.0"),): 1}
    assert families["hookd_zmq_connected"].samples == {(): 0}


def test_hookd_metrics_callbacks_as_the_daemon_uses_them() -> None:
    metrics = HookdMetrics()
    metrics.observe_event("state")
    metrics.observe_event("api")
    metrics.observe_event("api")
    metrics.observe_event("weird")
    metrics.observe_malformed("xml")
    # What the reconciler passes (its trigger label: the reason's first word or "event")...
    for label in ("event", "sweep", "configuration", "cli", "retry", "something"):
        metrics.observe_reconcile(label)
    # ...and raw reasons are understood too.
    for reason in ("READY event", "one.image.update"):
        metrics.observe_reconcile(reason)
    metrics.observe_fix("kvm")
    metrics.observe_fix("Firecracker")
    metrics.observe_failure("transient")
    metrics.observe_call("one.image.info", 0.01, True)  # the client observer's arguments
    metrics.observe_call("one.template.update")
    metrics.set_queue(4, 2)
    metrics.set_sweep(1.25, 1_780_000_000.5)
    metrics.set_zmq_connected(True)
    metrics.set_leader(True)
    metrics.set_info("0.1.0")
    metrics.set_info("0.2.0")  # a new version replaces the old series
    f = parse_exposition(metrics.registry.render())

    def series(name: str) -> dict[str, float]:
        return {s[0][1] if s else "": v for s, v in f[name].samples.items()}

    assert series("hookd_events_received_total") == {"state": 1, "api": 2, "other": 1}
    assert series("hookd_malformed_messages_total") == {"xml": 1}
    assert series("hookd_reconciles_total") == {
        "event": 3, "sweep": 1, "reload": 1, "cli": 1, "retry": 1, "other": 1}
    assert series("hookd_fixes_total")["kvm"] == 1
    assert series("hookd_fixes_total")["firecracker"] == 1
    assert series("hookd_failures_total") == {"transient": 1, "permanent": 0, "internal": 0}
    assert series("hookd_xmlrpc_calls_total") == {"one.image.info": 1, "one.template.update": 1}
    assert series("hookd_queue_depth") == {"": 4}
    assert series("hookd_in_flight") == {"": 2}
    assert series("hookd_last_sweep_duration_seconds") == {"": 1.25}
    assert series("hookd_last_sweep_timestamp_seconds") == {"": 1_780_000_000.5}
    assert series("hookd_zmq_connected") == {"": 1}
    assert series("hookd_raft_leader") == {"": 1}
    assert series("hookd_info") == {"0.2.0": 1}


def test_free_form_labels_are_bounded() -> None:
    metrics = HookdMetrics()
    for i in range(500):
        metrics.observe_malformed(f"reason {i}\n\"x\"")
    samples = parse_exposition(metrics.registry.render())[
        "hookd_malformed_messages_total"].samples
    assert len(samples) <= 33
    assert samples[(("reason", "other"),)] == 500 - 32
    assert sum(samples.values()) == 500


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_increments_are_not_lost() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "C.", ("t",))
    gauge = registry.gauge("g", "G.")
    child = counter.labels(t="child")
    threads_n, per_thread = 8, 5000
    barrier = threading.Barrier(threads_n + 1)
    renders: list[str] = []

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            counter.inc(t="shared")
            child.inc()
            gauge.inc()
            gauge.dec()

    def render() -> None:
        barrier.wait()
        for _ in range(50):
            renders.append(registry.render())

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    threads.append(threading.Thread(target=render))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value(t="shared") == threads_n * per_thread
    assert counter.value(t="child") == threads_n * per_thread
    assert gauge.value() == 0
    for text in renders:  # every snapshot taken mid-flight is still valid
        parse_exposition(text)


# -- the server ------------------------------------------------------------------------------


def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - http://127.0.0.1 only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_server_answers_on_loopback() -> None:
    metrics = HookdMetrics()
    metrics.observe_fix("kvm")
    with MetricsServer(metrics.registry) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        status, ctype, body = _get(server.url)
        assert (status, ctype) == (200, CONTENT_TYPE)
        assert ctype == "text/plain; version=0.0.4; charset=utf-8"
        families = parse_exposition(body.decode())
        assert families["hookd_fixes_total"].samples[(("hypervisor", "kvm"),)] == 1
        metrics.observe_fix("kvm")  # live values, not a snapshot taken at start
        families = parse_exposition(_get(server.url + "?x=1")[2].decode())
        assert families["hookd_fixes_total"].samples[(("hypervisor", "kvm"),)] == 2
        assert _get(server.url, method="HEAD")[:2] == (200, CONTENT_TYPE)
        assert _get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
        assert _get(f"http://127.0.0.1:{server.port}/metrics", method="POST")[0] == 501
        port = server.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_server_on_ipv6_loopback_and_localhost() -> None:
    registry = Registry()
    registry.gauge("up_flag", "Up.").set(1)
    with MetricsServer(registry, host="[::1]") as server:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        connection = http.client.HTTPConnection("::1", server.port, timeout=5)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert parse_exposition(response.read().decode())["up_flag"].samples == {(): 1}
        connection.close()
    with MetricsServer(registry, host="localhost") as server:
        assert _get(f"http://localhost:{server.port}/metrics")[0] == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "*", "192.0.2.10", "example.invalid"])
def test_non_loopback_bind_is_refused(host: str) -> None:
    with pytest.raises(MetricsBindError, match="refusing to serve metrics"):
        MetricsServer(Registry(), host=host, port=0)


def test_non_loopback_bind_when_explicitly_allowed() -> None:
    registry = Registry()
    registry.gauge("up_flag", "Up.").set(1)
    with MetricsServer(registry, host="0.0.0.0", allow_non_loopback=True) as server:
        assert _get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200


def test_server_lifecycle_errors() -> None:
    server = MetricsServer(Registry())
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(ValueError, match="port"):
        MetricsServer(Registry(), port=70000)


def test_concurrent_scrapes_while_counting() -> None:
    metrics = HookdMetrics()
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            metrics.observe_event("api")

    counter_thread = threading.Thread(target=count)
    counter_thread.start()
    try:
        with MetricsServer(metrics.registry) as server:
            results: list[float] = []

            def scrape() -> None:
                for _ in range(10):
                    families = parse_exposition(_get(server.url)[2].decode())
                    results.append(families["hookd_events_received_total"].samples[
                        (("kind", "api"),)])

            scrapers = [threading.Thread(target=scrape) for _ in range(4)]
            for thread in scrapers:
                thread.start()
            for thread in scrapers:
                thread.join()
    finally:
        stop.set()
        counter_thread.join()
    assert len(results) == 40
    assert max(results) <= metrics.events_received.value(kind="api")
