"""A broken configuration, at start-up and on reload, as an operator produces one.

At start-up: one line and exit status 2 (the unit's RestartPreventExitStatus=2 keeps systemd
from restarting into the same error), never a traceback or exit 1; ``hookd check`` fails it
too. On SIGHUP: the daemon keeps running on the configuration it had, and says why.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookd.check_cli import run_checks
from hookd.testing.client import SimulatorClient
from hookd.testing.daemon_config import simulator_config, wait_for
from hookd.testing.registry import FakeRegistry
from tests.daemon.checks import burst, wait_all_fixed
from tests.daemon.harness import PASSWORD, Hookd

pytestmark = [pytest.mark.integration]

SimFactory = Callable[..., SimulatorClient]
HookdFactory = Callable[..., Hookd]


def _busy_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, int(holder.getsockname()[1])


# (what the operator wrote, a piece of the one line hookd answers)
BROKEN: list[tuple[str, dict[str, Any], str]] = [
    ("zmq without a host", {"one": {"zmq": "tcp://"}}, "one.zmq in"),
    ("zmq without a port", {"one": {"zmq": "tcp://localhost"}}, "must name a port"),
    ("garbage metrics address", {"metrics": {"listen": "not an address"}}, "metrics.listen in"),
    ("tls_verify names a missing file", {"one": {"tls_verify": "/nonexistent/ca.pem"}},
     "one.tls_verify in"),
    ("a service name a guest cannot use", {"start_script": {"service_name": "../x y"}},
     "start_script.service_name in"),
    ("a heartbeat of 30,000 years", {"events": {"heartbeat_interval": 1e12}},
     "events.heartbeat_interval in"),
    ("an infinite timeout", {"one": {"timeout": float("inf")}}, "one.timeout in"),
    ("a timeout of 1e300 s", {"reconcile": {"backoff_max": 1e300}}, "reconcile.backoff_max in"),
    ("NaN", {"ha": {"poll_interval": float("nan")}}, "ha.poll_interval in"),
    ("a registry password file that is not there",
     {"registries": {"credentials": {"r.example": {"username": "u",
                                                   "password_file": "/nonexistent/pass"}}}},
     "does not exist"),
    ("empty registry credentials", {"registries": {"credentials": {"r.example": {}}}},
     "registries.credentials.r.example in"),
    ("a kernel ID below 0", {"kernels": {"kvm": -1}}, "kernels.kvm in"),
]


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc))


def _config(tmp_path: Path, sim_url: str, zmq: str, registry: FakeRegistry,
            override: dict[str, Any]) -> dict[str, Any]:
    doc = simulator_config(tmp_path, xmlrpc=sim_url, zmq=zmq, registry=registry,
                           session=f"oneadmin:{PASSWORD}", one={"timeout": 2.0})
    for section, values in override.items():
        doc.setdefault(section, {}).update(values)
    return doc


def _run(config: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookd", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _one_line_error(proc: subprocess.CompletedProcess[str], piece: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "hookd.config_error" in line]
    assert len(errors) == 1, output
    assert piece in errors[0], errors[0]


@pytest.mark.parametrize(("what", "override", "piece"), BROKEN, ids=[b[0] for b in BROKEN])
def test_start_up_refuses_with_one_line_and_exit_2(
        tmp_path: Path, registry: FakeRegistry, what: str, override: dict[str, Any],
        piece: str) -> None:
    config = tmp_path / "hookd.conf"
    _write(config, _config(tmp_path, "http://127.0.0.1:9/RPC2", "tcp://127.0.0.1:9", registry,
                           override))
    _one_line_error(_run(config), piece)
    out = io.StringIO()
    assert run_checks(config, zmq_timeout=0.5, out=out) == 1
    assert "FAIL  configuration" in out.getvalue() and piece in out.getvalue()


def test_non_utf8_files_are_refused_with_one_line(tmp_path: Path,
                                                 registry: FakeRegistry) -> None:
    config = tmp_path / "hookd.conf"
    config.write_bytes(b"log:\n  level: \xff\xfe info\n")
    _one_line_error(_run(config), "is not UTF-8 text")
    doc = _config(tmp_path, "http://127.0.0.1:9/RPC2", "tcp://127.0.0.1:9", registry, {})
    Path(doc["one"]["auth_file"]).write_bytes(b"oneadmin:\xff\xfe\n")
    _write(config, doc)
    _one_line_error(_run(config), "ONE_AUTH file")


def test_a_busy_metrics_port_is_refused_with_one_line(tmp_path: Path, registry: FakeRegistry,
                                                      sim_process: SimFactory) -> None:
    sim = sim_process()
    holder, port = _busy_port()
    with holder:
        config = tmp_path / "hookd.conf"
        _write(config, _config(tmp_path, sim.xmlrpc_url, sim.zmq_url, registry,
                               {"metrics": {"listen": f"127.0.0.1:{port}"}}))
        _one_line_error(_run(config), "metrics.listen")
        out = io.StringIO()
        assert run_checks(config, zmq_timeout=1.0, out=out) == 1
        assert "FAIL  metrics" in out.getvalue()


RELOAD_BROKEN: list[tuple[str, Callable[[Path, dict[str, Any]], object], str]] = [
    ("non-UTF-8", lambda p, d: p.write_bytes(b"log:\n  level: \xff\n"), "not UTF-8"),
    ("an unusable service name",
     lambda p, d: _write(p, {**d, "start_script": {"service_name": "bad name"}}),
     "service_name"),
    ("a missing password file",
     lambda p, d: _write(p, {**d, "registries": {**d["registries"], "credentials": {
         "r.example": {"username": "u", "password_file": str(p.parent / "gone")}}}}),
     "does not exist"),
    ("empty registry credentials",
     lambda p, d: _write(p, {**d, "registries": {**d["registries"],
                                                 "credentials": {"r.example": {}}}}),
     "registries.credentials"),
    ("an empty (truncated) file", lambda p, d: p.write_text(""), "is empty"),
]


def test_sighup_with_a_broken_configuration_keeps_the_old_one(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process()
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry).start()
    good = yaml.safe_load(daemon.config_file.read_text())
    seed = sim.seed_info()
    for n, (what, breaker, piece) in enumerate(RELOAD_BROKEN):
        failures = len(daemon.events("hookd.reload_failed"))
        breaker(daemon.config_file, good)
        daemon.signal(signal.SIGHUP)
        def failed(before: int = failures) -> bool:
            return len(daemon.events("hookd.reload_failed")) > before

        wait_for(failed, 20, f"the reload failure ({what})")
        event = daemon.events("hookd.reload_failed")[-1]
        assert piece in event["reason"], (what, event)
        assert "previous configuration stays" in event["hint"]
        assert daemon.process is not None and daemon.process.poll() is None, what
        assert daemon.notify is not None
        wait_for(lambda: daemon.notify is not None
                 and any("reload failed" in m for _, m in daemon.notify.messages), 10,
                 "the failure in the unit's status")
        # Still working, on the old configuration.
        exports = burst(sim, seed, 1, f"after-{n}")
        wait_all_fixed(sim, exports, 60)
    _write(daemon.config_file, good)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: bool(daemon.events("hookd.reloaded")), 20, "a good reload")
    assert daemon.stop() == 0
