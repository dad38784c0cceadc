"""Nothing lost: every fault ends with each container image fixed exactly once.

The simulator runs in its own process and hookd runs as ``hookd run`` in another, as in
production. "Fixed exactly once" is measured on the simulator side: the number of updates
that really changed each template's content (1 = hookd's fix, never redone or undone).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from hookd.testing.client import SimulatorClient
from hookd.testing.daemon_config import wait_for
from hookd.testing.registry import FakeRegistry
from tests.daemon.checks import assert_fixed_exactly_once, burst, is_fixed, wait_all_fixed
from tests.daemon.harness import Hookd

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SimFactory = Callable[..., SimulatorClient]
HookdFactory = Callable[..., Hookd]


def _untouched_images(sim: SimulatorClient, exported: set[int]) -> list[int]:
    """Images that carry hookd's status although they were not exported container images."""
    ids = [int(e) for e in _image_ids(sim)]
    return [i for i in ids if i not in exported
            and "HOOKD_STATUS" in sim.image_xml(i)]


def _image_ids(sim: SimulatorClient) -> list[str]:
    from lxml import etree

    ok, pool, *_ = sim.call("one.imagepool.info", -2, -1, -1)
    assert ok
    return [str(e.findtext("ID")) for e in etree.fromstring(pool.encode()).findall("IMAGE")]


def _start(sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry,
           **settings: dict[str, object]) -> tuple[SimulatorClient, Hookd]:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry, settings)
    return sim, daemon


def test_publisher_restarted_mid_burst(sim_process: SimFactory, hookd_factory: HookdFactory,
                                       registry: FakeRegistry) -> None:
    sim, daemon = _start(sim_process, hookd_factory, registry)
    daemon.start()
    seed = sim.seed_info()
    first = burst(sim, seed, 6, "before")
    sim.controls.restart_publisher(down_seconds=1.0, wait=False)
    second = burst(sim, seed, 6, "during")
    wait_all_fixed(sim, first + second, 60)
    assert_fixed_exactly_once(sim.controls.template_changes(), first + second)
    assert len(daemon.events("events.connected")) >= 2  # the reconnection was noticed
    assert not _untouched_images(sim, {e.image_id for e in first + second})
    assert daemon.stop() == 0


def test_publisher_frozen_is_detected_and_nothing_is_lost(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim, daemon = _start(sim_process, hookd_factory, registry)
    daemon.start()
    seed = sim.seed_info()
    sim.controls.freeze_publisher()
    frozen_at = time.monotonic()
    exports = burst(sim, seed, 6, "frozen")
    # heartbeat_timeout is 1.5 s in the harness configuration
    wait_for(lambda: bool(daemon.events("events.disconnected")), 10,
             "hookd to notice the frozen publisher")
    detected = time.monotonic() - frozen_at
    assert detected < 1.5 + 2.5, f"frozen publisher noticed after {detected:.1f} s"
    assert not any(is_fixed(sim, e) for e in exports)
    sim.controls.thaw_publisher()
    wait_all_fixed(sim, exports, 60)
    assert_fixed_exactly_once(sim.controls.template_changes(), exports)
    assert daemon.stop() == 0


def test_dropped_events_are_caught_by_the_periodic_sweep(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim, daemon = _start(sim_process, hookd_factory, registry,
                         reconcile={"sweep_interval": 2.0})
    daemon.start()
    seed = sim.seed_info()
    sim.controls.drop_events(1000)  # every READY (and API) event of this burst is lost
    exports = burst(sim, seed, 6, "dropped")
    wait_all_fixed(sim, exports, 60)
    assert_fixed_exactly_once(sim.controls.template_changes(), exports)
    assert any("periodic" in str(e.get("trigger", "")) for e in daemon.events("template.fixed"))
    assert daemon.stop() == 0


def test_random_timeouts_http_500_and_locked_errors(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    # Images turn READY 2 s after the export: the faults are injected after the exports
    # (which use the same API) and before hookd sees the first READY event.
    sim = sim_process(ready_delay=2.0)
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    seed = sim.seed_info()
    exports = burst(sim, seed, 8, "faulty")
    c = sim.controls
    # hookd's read timeout is 2 s: a 3 s stall is a timeout (oned still applies the call
    # later, which is exactly the case that tempts a client into double updates).
    c.fail_next("one.template.update", "timeout", 2, seconds=3.0)
    c.fail_next("one.template.update", "http500", 3)
    c.fail_next("one.image.update", "locked", 4)
    c.fail_next("one.template.info", "http500", 2)
    c.fail_next("one.template.info", "close", 2)
    c.set_latency("one.template.info", 0.05)
    wait_all_fixed(sim, exports, 90)
    assert_fixed_exactly_once(c.template_changes(), exports)
    retries = daemon.events("reconcile.retry")
    assert retries, "the injected failures should have caused retries"
    assert not daemon.events("reconcile.failed")
    assert daemon.stop() == 0


def test_hookd_killed_mid_burst_and_restarted(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim, daemon = _start(sim_process, hookd_factory, registry)
    sim.controls.set_latency("one.template.update", 0.15)  # keep the burst in flight
    daemon.start()
    seed = sim.seed_info()
    exports = burst(sim, seed, 12, "killed")
    wait_for(lambda: sim.controls.counters().get("one.template.update", 0) >= 3, 30,
             "the first fixes")
    daemon.signal(signal.SIGKILL)
    assert daemon.process is not None
    daemon.process.wait(10)
    done_before = sum(is_fixed(sim, e) for e in exports)
    assert done_before < len(exports), "the kill came too late to prove anything"
    daemon.start()
    wait_all_fixed(sim, exports, 60)
    assert_fixed_exactly_once(sim.controls.template_changes(), exports)
    assert daemon.stop() == 0


def test_follower_stays_idle_then_fixes_everything_as_leader(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim, daemon = _start(sim_process, hookd_factory, registry)
    sim.controls.set_raft_role("follower")
    daemon.start()  # READY=1 even as a follower: healthy, standing by
    assert daemon.notify is not None
    assert any("standing by" in m for _, m in daemon.notify.messages)
    seed = sim.seed_info()
    # On a follower oned forwards the export to the leader; the leader's events are the
    # ones that would reach the leader's hookd. Here the same simulator plays both roles.
    exports = burst(sim, seed, 4, "ha")
    time.sleep(1.5)
    assert sim.controls.counters().get("one.template.update", 0) == 0
    assert not any(is_fixed(sim, e) for e in exports)
    sim.controls.set_raft_role("leader")
    wait_all_fixed(sim, exports, 60)
    assert_fixed_exactly_once(sim.controls.template_changes(), exports)
    assert daemon.events("ha.active")
    assert daemon.stop() == 0
