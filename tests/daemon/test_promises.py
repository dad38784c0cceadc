"""hookd's promises under the conditions an operator's cloud produces.

A person's value is never overwritten; events are hints and oned's state is truth; nothing
is lost. Each test makes the condition that once broke a promise: a person editing while
hookd works, a slow registry, a registry outage across a restart, a forged event on the
event port, a wrong decision already written. The simulator runs in its own process and
hookd runs as ``hookd run``, as in production.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from hookd.testing.client import SimulatorClient
from hookd.testing.daemon_config import wait_for
from hookd.testing.registry import SEEDED_DOCKER_CONFIGS, FakeRegistry, image_config
from hookd.testing.relay import ForgingRelay
from tests.daemon.checks import DOCKERHUB, TARGETS, Export, image_attr, is_fixed, wait_all_fixed
from tests.daemon.harness import PASSWORD, Hookd, template_attrs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SimFactory = Callable[..., SimulatorClient]
HookdFactory = Callable[..., Hookd]
CONCURRENT = "someone else updated this template while hookd was fixing it"


def serve_tags(registry: FakeRegistry, tags: list[str]) -> None:
    """Every seeded Docker Hub app under each tag: hookd must ask the registry for each."""
    for name, cfg in SEEDED_DOCKER_CONFIGS.items():
        for tag in tags:
            registry.add_image(f"library/{name}", tag,
                               {"linux/amd64": {**image_config("linux/amd64"), "config": cfg}})


def tagged_burst(sim: SimulatorClient, count: int, prefix: str) -> list[Export]:
    """``count`` Docker Hub imports, each of its own tag (t0, t1, ...)."""
    seed = sim.seed_info()
    out = []
    for i in range(count):
        app = DOCKERHUB[i % len(DOCKERHUB)]
        ds_name, hv = TARGETS[i % len(TARGETS)]
        image_id, template_id = sim.export_app(seed["apps"][f"dockerhub/{app}"],
                                               seed["datastores"][ds_name],
                                               name=f"{prefix}-{i}", tag=f"t{i // len(DOCKERHUB)}")
        assert template_id is not None
        out.append(Export(image_id, template_id, hv))
    return out


def wait_fixed_gently(sim: SimulatorClient, exports: list[Export], timeout: float) -> None:
    """Like wait_all_fixed, asking only about what is not fixed yet, once a second (500
    polls of two calls every 0.2 s would be the simulator's main load)."""
    pending = list(exports)

    def done() -> bool:
        pending[:] = [e for e in pending if not is_fixed(sim, e)]
        return not pending

    wait_for(done, timeout, f"{len(exports)} images to be fixed", interval=1.0)


def context(sim: SimulatorClient, template_id: int) -> dict[str, str]:
    value = template_attrs(sim.template_xml(template_id)).get("CONTEXT")
    assert isinstance(value, dict)
    return value


def template_element(sim: SimulatorClient, template_id: int) -> bytes:
    root = etree.fromstring(sim.template_xml(template_id).encode())
    element = root.find("TEMPLATE")
    assert element is not None
    return etree.tostring(element)


def hookd_attributes(sim: SimulatorClient, image_id: int) -> dict[str, object]:
    return {k: v for k, v in template_attrs(sim.image_xml(image_id)).items()
            if k.startswith("HOOKD_")}


# -- 1. a person's edit made while hookd works on the template ---------------------------------
def test_a_person_edit_made_while_hookd_waits_for_the_registry_survives(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    """hookd used to read the template, wait for the registry, then write CONTEXT from that
    stale read: a person's SSH key set meanwhile was reverted (3 runs of 3)."""
    serve_tags(registry, [f"t{i}" for i in range(4)])
    registry.faults.latency = 1.0
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"reconcile": {"workers": 8}}).start()
    exports = tagged_burst(sim, 16, "edit")
    time.sleep(0.5)  # hookd has picked them up and waits for the registry
    for export in exports:
        assert sim.controls.person_edit(export.template_id, "CONTEXT", "SSH_PUBLIC_KEY",
                               f"ssh-ed25519 person-{export.template_id}")
    wait_all_fixed(sim, exports, 120)
    for export in exports:
        assert context(sim, export.template_id)["SSH_PUBLIC_KEY"] == (
            f"ssh-ed25519 person-{export.template_id}")
    assert daemon.stop() == 0


def test_continuous_person_edits_through_a_burst_are_never_lost_unseen(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    """500 imports, a registry that answers in 1 s, a person editing CONTEXT of those
    templates 10 times a second throughout. oned has no compare-and-swap: an edit can only
    be lost if oned runs it between hookd's read and write of that template, which hookd
    makes as short as the wire allows and watches; any edit lost there must be named in the
    image's reason. In practice none is lost."""
    serve_tags(registry, [f"t{i}" for i in range(100)])
    registry.faults.latency = 1.0
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"reconcile": {"workers": 8}}).start()
    exports = tagged_burst(sim, 500, "burst")
    sim.controls.start_person_editor([e.template_id for e in exports], 10.0, seed=11)
    try:
        wait_fixed_gently(sim, exports, 600)
    finally:
        edits = sim.controls.stop_person_editor()
    assert len(edits) >= 100, "the person hardly edited: the burst was too short to count"
    last: dict[int, str] = {}
    for template_id, value, _when in edits:
        last[template_id] = value
    lost = {tid for tid, value in last.items()
            if context(sim, tid).get("SSH_PUBLIC_KEY") != value}
    by_template = {e.template_id: e.image_id for e in exports}
    flagged = {tid for tid in lost
               if CONCURRENT in (image_attr(sim, by_template[tid], "HOOKD_REASON") or "")}
    print(f"{len(edits)} person edits on {len(last)} templates; lost {len(lost)}, "
          f"named in the image's reason {len(flagged)}")
    assert lost == flagged, f"edits lost without a word: {sorted(lost - flagged)}"
    assert daemon.stop() == 0


def test_an_edit_in_the_read_to_write_window_is_named_in_the_image_reason(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    """The window oned cannot close, forced: a person's edit lands right after hookd read
    the template. It is lost (hookd rewrites CONTEXT whole), and the image says so."""
    # The image stays LOCKED until the test says so: its READY event makes hookd's read of
    # the template the read of the fix, and the race lands right after it.
    sim = sim_process(ready_delay=3600.0)
    seed = sim.seed_info()
    image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                           seed["datastores"]["kvm-images"], name="raced")
    assert template_id is not None
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    time.sleep(1.0)  # the start-up sweep is done and the event subscription settled
    sim.controls.edit_after_read(template_id, "CONTEXT", "SSH_PUBLIC_KEY", "ssh-ed25519 raced")
    sim.controls.set_image_state(image_id, "READY")
    export = Export(image_id, template_id, "kvm")
    wait_for(lambda: is_fixed(sim, export)
             and CONCURRENT in (image_attr(sim, image_id, "HOOKD_REASON") or ""), 60,
             "the fix and the word about the concurrent update")
    assert sim.controls.raced(), "the race was not run"
    reason = image_attr(sim, image_id, "HOOKD_REASON") or ""
    assert f"template {template_id}" in reason or CONCURRENT in reason
    assert "CONTEXT" in reason
    assert daemon.events("image.status")
    assert daemon.stop() == 0


# -- 2. a registry outage never downgrades a template fixed from the real config ---------------
def test_registry_outage_across_a_restart_never_downgrades(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    serve_tags(registry, ["t0"])
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"reconcile": {"attempts": 3}}).start()
    exports = tagged_burst(sim, 3, "outage")
    wait_all_fixed(sim, exports, 60)
    assert all(image_attr(sim, e.image_id, "HOOKD_OCI_CONFIG") for e in exports)
    scripts = {e.template_id: context(sim, e.template_id)["START_SCRIPT_BASE64"]
               for e in exports}
    sources = {e.image_id: image_attr(sim, e.image_id, "HOOKD_SOURCE") for e in exports}
    assert daemon.stop() == 0
    fixes = len(daemon.events("template.fixed"))  # the log file lives across restarts

    registry.down()
    daemon.start()
    wait_for(lambda: len(daemon.events("oci.config_from_cache")) >= len(exports), 60,
             "the configs read from the cache")
    for export in exports:
        assert context(sim, export.template_id)["START_SCRIPT_BASE64"] == (
            scripts[export.template_id])
        assert image_attr(sim, export.image_id, "HOOKD_STATUS") == "applied"
        assert image_attr(sim, export.image_id, "HOOKD_SOURCE") == sources[export.image_id]
    assert len(daemon.events("template.fixed")) == fixes
    assert daemon.stop() == 0

    # A new machine: no cache at all. The installed scripts stay; nothing falls back.
    shutil.rmtree(daemon.workdir / "oci-cache", ignore_errors=True)
    daemon.start()
    wait_for(lambda: all("stays" in (image_attr(sim, e.image_id, "HOOKD_REASON") or "")
                         for e in exports), 60, "the outage noted on every image")
    for export in exports:
        assert context(sim, export.template_id)["START_SCRIPT_BASE64"] == (
            scripts[export.template_id])  # the real config's script, not the fallback
        assert image_attr(sim, export.image_id, "HOOKD_SOURCE") == sources[export.image_id]
        assert image_attr(sim, export.image_id, "HOOKD_STATUS") == "applied"
    assert len(daemon.events("template.fixed")) == fixes

    registry.up()
    daemon.signal(1)  # SIGHUP: a sweep; the registry answers again
    wait_for(lambda: not any("stays" in (image_attr(sim, e.image_id, "HOOKD_REASON") or "")
                             for e in exports), 60, "the outage note gone")
    assert daemon.stop() == 0


# -- 3. a forged event decides nothing; a sweep undoes what a wrong decision wrote -------------
def _plain_image(sim: SimulatorClient, tmp_path: Path, name: str) -> tuple[int, int]:
    disk = tmp_path / f"{name}.img"
    disk.write_bytes(b"\0" * 4096)
    seed = sim.seed_info()
    ok, image_id, *_ = sim.call("one.image.allocate",
                                f'NAME="{name}"\nTYPE="OS"\nPATH="{disk}"\n',
                                seed["datastores"]["kvm-images"])
    assert ok, image_id
    assert sim.wait_image_state(int(image_id), "READY", 30)
    ok, template_id, *_ = sim.call(
        "one.template.allocate",
        f'NAME="{name}"\nCPU="1"\nMEMORY="512"\nDISK=[IMAGE_ID="{image_id}"]\n'
        'OS=[ARCH="x86_64", KERNEL_CMD="console=tty0"]\nCONTEXT=[NETWORK="YES"]\n')
    assert ok, template_id
    return int(image_id), int(template_id)


def test_a_forged_ready_event_changes_nothing(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry,
        tmp_path: Path) -> None:
    """A relay on the event port passes the real stream on, plus one READY event for an
    ordinary OS image whose embedded PATH says docker://redis."""
    sim = sim_process()
    with ForgingRelay(sim.zmq_url) as relay:
        daemon = hookd_factory(sim.xmlrpc_url, relay.endpoint, registry).start()
        image_id, template_id = _plain_image(sim, tmp_path, "production-db")
        before = template_element(sim, template_id)
        seed = sim.seed_info()

        def real_import(name: str) -> None:
            image, template = sim.export_app(seed["apps"]["dockerhub/redis"],
                                             seed["datastores"]["kvm-images"], name=name)
            assert template is not None
            wait_all_fixed(sim, [Export(image, template, "kvm")], 60)

        real_import("before")  # hookd hears what the relay publishes
        relay.forge_ready(image_id, sim.image_xml(image_id),
                          PATH="docker://redis?size=2048&filesystem=ext4&format=raw")
        wait_for(lambda: relay.forged == 1, 10, "the forged event sent")
        real_import("after")  # published after it: handled after it
        assert template_element(sim, template_id) == before
        assert hookd_attributes(sim, image_id) == {}
        assert daemon.stop() == 0


def test_a_sweep_undoes_what_a_wrong_decision_wrote(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry,
        tmp_path: Path) -> None:
    """The state a believed forged event left (hookd's own planner and applier, given the
    forged image): the next sweep puts every value back and removes hookd's record."""
    from hookd.config import from_mapping
    from hookd.daemon import build
    from hookd.testing.daemon_config import simulator_config

    sim = sim_process()
    image_id, template_id = _plain_image(sim, tmp_path, "victim")
    before = template_element(sim, template_id)
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry)
    (tmp_path / "wrong").mkdir()
    config = from_mapping(simulator_config(
        tmp_path / "wrong", xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url,
        session=f"oneadmin:{PASSWORD}", registry=registry))
    _write_wrong_fix(build(config), image_id, template_id)
    assert template_element(sim, template_id) != before
    assert image_attr(sim, image_id, "HOOKD_STATUS") == "applied"

    daemon.start()  # its start-up sweep finds the wrong fix
    wait_for(lambda: template_element(sim, template_id) == before, 60,
             "the template as it was before the wrong fix")
    wait_for(lambda: hookd_attributes(sim, image_id) == {}, 30, "the image's status removed")
    undone = [e for e in daemon.events("template.fixed") if e.get("template_id") == template_id]
    assert undone and undone[0]["status"] == "skipped"
    assert daemon.stop() == 0


def _write_wrong_fix(components: object, image_id: int, template_id: int) -> None:
    """What hookd used to write when it believed a READY event's body."""
    from dataclasses import replace as dc_replace

    from handlers.planner import plan_for
    from hookd.daemon import Components

    assert isinstance(components, Components)
    c = components
    c.world.refresh()
    real = c.client.image(image_id)
    forged = dc_replace(real, path="docker://redis?size=2048&filesystem=ext4&format=raw")
    world = c.world.base_world(forged)
    resolver = c.engine._oci
    assert resolver is not None
    world = dc_replace(world, oci=resolver(forged, True))
    plan = plan_for(forged, [c.client.template(template_id)], world, c.engine.settings)
    assert plan.status == "applied" and plan.edits
    c.applier.apply(plan, trigger="forged READY event (old hookd)")


# -- 4. a status attribute is cleared the way oned really clears it ----------------------------
def test_a_reason_that_no_longer_holds_is_cleared(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    """hookd cleared a reason with ``<HOOKD_REASON></HOOKD_REASON>``, which oned ignores: an
    image stayed ``applied`` with the reason of an earlier outage forever."""
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    seed = sim.seed_info()
    image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                           seed["datastores"]["lxc-images"], name="stale")
    assert template_id is not None
    wait_for(lambda: image_attr(sim, image_id, "HOOKD_STATUS") == "applied", 60, "the fix")
    assert "START_SCRIPT_BASE64" in context(sim, template_id)
    assert image_attr(sim, image_id, "HOOKD_REASON") in (None, "")
    # What an earlier hookd left on the image after an outage it recovered from.
    stale = "registry unreachable for docker.io/library/nginx:latest: connection refused"
    ok, *rest = sim.call("one.image.update", image_id, f'HOOKD_REASON="{stale}"', 1)
    assert ok, rest
    wait_for(lambda: image_attr(sim, image_id, "HOOKD_REASON") == "", 30, "the reason cleared")
    assert image_attr(sim, image_id, "HOOKD_STATUS") == "applied"
    assert daemon.stop() == 0


# -- 9. a person's lower-case CONTEXT names stay as they are -----------------------------------
def test_lowercase_context_names_written_in_the_xml_form_are_kept(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    seed = sim.seed_info()
    image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                           seed["datastores"]["kvm-images"], name="lower")
    assert template_id is not None
    ok, *rest = sim.call("one.template.update", template_id,
                         "<TEMPLATE><CONTEXT><NETWORK>YES</NETWORK><my_var>kept</my_var>"
                         "</CONTEXT></TEMPLATE>", 1)
    assert ok, rest
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    wait_all_fixed(sim, [Export(image_id, template_id, "kvm")], 60)
    ctx = context(sim, template_id)
    assert ctx["my_var"] == "kept" and "MY_VAR" not in ctx
    assert daemon.stop() == 0


def test_a_world_readable_one_auth_is_warned_about(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry)
    daemon.auth_file.chmod(0o644)
    daemon.start()
    warnings = daemon.events("hookd.credentials_exposed")
    assert warnings and warnings[0]["mode"] == "0644" and "chmod 600" in warnings[0]["hint"]
    assert daemon.stop() == 0


# -- waiting is visible -----------------------------------------------------------------------
def test_a_registry_that_refuses_shows_waiting_at_once_then_applied(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    """While hookd retries, the image says what it waits for and when it tries next; the
    status changes again when the wait ends, and a later outage never downgrades it."""
    registry.down()  # connections are refused
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"reconcile": {"attempts": 8, "backoff_initial": 1.0,
                                          "backoff_max": 2.0}}).start()
    seed = sim.seed_info()
    image_id, template_id = sim.export_app(seed["apps"]["dockerhub/nginx"],
                                           seed["datastores"]["kvm-images"], name="waits")
    assert template_id is not None
    assert sim.wait_image_state(image_id, "READY", 10)
    ready = time.monotonic()
    wait_for(lambda: image_attr(sim, image_id, "HOOKD_STATUS") == "waiting", 10, "waiting")
    assert time.monotonic() - ready < 2.0 + 0.5  # 0.5 s: the READY event's way to hookd
    reason = image_attr(sim, image_id, "HOOKD_REASON") or ""
    # What it waits for (the registry, by host) and when it tries next.
    assert "registry-1.docker.io" in reason or registry.host in reason, reason
    assert re.search(r"; attempt \d of 8 at \d\d:\d\d:\d\d UTC$", reason), reason
    assert "START_SCRIPT_BASE64" not in context(sim, template_id)  # no fallback yet
    writes = sim.controls.counters().get("one.image.update", 0)

    registry.up()
    export = Export(image_id, template_id, "kvm")
    wait_all_fixed(sim, [export], 30)
    assert image_attr(sim, image_id, "HOOKD_SOURCE") == "registry:docker.io"
    script = context(sim, template_id)["START_SCRIPT_BASE64"]
    # One status write per attempt at most while it waited.
    waited = [e for e in daemon.events("reconcile.retry") if e.get("object_id") == image_id]
    assert writes <= len(waited) + 1

    registry.down()
    ok, *rest = sim.call("one.image.update", image_id, 'NOTE="look again"', 1)
    assert ok, rest
    time.sleep(2.0)
    assert image_attr(sim, image_id, "HOOKD_STATUS") == "applied"
    assert context(sim, template_id)["START_SCRIPT_BASE64"] == script
    assert daemon.stop() == 0
