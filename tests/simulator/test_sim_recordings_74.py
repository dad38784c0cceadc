"""Replay the calls recorded from a real oned 7.4.0 and compare bytes, documents, events.

``../shared/opennebula-recorded/7.4.0`` (its README.md and index.json): 22 XML-RPC calls
made on 2026-12-02 against oned built from ``release-7.4.0`` (solo, sqlite, dummy drivers),
and every message the stock hook manager published meanwhile (``zmq_all_frames.jsonl``).

The world of that recording is rebuilt in a 7.4-flavour simulator: the bootstrap objects,
cluster 100 ``rec-cluster`` with ``kvm-host-01`` (kvm) and ``lxc-host-01`` (lxc), both
monitored by the dummy IM; dummy datastores 100 ``rec-files``, 101 ``rec-images`` and 102
``rec-system``; the KERNEL image 0 ``kvm-kernel`` that existed before the recording started;
the Linux Containers marketplace (1) enabled on the recording's local simplestreams index
``https://127.0.0.1:8444/`` with the apps 0-2 its driver listed. Then the recorded request
bodies are POSTed verbatim (the simulator's oneadmin password is the recorded
``REDACTED``) and

* every response must be byte-identical after normalising times (REGTIME, MODTIME, the lock
  TIME), the ID of the request that holds a lock (REQ_ID) and the parse error's line number
  (the template parser's running line counter: it grows while a real oned runs);
* the datastore pool must be identical once the monitored capacities are normalised, the
  host pool must have the recorded structure (its capacities and the dummy probe's
  HYPERVISOR=dummy are monitoring data), its PCI devices and NUMA topology the recorded
  values, and the configuration must agree with the recorded one wherever the recording
  oned was not configured for the test (ports, monitoring intervals, dummy VM drivers);
* the hook manager must publish the recorded messages: same keys in the same order, bodies
  decoded and compared after the same normalisation.
"""

from __future__ import annotations

import base64
import json
import re
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookd.testing import Simulator, builders, xmltree
from hookd.testing.seed import add_linuxcontainers_app
from tests.shared_data import require_recorded_74
from tests.simulator.simhelpers import EventTap, collapse_repeats, deep_shape, replay_call

SESSION = "oneadmin:REDACTED"
ENDPOINT = "https://127.0.0.1:8444/"
# Linux Containers apps 0-2 of the recording: distro, version, build stamp, MD5 (the driver's
# MD5 hashes its option hash, so it is taken from the recording).
RECORDED_APPS = (
    ("alpine", "3.20", "20250102_13:00", "f04d8f78a224c7dd404020e83ff7faec"),
    ("debian", "bookworm", "20250102_05:24", "7254264ce7656c39b5096b4f093e7221"),
    ("ubuntu", "noble", "20250102_07:42", "59f1787f2502bc01e988d9812601e763"),
)
STRUCTURAL = {"02_one.system.config", "13_one.hostpool.info", "14_one.datastorepool.info"}
# Configuration values the recording oned had from its test setup, not from the stock
# oned.conf the simulator imitates: the ports of each run, faster monitoring (15 s / 30 s)
# and one_vmm_dummy behind the kvm and lxc VM_MADs; the simulator's own dummy VM_MAD.
LOCAL_CONFIG = {("PORT", ""), ("HM_MAD", ""), ("MONITORING_INTERVAL_DATASTORE", ""),
                ("MONITORING_INTERVAL_MARKET", ""), ("VM_MAD", "kvm"), ("VM_MAD", "lxc"),
                ("VM_MAD", "dummy")}


def recorded(name: str) -> Path:
    return require_recorded_74() / name


def normalise(text: str) -> str:
    for tag in ("REGTIME", "MODTIME", "TIME", "REQ_ID"):
        text = re.sub(rf"(<|&lt;){tag}(>|&gt;)\d+", rf"\1{tag}\2N", text)
    text = re.sub(r"(Parse error: .*? at line )\d+(, columns)", r"\1N\2", text)
    return re.sub(r"<OPENNEBULA_CONFIGURATION>.*</OPENNEBULA_CONFIGURATION>", "CONFIG", text,
                  flags=re.DOTALL)


def without_capacity(text: str) -> str:
    return re.sub(r"<(TOTAL_MB|FREE_MB|USED_MB)>\d+", r"<\1>N", text)


def build_recording_world(sim: Simulator) -> None:
    world = sim.world
    with world.lock:
        cluster = builders.add_cluster(world, "rec-cluster")
        for name, mad in (("kvm-host-01", "kvm"), ("lxc-host-01", "lxc")):
            builders.add_host(world, name, mad, cluster.oid, im_mad="dummy")
        dummy = (20480, 20480, 9720)
        builders.add_datastore(world, "rec-files", "FILE_DS", ds_mad="dummy", tm_mad="dummy",
                               cluster_ids=(cluster.oid,), capacity=dummy)
        builders.add_datastore(world, "rec-images", "IMAGE_DS", ds_mad="dummy",
                               tm_mad="dummy", cluster_ids=(cluster.oid,), capacity=dummy)
        builders.add_datastore(world, "rec-system", "SYSTEM_DS", tm_mad="dummy",
                               cluster_ids=(cluster.oid,))
        market = world.markets.get(1)
        assert market is not None and market.market_mad == "linuxcontainers"
        market.template.replace("ENDPOINT", ENDPOINT)
        market.state = 0
        market.invalidate()
        for distro, version, stamp, md5 in RECORDED_APPS:
            add_linuxcontainers_app(world, market.oid, distro, version, stamp,
                                    endpoint=ENDPOINT, md5=md5)
    ok, kernel, *_ = sim.call(
        "one.image.allocate", 'NAME="kvm-kernel"\nTYPE="KERNEL"\n'
        'PATH="/var/tmp/vmlinux.dummy"\n'
        'DESCRIPTION="Dummy KVM kernel for the hook-daemon test install"\n', 100)
    assert ok and kernel == 0
    assert sim.wait_image_state(0, "READY")


def inner(body: bytes) -> str:
    """The document in a ``[true, "<XML>", 0]`` response."""
    (result,), _ = xmlrpc.client.loads(body)
    assert isinstance(result, list) and result[0] is True, result
    document = result[1]
    assert isinstance(document, str)
    return document


@pytest.fixture
def replay() -> Iterator[tuple[Simulator, list[dict[str, Any]]]]:
    calls = json.loads(recorded("index.json").read_text())["calls"]
    sim = Simulator(one_version="7.4", seed=False, auth=SESSION, ready_delay=0.02).start()
    try:
        build_recording_world(sim)
        yield sim, calls
    finally:
        sim.stop()


def test_recorded_74_session_replays_identically(
    replay: tuple[Simulator, list[dict[str, Any]]],
) -> None:
    sim, calls = replay
    assert len(calls) == 22
    tap = EventTap(sim.zmq_url, sim.xmlrpc_url, SESSION, [b"EVENT "])
    mismatches: list[str] = []
    try:
        for entry in calls:
            name = entry["file"]
            request = recorded(f"{name}.request.xml").read_bytes()
            body = replay_call(sim.xmlrpc_url, name, request, entry)
            recorded_body = recorded(f"{name}.response.xml").read_bytes()
            if name in STRUCTURAL:
                compare_document(name, inner(body), inner(recorded_body))
            elif normalise(body.decode()) != normalise(recorded_body.decode()):
                mismatches.append(name)
            if entry["method"] == "one.image.allocate":
                assert sim.wait_image_state(entry["result"]["value"], "READY"), name
        assert not mismatches, f"responses differ from the recording: {mismatches}"
        actual = [(e.key.decode(), normalise(e.xml)) for e in tap.drain(0.5)]
    finally:
        tap.close()
    frames = recorded("zmq_all_frames.jsonl").read_text().splitlines()
    expected = [(e["key"], normalise(base64.b64decode(e["body_b64"]).decode("utf-8")))
                for e in map(json.loads, frames)]
    assert [k for k, _ in actual] == [k for k, _ in expected]
    for (key, got), (_, want) in zip(actual, expected, strict=True):
        assert got == want, key


def compare_document(name: str, ours: str, theirs: str) -> None:
    if name == "14_one.datastorepool.info":
        assert without_capacity(ours) == without_capacity(theirs)
    elif name == "13_one.hostpool.info":
        our_pool, their_pool = xmltree.parse(ours), xmltree.parse(theirs)
        assert collapse_repeats(deep_shape(our_pool)) == collapse_repeats(deep_shape(their_pool))
        for our_host, their_host in zip(our_pool.elements(), their_pool.elements(), strict=True):
            for part in ("PCI_DEVICES", "NUMA_NODES"):
                assert _share(our_host, part) == _share(their_host, part), part
    else:
        compare_config(ours, theirs)


def _share(host: xmltree.Element, part: str) -> list[tuple[str, str]]:
    share = host.first("HOST_SHARE")
    assert share is not None
    element = share.first(part)
    assert element is not None
    return _leaves(element, "")


def _leaves(element: xmltree.Element, path: str) -> list[tuple[str, str]]:
    here = f"{path}/{element.name}"
    children = element.elements()
    if not children:
        return [(here, element.text())]
    return [leaf for child in children for leaf in _leaves(child, here)]


def compare_config(ours: str, theirs: str) -> None:
    """Every attribute the simulator reports has the recorded value (or is local setup)."""
    our_config, their_config = _config(ours), _config(theirs)
    names = [e.name for e in xmltree.parse(ours).elements()]
    assert names == sorted(names), "attributes are sorted by name"
    differing = {key: (value, their_config.get(key)) for key, value in our_config.items()
                 if key not in LOCAL_CONFIG and their_config.get(key) != value}
    assert not differing
    assert our_config[("DEFAULT_DEVICE_PREFIX", "")] == ["sd"]
    assert ("DEFAULT_CDROM_DEVICE_PREFIX", "") not in their_config


def _config(document: str) -> dict[tuple[str, str], list[Any]]:
    """Attributes by (name, NAME of a vector); vectors as dicts."""
    out: dict[tuple[str, str], list[Any]] = {}
    for element in xmltree.parse(document).elements():
        if element.elements():
            values = {e.name: e.text() for e in element.elements()}
            out.setdefault((element.name, values.get("NAME", "")), []).append(values)
        else:
            out.setdefault((element.name, ""), []).append(element.text())
    return out
