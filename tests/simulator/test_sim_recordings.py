"""Replay the calls recorded from a real oned 6.8.3 and compare bytes, documents, events.

The world is rebuilt as it was during the recording (bootstrap objects, ``rec-cluster``
with three hosts, dummy ``rec-files``/``rec-images``/``rec-system`` datastores, the three
DockerHub apps), then the recorded request bodies are POSTed verbatim (the simulator's
oneadmin password is the recorded ``REDACTED``). Times, lock times and monitored
capacities are normalised; everything else must be identical.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from hookd.testing import Simulator, builders, xmltree
from hookd.testing.seed import DOCKER_APPTEMPLATE, DOCKER_VMTEMPLATE, DOCKERHUB_APPS
from tests.simulator.simhelpers import (
    EventTap,
    collapse_repeats,
    deep_shape,
    recorded_dir,
    recorded_xmlrpc,
    replay_call,
    value_kind,
)

SESSION = "oneadmin:REDACTED"

# Calls whose response body must be byte-identical after normalisation.
EXACT = {
    "marketpool.info.initial", "system.version", "zone.raftstatus", "image.allocate.kernel",
    "image.allocate.os", "image.allocate.os2", "image.info.right_after_allocate",
    "template.allocate", "template.info.before_update", "template.update.merge",
    "template.info", "template.info.extended", "image.update.merge", "image.enable.false",
    "image.info.disabled", "image.enable.true", "image.info", "image.info.kernel",
    "imagepool.info", "templatepool.info", "clusterpool.info", "marketpool.info",
    "marketapppool.info", "marketapp.info", "zone.raftstatus.after",
    "error.image.info.not_found", "error.template.info.not_found",
    "error.bad_auth.system.version", "error.bad_auth.imagepool.info",
    "error.bad_auth.unknown_user", "image.lock", "error.image.update.locked",
    "image.info.locked", "image.unlock", "error.template.update.malformed",
    "image.update.unterminated_quote", "image.info.after_unterminated_quote",
    "error.image.update.malformed", "error.image.allocate.bad_ds",
    "error.image.allocate.name_taken", "error.unknown_method", "error.wrong_param_type",
    "image.allocate.fs_ds.missing_file", "image.allocate.os_docker_path",
    "image.info.os_docker_path",
}
# Calls compared by document structure (monitoring data differs by nature).
STRUCTURAL = {"system.config", "datastorepool.info", "hostpool.info"}
WAIT_READY = {"image.allocate.kernel": 0, "image.allocate.os": 1, "image.allocate.os2": 2,
              "image.allocate.os_docker_path": 5}
SKIPPED_EVENT_STEPS = {"image.allocate.fs_ds.big", "image.allocate.fs_ds.big2"}
SKIPPED_EVENT_CALLS = ("one.cluster.allocate", "one.host.allocate", "one.datastore.allocate",
                       "one.datastore.update")


def normalise(text: str) -> str:
    for tag in ("REGTIME", "TIME", "REQ_ID"):
        text = re.sub(rf"(<|&lt;){tag}(>|&gt;)\d+", rf"\1{tag}\2N", text)
    return re.sub(r"<OPENNEBULA_CONFIGURATION>.*</OPENNEBULA_CONFIGURATION>", "CONFIG", text,
                  flags=re.DOTALL)


def build_recording_world(sim: Simulator) -> None:
    world = sim.world
    with world.lock:
        cluster = builders.add_cluster(world, "rec-cluster")
        for name, mad in (("kvm-host-01", "kvm"), ("lxc-host-01", "lxc"),
                          ("fc-host-01", "firecracker")):
            builders.add_host(world, name, mad, cluster.oid, im_mad="dummy")
        dummy = (20480, 20480, 9720)
        builders.add_datastore(world, "rec-files", "FILE_DS", ds_mad="dummy", tm_mad="dummy",
                               cluster_ids=(cluster.oid,), capacity=dummy)
        builders.add_datastore(world, "rec-images", "IMAGE_DS", ds_mad="dummy",
                               tm_mad="dummy", cluster_ids=(cluster.oid,), capacity=dummy)
        builders.add_datastore(world, "rec-system", "SYSTEM_DS", tm_mad="dummy",
                               cluster_ids=(cluster.oid,))
        for name, regtime, md5, description in DOCKERHUB_APPS[:3]:
            builders.add_app(
                world, 3, name=name,
                source=f"docker://{name}?size=2048&filesystem=ext4&format=raw", md5=md5,
                size_mb=2048, regtime=regtime, description=description,
                publisher="hub.docker.com", link=f"https://hub.docker.com/_/{name}",
                apptemplate=DOCKER_APPTEMPLATE, vmtemplate=DOCKER_VMTEMPLATE,
            )


def enable_dockerhub(sim: Simulator) -> None:
    """What market.update.dockerhub_endpoint + market.enable.dockerhub did."""
    with sim.world.lock:
        market = sim.world.markets.get(3)
        assert market is not None
        market.template.replace("ENDPOINT", "https://127.0.0.1:8443/v2/repositories/library/")
        market.state = 0
        market.invalidate()


@pytest.fixture
def replay() -> Iterator[tuple[Simulator, list[dict[str, Any]]]]:
    index = json.loads(recorded_xmlrpc("index.json").read_text())
    sim = Simulator(seed=False, auth=SESSION, ready_delay=0.02).start()
    try:
        yield sim, index
    finally:
        sim.stop()


def test_recorded_session_replays_identically(
    replay: tuple[Simulator, list[dict[str, Any]]],
) -> None:
    sim, index = replay
    tap = EventTap(sim.zmq_url, sim.xmlrpc_url, SESSION, [b"EVENT "])
    mismatches: list[str] = []
    try:
        for entry in index:
            name = entry["name"]
            if name == "market.enable.dockerhub":
                enable_dockerhub(sim)
            if name == "datastore.allocate.system":
                build_recording_world(sim)
            if name == "image.allocate.os_docker_path":
                ds = sim.seed_info.datastores["default"]
                sim.controls.bulk_images(2, 'PATH="/srv/images/big-disk.img"\n', ds,
                                         name_pattern="filler-{i}")
            if name not in EXACT and name not in STRUCTURAL:
                continue
            request = recorded_xmlrpc(f"{name}.request.xml").read_bytes()
            body = replay_call(sim.xmlrpc_url, name, request, entry)
            recorded_body = recorded_xmlrpc(f"{name}.response.xml").read_bytes()
            if name in EXACT:
                if normalise(body.decode()) != normalise(recorded_body.decode()):
                    mismatches.append(name)
            else:
                compare_structure(name, body)
            if name in WAIT_READY:
                assert sim.wait_image_state(WAIT_READY[name], "READY"), name
            if name == "image.info.right_after_allocate":
                sim.call("one.image.update", 2, 'DESCRIPTION="updated while LOCKED"\n', 1)
        assert not mismatches, f"responses differ from the recording: {mismatches}"
        actual = [(e.key.decode(), normalise(e.xml)) for e in tap.drain(0.5)]
    finally:
        tap.close()
    expected = expected_events()
    assert [k for k, _ in actual] == [k for k, _ in expected]
    for (key, got), (_, want) in zip(actual, expected, strict=True):
        assert got == want, key


def compare_structure(name: str, body: bytes) -> None:
    recorded = recorded_xmlrpc(f"{name}.inner.xml").read_text()
    envelope = xmltree.parse(body)
    strings = list(_strings(envelope))
    ours = xmltree.parse(strings[0])
    theirs = xmltree.parse(recorded)
    if name == "system.config":
        assert [e.name for e in ours.elements()] == sorted(e.name for e in ours.elements())
        return
    assert collapse_repeats(deep_shape(ours)) == collapse_repeats(deep_shape(theirs)), name


def _strings(element: xmltree.Element) -> Iterator[str]:
    for child in element.elements():
        if child.name == "string":
            yield child.text()
        else:
            yield from _strings(child)


def expected_events() -> list[tuple[str, str]]:
    path = recorded_dir() / "events" / "all_events.jsonl"
    out: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        key = event["key"]
        if "HOST" in key.split("/")[0] or event["step"] in SKIPPED_EVENT_STEPS:
            continue
        if any(key.startswith(f"EVENT API {call} ") for call in SKIPPED_EVENT_CALLS):
            continue
        out.append((key, normalise(event["xml"])))
    return out


def test_marketplace_app_documents_match_the_recording(simulator: Simulator) -> None:
    recorded = (recorded_dir() / "xmlrpc" / "marketapp.info.inner.xml").read_text()
    assert simulator.call("one.marketapp.info", 0)[1] == recorded


def test_seeded_documents_have_the_recorded_structure(simulator: Simulator) -> None:
    for method, recorded_name, args in (
        ("one.imagepool.info", "imagepool.info", (-2, -1, -1)),
        ("one.templatepool.info", "templatepool.info", (-2, -1, -1)),
        ("one.datastorepool.info", "datastorepool.info", ()),
        ("one.hostpool.info", "hostpool.info", ()),
        ("one.clusterpool.info", "clusterpool.info", ()),
        ("one.marketpool.info", "marketpool.info", ()),
        ("one.marketapppool.info", "marketapppool.info", (-2, -1, -1)),
    ):
        if method == "one.templatepool.info":
            kernel = simulator.seed_info.images["kernel-kvm"]
            simulator.call("one.template.allocate",
                           f'NAME="n"\nCPU="1"\nDISK=[IMAGE_ID="{kernel}"]\n')
        ours = xmltree.parse(simulator.call(method, *args)[1])
        theirs = xmltree.parse(
            (recorded_dir() / "xmlrpc" / f"{recorded_name}.inner.xml").read_text())
        first_ours, first_theirs = ours.elements()[0], theirs.elements()[0]
        # element order and value kinds of each object, outside the free-form TEMPLATE
        assert [(e.name, _kind(e)) for e in first_ours.elements() if e.name != "TEMPLATE"] == [
            (e.name, _kind(e)) for e in first_theirs.elements() if e.name != "TEMPLATE"
        ], method


def _kind(element: xmltree.Element) -> str:
    return value_kind(element)
