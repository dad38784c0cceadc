"""Controls: fault injection, event-stream sabotage, Raft roles, counters, bulk seeding."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import xmlrpc.client
from typing import Any

import pyone
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from hookd.testing import Simulator, xmltree
from tests.simulator.simhelpers import event_tap, rpc

ADMIN = "oneadmin:opennebula"


class _TimeoutTransport(xmlrpc.client.Transport):
    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = 0.5
        return connection


def test_latency_delays_the_answer(simulator: Simulator) -> None:
    simulator.controls.set_latency("one.system.version", 0.3)
    started = time.monotonic()
    assert simulator.call("one.system.version")[0] is True
    assert time.monotonic() - started >= 0.3
    simulator.controls.set_latency("one.system.version", 0)


def test_timeout_http500_and_close(simulator: Simulator) -> None:
    c = simulator.controls
    c.fail_next("one.image.info", "timeout", seconds=1.5)
    proxy = xmlrpc.client.ServerProxy(simulator.xmlrpc_url, transport=_TimeoutTransport())
    with pytest.raises(socket.timeout):
        proxy.one.image.info(ADMIN, 0)
    c.fail_next("one.image.info", "http500", count=2)
    for _ in range(2):
        with pytest.raises(xmlrpc.client.ProtocolError) as error:
            rpc(simulator.xmlrpc_url, "one.image.info", ADMIN, 0)
        assert error.value.errcode == 500
    # xmlrpc.client retries once after a dropped connection: fail both attempts
    c.fail_next("one.image.info", "close", count=2)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        rpc(simulator.xmlrpc_url, "one.image.info", ADMIN, 0)
    assert simulator.call("one.image.info", 0)[0] is True


def test_locked_and_error_code_failures(simulator: Simulator) -> None:
    c = simulator.controls
    kernel = simulator.seed_info.images["kernel-kvm"]
    c.fail_next("one.image.update", "locked")
    assert simulator.call("one.image.update", kernel, 'A="1"', 1) == [
        False, f"[one.image.update] User [0] : IMAGE is locked. [{kernel}].", 512, -1, -1]
    c.fail_next("one.image.update", "error", code="internal", message="backend exploded")
    assert simulator.call("one.image.update", kernel, 'A="1"', 1) == [
        False, "[one.image.update] backend exploded", 0x2000, -1, -1]
    c.fail_next("one.image.info", "error", code=0x400)
    with pytest.raises(pyone.OneNoExistsException, match=rf"Error getting image \[{kernel}\]"):
        pyone.OneServer(simulator.xmlrpc_url, session=ADMIN).image.info(kernel)
    assert simulator.call("one.image.update", kernel, 'A="1"', 1)[0] is True


def test_publisher_runs_in_a_child_process_that_is_reaped() -> None:
    sim = Simulator(seed=False).start()
    pid = sim.publisher_pid
    assert pid is not None and pid != os.getpid()
    os.kill(pid, 0)  # alive
    sim.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_counters(simulator: Simulator) -> None:
    c = simulator.controls
    c.reset_counters()
    simulator.call("one.system.version")
    simulator.call("one.system.version")
    simulator.call("one.image.info", 0)
    assert c.counters() == {"one.system.version": 2, "one.image.info": 1}
    c.reset_counters()
    assert c.counters() == {}


def test_drop_events(simulator: Simulator) -> None:
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN,
                   [b"EVENT API one.system.version"]) as tap:
        simulator.controls.drop_events(2)
        for _ in range(3):
            simulator.call("one.system.version")
        events = tap.drain(0.3)
    assert [e.key for e in events] == [b"EVENT API one.system.version 1"]


def _wait_stat(sim: Simulator, key: str, value: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sim.controls.publisher_stats()[key] != value:
        assert time.monotonic() < deadline, f"publisher {key} never became {value}"
        time.sleep(0.01)


def test_publisher_restart_loses_events_and_subscribers_reconnect(simulator: Simulator) -> None:
    old_pid = simulator.publisher_pid
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN,
                   [b"EVENT API one.system.version"]) as tap:
        simulator.controls.restart_publisher(down_seconds=1.0, wait=False)
        _wait_stat(simulator, "down", 1)
        simulator.call("one.system.version")  # produced while the driver is down: lost
        _wait_stat(simulator, "down", 0)
        tap.sync()  # the SUB reconnected on its own
        simulator.call("one.system.version")
        events = tap.drain(0.3)
    assert simulator.publisher_pid != old_pid
    assert len(events) == 1
    assert simulator.controls.publisher_stats()["dropped"] >= 1


def test_frozen_publisher_is_detected_by_heartbeats(simulator: Simulator) -> None:
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.HEARTBEAT_IVL, 100)
    sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 300)
    sub.setsockopt(zmq.SUBSCRIBE, b"EVENT ")
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    try:
        sub.connect(simulator.zmq_url)
        assert _next_event(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        simulator.controls.freeze_publisher()
        try:
            assert _next_event(monitor)["event"] == zmq.EVENT_DISCONNECTED
        finally:
            simulator.controls.thaw_publisher()
        assert _next_event(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        sub.disable_monitor()
        monitor.close(0)
        sub.close(0)
        context.term()


def _next_event(monitor: zmq.Socket[bytes], timeout: float = 10.0) -> dict[str, int]:
    assert monitor.poll(int(timeout * 1000)), "no monitor event"
    event = recv_monitor_message(monitor)
    return {"event": int(event["event"])}


def test_raft_roles(simulator: Simulator) -> None:
    c = simulator.controls
    kernel = simulator.seed_info.images["kernel-kvm"]

    def raft_state() -> tuple[str, str]:
        doc = xmltree.parse(simulator.call("one.zone.raftstatus")[1])
        return (doc.first("SERVER_ID") or doc).text(), (doc.first("STATE") or doc).text()

    assert raft_state() == ("-1", "0")
    c.set_raft_role("leader")
    assert raft_state()[1] == "3"
    c.set_raft_role("candidate")
    assert raft_state()[1] == "1"
    assert simulator.call("one.system.version") == [
        False, "[one.system.version] Cannot process request, oned cluster in election mode",
        0x2000, -1, -1]
    assert simulator.call("one.image.info", kernel)[0] is True  # not leader-only
    c.set_raft_role("follower")
    assert raft_state()[1] == "2"
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN,
                   [b"EVENT API one.image.enable", b"EVENT IMAGE", b"EVENT STATE"]) as tap:
        assert simulator.call("one.image.enable", kernel, False) == [True, kernel, 0]
        events = tap.drain(0.3)
    # forwarded to the leader: the follower publishes RESULT 0 and no state change
    assert [e.key for e in events] == [b"EVENT API one.image.enable 0"]
    assert "<TYPE>OUT</TYPE>" not in events[0].xml
    c.set_raft_role("solo")
    assert raft_state() == ("-1", "0")
    with pytest.raises(ValueError):
        c.set_raft_role("emperor")


def test_image_error_controls(simulator: Simulator) -> None:
    c = simulator.controls
    kernel = simulator.seed_info.images["kernel-kvm"]
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN, [b"EVENT STATE IMAGE/"]) as tap:
        c.set_image_error(kernel, "disk on fire")
        events = tap.wait_for(b"EVENT STATE IMAGE/ERROR")
        c.fail_next_ready(None, "ERROR: cp: registry unreachable")
        image_id, _ = simulator.export_app(simulator.seed_info.apps["dockerhub/httpd"],
                                           simulator.seed_info.datastores["kvm-images"])
        events += tap.wait_for(f"EVENT STATE IMAGE/ERROR//{image_id} ".encode())
        c.set_image_state(image_id, "READY")
        events += tap.wait_for(f"EVENT STATE IMAGE/READY//{image_id} ".encode())
    assert events[0].key == f"EVENT STATE IMAGE/ERROR//{kernel} ".encode()
    error = xmltree.parse(simulator.image_xml(kernel)).first("TEMPLATE")
    assert error is not None and (error.first("ERROR") or error).text().endswith(
        " : disk on fire")
    failure = next(e for e in events if e.key == f"EVENT STATE IMAGE/ERROR//{image_id} ".encode())
    failed = xmltree.parse(failure.xml).first("IMAGE")
    assert failed is not None
    assert "Error copying image in the datastore: ERROR: cp: registry unreachable" in (
        (failed.first("TEMPLATE") or failed).text())


def test_lock_control(simulator: Simulator) -> None:
    kernel = simulator.seed_info.images["kernel-kvm"]
    simulator.controls.lock("image", kernel, 2)
    assert simulator.call("one.image.update", kernel, 'A="1"', 1)[2] == 0x200
    assert simulator.call("one.image.clone", kernel, "k2")[2] == 0x800  # kernels: no clone
    simulator.controls.unlock("image", kernel)
    assert simulator.call("one.image.update", kernel, 'A="1"', 1)[0] is True


def test_world_edits_and_exporting_a_new_app(simulator: Simulator) -> None:
    c = simulator.controls
    cluster = c.add_cluster("edge")
    host = c.add_host("edge-kvm-01", "kvm", cluster)
    ds = c.add_datastore("edge-images", "IMAGE_DS", cluster_ids=[cluster])
    market = c.add_marketplace("Edge Registry", "docker_registry",
                               template='BASE_URL="http://localhost:5999"\n')
    app = c.add_app(market, "edge-app", "docker://localhost:5999/edge-app?size=512",
                    apptemplate='DRIVER="raw"\nDEV_PREFIX="vd"\n', vmtemplate='CPU="1"\n')
    cluster_doc = xmltree.parse(simulator.call("one.cluster.info", cluster)[1])
    assert [i.text() for i in (cluster_doc.first("HOSTS") or cluster_doc).elements()] == [
        str(host)]
    image_id, template_id = simulator.export_app(app, ds)
    assert template_id is not None
    assert simulator.wait_image_state(image_id, "READY")


def test_bulk_seeding_and_paged_reads(simulator: Simulator) -> None:
    c = simulator.controls
    ds = simulator.seed_info.datastores["kvm-images"]
    images = c.bulk_images(100_000, 'PATH="docker://img{i}?size=64"\nDESCRIPTION="bulk {i}"\n',
                           ds, name_pattern="bulk-{i}")
    templates = c.bulk_templates(100_000, 'CPU="1"\nDISK=[IMAGE_ID="{image_id}"]\n',
                                 image_ids=images, name_pattern="tpl-{i}")
    assert len(images) == len(templates) == 100_000
    page = xmltree.parse(simulator.call("one.imagepool.info", -2, 100, -50)[1])
    ids = [int((i.first("ID") or i).text()) for i in page.elements()]
    assert ids == list(range(images[-1] - 100, images[-1] - 150, -1))
    sample = page.elements()[0]
    assert (sample.first("STATE") or sample).text() == "1"
    description = (sample.first("TEMPLATE") or sample).first("DESCRIPTION")
    index = ids[0] - images[0]
    assert description is not None and description.text() == f"bulk {index}"
    tpage = xmltree.parse(simulator.call("one.templatepool.info", -2, 0, -2)[1])
    disk = (tpage.elements()[0].first("TEMPLATE") or tpage).first("DISK")
    assert disk is not None and disk.text() == str(images[-1])
    ranged = xmltree.parse(simulator.call("one.templatepool.info", -2, templates[10],
                                          templates[12])[1])
    assert len(ranged.elements()) == 3
    with pytest.raises(ValueError, match="already taken"):
        c.bulk_images(1, 'PATH="/x"', ds, name_pattern="bulk-0")


def test_concurrent_calls_are_served(simulator: Simulator) -> None:
    simulator.controls.set_latency("one.system.version", 0.2)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(
        simulator.call("one.system.version")[1])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["6.8.3"] * 8


def test_election_mode_refusal_publishes_an_api_event_on_6x_only(
    simulator: Simulator, simulator_74: Simulator,
) -> None:
    """6.8.3 publishes the refused call's API event (src/rm/Request.cc:435-439); 7.4.0
    returns before it (src/rm/xml-rpc/RequestXRPC.cc:125-132)."""
    for sim, published in ((simulator, True), (simulator_74, False)):
        with event_tap(sim.zmq_url, sim.xmlrpc_url, ADMIN,
                       [b"EVENT API one.template.allocate"]) as tap:
            sim.controls.set_raft_role("candidate")
            refused = sim.call("one.template.allocate", 'NAME="refused"\n')
            sim.controls.set_raft_role("solo")
            assert sim.call("one.template.allocate", 'NAME="accepted"\n')[0] is True
            keys = [e.key for e in tap.wait_for(b"EVENT API one.template.allocate 1")]
        assert refused[:3] == [
            False, "[one.template.allocate] Cannot process request, oned cluster in election "
            "mode", 0x2000]
        refusal = [b"EVENT API one.template.allocate 0"] if published else []
        assert keys == [*refusal, b"EVENT API one.template.allocate 1"]
