"""hookd end to end: a ``hookd run`` process against the simulator, on real sockets."""

from __future__ import annotations

import base64
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.start_script import readable_start_script
from hookd.testing.client import SimulatorClient
from hookd.testing.daemon_config import wait_for
from hookd.testing.registry import FakeRegistry
from tests.daemon.checks import (
    Export,
    assert_fixed_exactly_once,
    burst,
    image_attr,
    is_fixed,
    wait_all_fixed,
)
from tests.daemon.harness import PASSWORD, Hookd, template_attrs

pytestmark = [pytest.mark.integration]

SimFactory = Callable[..., SimulatorClient]
HookdFactory = Callable[..., Hookd]


def test_import_is_fixed_end_to_end(sim_process: SimFactory, hookd_factory: HookdFactory,
                                    registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    exports = burst(sim, sim.seed_info(), 2, "e2e")
    wait_all_fixed(sim, exports, 30)
    kvm = template_attrs(sim.template_xml(exports[0].template_id))
    assert kvm["OS"]["ROOT"] == "vda"
    assert kvm["OS"]["KERNEL_CMD"] == "console=ttyS0 reboot=k panic=1 rw console=tty0"
    script = base64.b64decode(kvm["CONTEXT"]["START_SCRIPT_BASE64"]).decode()
    assert "'/docker-entrypoint.sh'" in script and "'daemon off;'" in script
    assert kvm["CONTEXT"]["SET_HOSTNAME"] == "$NAME"  # the rest of CONTEXT is kept
    fc = template_attrs(sim.template_xml(exports[1].template_id))
    assert "pci=off" in fc["OS"]["KERNEL_CMD"] and "ROOT" not in fc["OS"]
    assert_fixed_exactly_once(sim.controls.template_changes(), exports)
    # Steady state: template.info + template.update + image.update per fixed image.
    counters = sim.controls.counters()
    assert counters.get("one.template.update") == 2
    fixed = daemon.events("template.fixed")
    assert {e["template_id"] for e in fixed} == {e.template_id for e in exports}
    assert all(e["changes"] and e["hypervisor"] in ("kvm", "firecracker") for e in fixed)
    assert daemon.stop() == 0
    assert daemon.notify is not None and daemon.notify.seen("STOPPING=1")


def test_template_created_or_changed_after_ready_is_fixed(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    seed = sim.seed_info()
    image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                           seed["datastores"]["kvm-images"], name="late")
    assert template_id is not None
    wait_all_fixed(sim, [Export(image_id, template_id, "kvm")], 30)
    # A person creates a new template for the READY image, by name and owner.
    ok, new_id, *_ = sim.call("one.template.allocate",
                              'NAME="late-2"\nCPU="1"\nMEMORY="512"\n'
                              'DISK=[IMAGE="late", IMAGE_UNAME="oneadmin"]\n'
                              'CONTEXT=[NETWORK="YES"]\n')
    assert ok
    wait_all_fixed(sim, [Export(image_id, new_id, "kvm")], 30)
    # ...and adds the image to an existing template that did not use it.
    ok, other, *_ = sim.call("one.template.allocate", 'NAME="plain"\nCPU="1"\nMEMORY="64"\n')
    assert ok
    time.sleep(0.5)
    assert "OS" not in template_attrs(sim.template_xml(other))
    ok, *_ = sim.call("one.template.update", other, f'DISK=[IMAGE_ID="{image_id}"]', 1)
    assert ok
    wait_all_fixed(sim, [Export(image_id, other, "kvm")], 30)
    assert image_attr(sim, image_id, "HOOKD_TEMPLATES") == ",".join(
        str(t) for t in sorted((template_id, new_id, other)))
    assert daemon.stop() == 0


def test_replayed_ready_event_changes_nothing(sim_process: SimFactory,
                                             hookd_factory: HookdFactory,
                                             registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    exports = burst(sim, sim.seed_info(), 1, "replay")
    wait_all_fixed(sim, exports, 30)
    time.sleep(0.5)
    sim.controls.reset_counters()
    image_id = exports[0].image_id
    for _ in range(3):  # disable/enable publishes READY again (DISABLED -> READY)
        assert sim.call("one.image.enable", image_id, False)[0]
        assert sim.call("one.image.enable", image_id, True)[0]
    wait_for(lambda: len(daemon.events("events.connected")) >= 1, 5, "connection")
    time.sleep(1.5)
    counters = sim.controls.counters()
    assert counters.get("one.template.update", 0) == 0
    assert counters.get("one.image.update", 0) == 0
    assert sim.controls.template_changes() == {}
    assert daemon.stop() == 0


def test_persons_start_script_is_kept(sim_process: SimFactory, hookd_factory: HookdFactory,
                                      registry: FakeRegistry) -> None:
    sim = sim_process(ready_delay=1.0)
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    seed = sim.seed_info()
    image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                           seed["datastores"]["lxc-images"], name="mine")
    assert template_id is not None
    # A person writes their own START_SCRIPT before the image is READY.
    ok, *_ = sim.call("one.template.update", template_id,
                      'CONTEXT=[NETWORK="YES", START_SCRIPT="nginx -g \\"daemon on;\\""]', 1)
    assert ok
    wait_for(lambda: image_attr(sim, image_id, "HOOKD_STATUS") is not None, 30, "status")
    ctx = template_attrs(sim.template_xml(template_id))["CONTEXT"]
    assert ctx["START_SCRIPT"] == 'nginx -g "daemon on;"'
    assert "START_SCRIPT_BASE64" not in ctx
    assert "kept the START_SCRIPT a person wrote" in (image_attr(sim, image_id,
                                                                 "HOOKD_REASON") or "")
    assert daemon.stop() == 0


def test_waiting_for_a_kernel_then_fixed_after_sighup(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"kernels": {"kvm": None, "firecracker": None}}).start()
    exports = burst(sim, sim.seed_info(), 1, "waiting")
    image_id = exports[0].image_id
    wait_for(lambda: image_attr(sim, image_id, "HOOKD_STATUS") == "waiting", 30, "waiting")
    assert image_attr(sim, image_id, "HOOKD_REASON") == (
        "waiting for a kvm kernel (set kernels.kvm in hookd.conf)")
    config = yaml.safe_load(daemon.config_file.read_text())
    config["kernels"] = {"kvm": "kernel-kvm"}
    daemon.config_file.write_text(yaml.safe_dump(config))
    daemon.signal(signal.SIGHUP)
    wait_all_fixed(sim, exports, 30)
    assert daemon.events("hookd.reloaded")
    assert daemon.notify is not None and daemon.notify.seen("RELOADING=1")
    assert daemon.stop() == 0


def test_sigterm_during_a_burst_finishes_in_flight_and_exits_0(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    sim.controls.set_latency("one.template.update", 0.3)
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    exports = burst(sim, sim.seed_info(), 8, "term")
    wait_for(lambda: sim.controls.counters().get("one.template.update", 0) >= 1, 30, "a fix")
    started = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    assert time.monotonic() - started < 15
    stopped = daemon.events("hookd.stopped")
    assert stopped and stopped[-1]["clean"] is True
    # Whatever was applied was applied whole: no template is half-written.
    for export in exports:
        attrs = template_attrs(sim.template_xml(export.template_id))
        os_vec = attrs.get("OS") or {}
        assert ("KERNEL_DS" in os_vec) == ("START_SCRIPT_BASE64" in (attrs.get("CONTEXT") or {}))


def test_oned_unreachable_at_start_then_appears(tmp_path: Path, hookd_factory: HookdFactory,
                                               registry: FakeRegistry,
                                               sim_process: SimFactory) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    xmlrpc, zmq_url = f"http://127.0.0.1:{ports[0]}/RPC2", f"tcp://127.0.0.1:{ports[1]}"
    daemon = hookd_factory(xmlrpc, zmq_url, registry).start()  # READY=1 while waiting
    assert daemon.notify is not None
    assert any("waiting for oned" in m for _, m in daemon.notify.messages)
    time.sleep(1.5)
    assert daemon.process is not None and daemon.process.poll() is None  # no crash loop
    sim = sim_process("--xmlrpc", f"127.0.0.1:{ports[0]}", "--zmq", zmq_url)
    exports = burst(sim, sim.seed_info(), 1, "late-oned")
    wait_all_fixed(sim, exports, 30)
    assert daemon.stop() == 0


@st.composite
def malformed(draw: st.DrawFn) -> list[bytes]:
    key = draw(st.sampled_from([b"EVENT STATE IMAGE/READY//", b"EVENT API one.template.update 1",
                                b"EVENT API one.template.allocate 1"]))
    kind = draw(st.integers(0, 9))
    image_id = str(draw(st.integers(0, 10**6))).encode()
    if key.startswith(b"EVENT STATE"):
        key = key + image_id + b" "
    junk = draw(st.binary(max_size=64))
    if kind == 0:
        return [key]
    if kind == 1:
        return [key, b"QUJD", junk]
    if kind == 2:
        return [key, junk + b"!*"]
    if kind == 3:
        return [key, base64.b64encode(junk)]
    if kind == 4:
        return [key, base64.b64encode(b'<!DOCTYPE a [<!ENTITY x "y">]><HOOK_MESSAGE>&x;'
                                      b"</HOOK_MESSAGE>")]
    if kind == 5:
        return [key, base64.b64encode(b"<WRONG_ROOT/>")]
    if kind == 6:
        body = (b"<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>IMAGE</HOOK_OBJECT>"
                b"<STATE>READY</STATE><RESOURCE_ID>" + draw(st.sampled_from([b"", b"x", b"-1"]))
                + b"</RESOURCE_ID></HOOK_MESSAGE>")
        return [key, base64.b64encode(body)]
    if kind == 7:
        return [key + b"garbage", base64.b64encode(b"<HOOK_MESSAGE/>")]
    if kind == 8:
        return [key, base64.b64encode(b"<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE>" + junk)]
    # A subscribed prefix, but a key over the size bound.
    return [b"EVENT STATE IMAGE/READY//" + b"9" * draw(st.integers(300, 400)) + b" ", b""]


OVERSIZED = [b"EVENT STATE IMAGE/READY//1 ", b"A" * (4 * 1024 * 1024 + 4)]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ten_thousand_malformed_messages_then_a_valid_one(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process(ready_delay=4.0)
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        # hookd reads oned over XML-RPC but listens to this test's publisher instead of
        # oned's, so every message it gets is one the test chose.
        daemon = hookd_factory(sim.xmlrpc_url, f"tcp://127.0.0.1:{port}", registry).start()
        wait_for(lambda: bool(daemon.events("events.connected")), 10, "subscription")
        seed = sim.seed_info()
        image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                               seed["datastores"]["kvm-images"], name="flood")
        assert template_id is not None
        # The export's API events went to oned's stream, not to this one: a reload sweep
        # indexes the new template while the image is still LOCKED (nothing to fix yet).
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: len(daemon.events("sweep.done")) >= 2, 10, "the reload sweep")
        assert image_attr(sim, image_id, "HOOKD_STATUS") is None
        assert daemon.process is not None
        sent: list[int] = []
        rss: list[int] = []

        @settings(max_examples=120, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(malformed(), min_size=100, max_size=100))
        def feed(batch: list[list[bytes]]) -> None:
            for frames in batch:
                pub.send_multipart(frames)
                sent.append(1)
            if len(sent) == 1000:
                wait_for(lambda: len(daemon.events("events.malformed")) >= 1000, 60,
                         "the first thousand")
                rss.append(_rss_kb(daemon.process.pid))  # type: ignore[union-attr]

        feed()
        for _ in range(3):
            pub.send_multipart(OVERSIZED)
            sent.append(1)
        assert len(sent) >= 10_000
        wait_for(lambda: len(daemon.events("events.malformed")) >= len(sent), 120,
                 "every malformed message to be rejected")
        rss.append(_rss_kb(daemon.process.pid))
        assert rss[-1] - rss[0] < 30_000, f"RSS grew {rss[0]} -> {rss[-1]} kB"
        assert sim.wait_image_state(image_id, "READY", timeout=30)
        assert image_attr(sim, image_id, "HOOKD_STATUS") is None  # hookd has not been told
        body = ("<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>IMAGE</HOOK_OBJECT>"
                f"<STATE>READY</STATE><RESOURCE_ID>{image_id}</RESOURCE_ID>"
                + sim.image_xml(image_id) + "</HOOK_MESSAGE>")
        pub.send_multipart([f"EVENT STATE IMAGE/READY//{image_id} ".encode(),
                            base64.b64encode(body.encode())])
        wait_all_fixed(sim, [Export(image_id, template_id, "kvm")], 30)
        reasons = {e["reason"] for e in daemon.events("events.malformed")}
        assert {"frames", "base64", "xml", "root", "id", "key", "size"} <= reasons
        assert daemon.stop() == 0
    finally:
        pub.close(0)
        context.term()


def test_the_password_never_reaches_any_log(sim_process: SimFactory,
                                            hookd_factory: HookdFactory,
                                            registry: FakeRegistry) -> None:
    sim = sim_process()
    sim.controls.fail_next("one.template.update", "http500", 2)
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"log": {"level": "debug"}}).start()
    exports = burst(sim, sim.seed_info(), 3, "secret")
    wait_all_fixed(sim, exports, 30)
    assert daemon.stop() == 0
    text = daemon.log_file.read_text() + daemon.output()
    assert text.count("\n") > 20
    assert PASSWORD not in text
    assert f"oneadmin:{PASSWORD}" not in text


def test_wrong_password_is_a_clear_error_not_a_crash_loop(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry)
    daemon.auth_file.write_text("oneadmin:wrong\n")
    daemon.start()
    wait_for(lambda: any("authenticated" in str(e.get("status", "")) or
                         "couldn't be authenticated" in str(e.get("status", ""))
                         for e in daemon.events("oned.unreachable")), 10,
             "the authentication failure to be reported")
    assert daemon.process is not None and daemon.process.poll() is None
    assert daemon.stop() == 0


def test_fixes_are_spread_over_workers_but_never_interleaved_per_template(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    seed = sim.seed_info()
    exports = burst(sim, seed, 10, "shared")
    wait_all_fixed(sim, exports, 30)
    # Two images in one template: the template gets each fix, never a torn mix.
    ok, both, *_ = sim.call(
        "one.template.allocate",
        f'NAME="both"\nDISK=[IMAGE_ID="{exports[0].image_id}"]\n'
        f'DISK=[IMAGE_ID="{exports[2].image_id}"]\nCONTEXT=[NETWORK="YES"]\n')
    assert ok
    wait_for(lambda: is_fixed(sim, Export(exports[0].image_id, both, "kvm")), 30, "both")
    wait_for(lambda: "template" in (image_attr(sim, exports[2].image_id, "HOOKD_REASON")
                                    or "") or True, 5, "second image's status")
    assert daemon.stop() == 0


def test_watchdog_pings_and_metrics_while_running(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    import urllib.request

    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"metrics": {"listen": "127.0.0.1:0"}})
    daemon.start(env={"WATCHDOG_USEC": "400000"})  # pings every 0.2 s from the main loop
    exports = burst(sim, sim.seed_info(), 2, "metrics")
    wait_all_fixed(sim, exports, 30)
    assert daemon.notify is not None
    pings = [t for t, m in daemon.notify.messages if "WATCHDOG=1" in m.split("\n")]
    time.sleep(1.0)
    later = [t for t, m in daemon.notify.messages if "WATCHDOG=1" in m.split("\n")]
    assert len(later) - len(pings) >= 3, "the main loop should ping about every 0.2 s"
    url = next(e["url"] for e in daemon.events("metrics.listening"))
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['hookd_fixes_total{hypervisor="kvm"}'] == 1
    assert values['hookd_fixes_total{hypervisor="firecracker"}'] == 1
    assert values["hookd_zmq_connected"] == 1
    assert values["hookd_raft_leader"] == 1
    assert values['hookd_events_received_total{kind="state"}'] >= 2
    assert values['hookd_xmlrpc_calls_total{method="one.template.update"}'] == 2
    # The client's observer reports each call's duration: timed, with the same method label.
    update = 'method="one.template.update"'
    assert values[f"hookd_xmlrpc_call_duration_seconds_count{{{update}}}"] == 2
    assert values[f'hookd_xmlrpc_call_duration_seconds_bucket{{le="+Inf",{update}}}'] == 2
    assert values[f"hookd_xmlrpc_call_duration_seconds_sum{{{update}}}"] > 0
    # SIGSTOP freezes the main loop: the pings stop (systemd would restart hookd).
    daemon.signal(signal.SIGSTOP)
    frozen = len(daemon.notify.messages)
    time.sleep(1.0)
    assert len(daemon.notify.messages) == frozen
    daemon.signal(signal.SIGCONT)
    assert daemon.stop() == 0


def test_registry_unreachable_falls_back_to_one_entrypoint(
        sim_process: SimFactory, hookd_factory: HookdFactory) -> None:
    with socket.socket() as s:  # a registry address nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    sim = sim_process("--registry", dead)
    settings: dict[str, Any] = {
        "registries": {"insecure": [dead], "timeout": 1.0},
        "reconcile": {"attempts": 3, "backoff_initial": 0.05, "backoff_max": 0.2}}
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, None, settings).start()
    seed = sim.seed_info()
    app = next(k for k in seed["apps"] if k.startswith("registry/"))
    image_id, template_id = sim.export_app(seed["apps"][app], seed["datastores"]["kvm-images"],
                                           name="offline")
    assert template_id is not None
    wait_for(lambda: image_attr(sim, image_id, "HOOKD_SOURCE") == "one_entrypoint", 60,
             "the fallback")
    assert image_attr(sim, image_id, "HOOKD_STATUS") == "applied"
    reason = image_attr(sim, image_id, "HOOKD_REASON") or ""
    assert "registry unreachable" in reason and "/one_entrypoint.sh" in reason
    ctx = template_attrs(sim.template_xml(template_id))["CONTEXT"]
    script = base64.b64decode(ctx["START_SCRIPT_BASE64"]).decode()
    # The fallback is packed whole; `hookd start-script --template` reads it like this.
    assert "/one_entrypoint.sh" in readable_start_script(script)
    assert len(daemon.events("reconcile.retry")) == 2  # attempts 1 and 2; the 3rd is final
    assert daemon.stop() == 0
