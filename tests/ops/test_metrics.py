"""Prometheus exposition: a strict parser checks the text; the server, loopback rule, threads."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from prometheus_client.parser import text_string_to_metric_families

from hookd.metrics import XMLRPC_BUCKETS, HookdMetrics, MetricsBindError, MetricsServer

# -- a strict parser for text format 0.0.4 ----------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HELP = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
_PAIR = re.compile(rf'({_LABEL_NAME})="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


Labels = tuple[tuple[str, str], ...]
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass
class Family:
    type: str
    help: str | None = None
    samples: dict[Labels, float] = field(default_factory=dict)
    # A histogram's samples, by suffix (_bucket, _sum, _count).
    parts: dict[str, dict[Labels, float]] = field(default_factory=dict)


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
        assert current is not None, f"sample {name} before any TYPE"
        family = families[current]
        labels = _parse_labels(match.group(2) or "")
        if family.type == "histogram":
            suffix = name.removeprefix(current)
            assert name.startswith(current) and suffix in _HISTOGRAM_SUFFIXES, (
                f"sample {name} outside its family block ({current})")
            assert ("le" in dict(labels)) == (suffix == "_bucket"), line
            target = family.parts.setdefault(suffix, {})
        else:
            assert name == current, f"sample {name} outside its family block ({current})"
            target = family.samples
        assert labels not in target, f"duplicate series {line!r}"
        target[labels] = _parse_value(match.group(3))
    for name, family in families.items():
        assert family.help is not None, f"{name} has no HELP"
    return families


# -- hookd's metric set ----------------------------------------------------------------------


def render(metrics: HookdMetrics) -> str:
    """The exposition a scrape without an Accept header gets (text format 0.0.4)."""
    return generate_latest(metrics.registry).decode()


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
    "hookd_xmlrpc_call_duration_seconds": ("histogram", ("method",)),
    "hookd_info": ("gauge", ("version",)),
}


def test_hookd_metrics_expose_the_documented_set() -> None:
    metrics = HookdMetrics()
    metrics.set_info("0.1.0")
    metrics.observe_call("one.image.info", 0.002, True)
    families = parse_exposition(render(metrics))
    # Nothing else: no *_created series, no process or platform collectors.
    assert set(families) == set(REQUIRED)
    for name, (kind, labels) in REQUIRED.items():
        family = families[name]
        assert family.type == kind, name
        for series in family.samples:
            assert tuple(n for n, _ in series) == labels, (name, series)
        for suffix, part in family.parts.items():
            assert part, (name, suffix)
            for series in part:
                names = tuple(n for n, _ in series)
                assert names == (tuple(sorted((*labels, "le"))) if suffix == "_bucket"
                                 else labels), (name, suffix, series)
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
    # What the reconciler passes: a job's causes (hookd.triggers.Cause values).
    for label in ("event", "sweep", "reload", "cli", "retry", "concurrent", "event", "event"):
        metrics.observe_reconcile(label)
    metrics.observe_fix("kvm")
    metrics.observe_fix("Firecracker")
    metrics.observe_failure("transient")
    metrics.observe_call("one.image.info", 0.01, True)  # the client observer's arguments
    metrics.observe_call("one.template.update", 0.5, False)
    metrics.set_queue(4, 2)
    metrics.set_sweep(1.25, 1_780_000_000.5)
    metrics.set_zmq_connected(True)
    metrics.set_leader(True)
    metrics.set_info("0.1.0")
    metrics.set_info("0.2.0")  # a new version replaces the old series
    f = parse_exposition(render(metrics))

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
    assert f["hookd_xmlrpc_call_duration_seconds"].parts["_count"] == {
        (("method", "one.image.info"),): 1, (("method", "one.template.update"),): 1}


def test_label_values_are_escaped() -> None:
    metrics = HookdMetrics()
    version = '0.1.0+"dev"\\build\nline'
    metrics.set_info(version)
    assert parse_exposition(render(metrics))["hookd_info"].samples == {
        (("version", version),): 1}


def test_free_form_labels_are_bounded() -> None:
    metrics = HookdMetrics()
    for i in range(500):
        metrics.observe_malformed(f"reason {i}\n\"x\"")
    samples = parse_exposition(render(metrics))["hookd_malformed_messages_total"].samples
    assert len(samples) <= 33
    assert samples[(("reason", "other"),)] == 500 - 32
    assert sum(samples.values()) == 500


def test_xmlrpc_call_durations_are_a_histogram() -> None:
    metrics = HookdMetrics()
    info = [0.0003, 0.0008, 0.004, 0.004, 0.2, 45.0, 120.0]
    for duration in info:  # as the client's observer reports them, failed calls included
        metrics.observe_call("one.image.info", duration, duration < 30)
    metrics.observe_call("one.template.update", 1.5, True)
    text = render(metrics)
    parse_exposition(text)  # strict
    families = {f.name: f for f in text_string_to_metric_families(text)}
    histogram = families["hookd_xmlrpc_call_duration_seconds"]
    assert histogram.type == "histogram"
    assert histogram.documentation.startswith("Duration of the XML-RPC calls")
    buckets: dict[str, dict[float, float]] = {}
    totals: dict[tuple[str, str], float] = {}
    for sample in histogram.samples:
        method = sample.labels["method"]
        if sample.name.endswith("_bucket"):
            buckets.setdefault(method, {})[float(sample.labels["le"])] = sample.value
        else:
            totals[(method, sample.name.removeprefix(histogram.name))] = sample.value
    # Sub-millisecond to a minute, then +Inf; cumulative counts.
    assert sorted(buckets["one.image.info"]) == [*XMLRPC_BUCKETS, float("inf")]
    assert XMLRPC_BUCKETS[0] < 0.001 and XMLRPC_BUCKETS[-1] >= 30  # one.timeout's default
    for method, durations in (("one.image.info", info), ("one.template.update", [1.5])):
        assert buckets[method] == {
            le: sum(1 for d in durations if d <= le) for le in buckets[method]}, method
        assert totals[(method, "_count")] == len(durations)
        assert totals[(method, "_sum")] == pytest.approx(sum(durations))
    assert buckets["one.image.info"][0.0005] == 1
    assert buckets["one.image.info"][0.005] == 4
    assert buckets["one.image.info"][60.0] == 6
    assert buckets["one.image.info"][float("inf")] == 7
    # The counter keeps counting every call.
    calls = families["hookd_xmlrpc_calls"]  # the parser drops the _total suffix
    assert {s.labels["method"]: s.value for s in calls.samples} == {
        "one.image.info": 7, "one.template.update": 1}


def test_method_labels_are_bounded() -> None:
    metrics = HookdMetrics()
    for i in range(500):
        metrics.observe_call(f"one.made.up{i}", 0.001, False)
    families = parse_exposition(render(metrics))
    calls = families["hookd_xmlrpc_calls_total"].samples
    assert len(calls) == 129
    assert calls[(("method", "other"),)] == 500 - 128
    counts = families["hookd_xmlrpc_call_duration_seconds"].parts["_count"]
    assert len(counts) == 129
    assert sum(counts.values()) == 500


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_observations_are_not_lost() -> None:
    metrics = HookdMetrics()
    threads_n, per_thread = 8, 2000
    barrier = threading.Barrier(threads_n + 1)
    renders: list[str] = []

    def work() -> None:
        barrier.wait()
        for i in range(per_thread):
            metrics.observe_event("api")
            metrics.observe_malformed(f"reason{i % 40}")  # races on the label bound too
            metrics.observe_call("one.image.info", 0.001, True)

    def scrape() -> None:
        barrier.wait()
        for _ in range(50):
            renders.append(render(metrics))

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    threads.append(threading.Thread(target=scrape))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    families = parse_exposition(render(metrics))
    total = threads_n * per_thread
    assert families["hookd_events_received_total"].samples[(("kind", "api"),)] == total
    malformed = families["hookd_malformed_messages_total"].samples
    assert len(malformed) == 33 and sum(malformed.values()) == total
    assert families["hookd_xmlrpc_call_duration_seconds"].parts["_count"] == {
        (("method", "one.image.info"),): total}
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
    registry = CollectorRegistry()
    Gauge("up_flag", "Up.", registry=registry).set(1)
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
        MetricsServer(CollectorRegistry(), host=host, port=0)


def test_server_lifecycle_errors() -> None:
    server = MetricsServer(CollectorRegistry())
    server.start()
    try:
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(ValueError, match="port"):
        MetricsServer(CollectorRegistry(), port=70000)


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
    assert max(results) <= (metrics.registry.get_sample_value(
        "hookd_events_received_total", {"kind": "api"}) or 0)
