"""``python -m hookd.testing`` in its own process, driven remotely."""

from __future__ import annotations

import signal
import subprocess
import sys

import pyone

from hookd.testing import SimulatorClient
from hookd.testing.pytest_plugin import StandaloneSimulator
from tests.simulator.simhelpers import SubscriberProcess


def test_client_in_another_process(simulator_process: SimulatorClient) -> None:
    client = simulator_process
    assert client.one_version == "6.8.3"
    assert client.xmlrpc_url.startswith("http://127.0.0.1:")
    assert client.zmq_url.startswith("tcp://127.0.0.1:")
    one = pyone.OneServer(client.xmlrpc_url, session=client.session)
    assert one.system.version() == "6.8.3"
    sub = SubscriberProcess(client.zmq_url, [b"EVENT STATE IMAGE/READY/"])
    try:
        sub.wait_ready(client.xmlrpc_url, client.session)
        seed = client.seed_info()
        client.controls.reset_counters()
        image_id, template_id = client.export_app(seed["apps"]["dockerhub/alpine"],
                                                  seed["datastores"]["kvm-images"])
        assert template_id is not None
        assert client.wait_image_state(image_id, "READY", 10)
    finally:
        events = sub.stop()
    assert [e.key for e in events] == [f"EVENT STATE IMAGE/READY//{image_id} ".encode()]
    assert "<NAME>alpine</NAME>" in client.image_xml(image_id)
    assert "<NAME>alpine</NAME>" in client.template_xml(template_id)
    assert client.controls.counters()["one.image.allocate"] == 1
    assert client.call("one.image.info", image_id)[0] is True


def test_sigint_stops_cleanly() -> None:
    standalone = StandaloneSimulator(["--xmlrpc", "127.0.0.1:0", "--zmq", "tcp://127.0.0.1:0"])
    assert standalone.terminate(sig=signal.SIGINT) == 0


def test_sigterm_stops_cleanly() -> None:
    standalone = StandaloneSimulator(["--xmlrpc", "127.0.0.1:0", "--zmq", "tcp://127.0.0.1:0",
                                      "--one-version", "7.4", "--no-seed"])
    assert standalone.banner.endswith("one_version=7.4.0")
    assert len(standalone.banner.split()) == 5
    client = SimulatorClient(standalone.xmlrpc_url)
    assert client.call("one.imagepool.info", -2, -1, -1)[1] == "<IMAGE_POOL></IMAGE_POOL>"
    assert standalone.terminate() == 0
    assert standalone.trailing_output == ""  # exactly one line was printed


def test_non_loopback_addresses_are_refused() -> None:
    for args in (["--xmlrpc", "0.0.0.0:2633"], ["--zmq", "tcp://192.0.2.1:2101"],
                 ["--xmlrpc", "example.com:2633"]):
        result = subprocess.run([sys.executable, "-m", "hookd.testing", *args],
                                capture_output=True, timeout=30, check=False)
        assert result.returncode == 2, args
        assert b"loopback" in result.stderr
