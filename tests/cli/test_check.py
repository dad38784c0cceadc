"""``hookd check`` against the simulator: all OK, and each way it should fail."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from hookd.check_cli import run_checks
from hookd.testing.daemon_config import simulator_config
from hookd.testing.registry import FakeRegistry
from hookd.testing.simulator import Simulator

pytestmark = [pytest.mark.integration]


def config(tmp_path: Path, sim: Simulator, registry: FakeRegistry, password: str | None = None,
           **override: Any) -> Path:
    doc = simulator_config(
        tmp_path, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url, registry=registry,
        session=f"oneadmin:{password}" if password else sim.session, one={"timeout": 2.0})
    for section, values in override.items():
        doc.setdefault(section, {}).update(values)
    path = tmp_path / "hookd.conf"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = run_checks(path, zmq_timeout=1.5, out=out)
    return code, out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_all_ok_against_the_simulator(tmp_path: Path, simulator: Simulator,
                                      registry: FakeRegistry) -> None:
    code, text = run(config(tmp_path, simulator, registry))
    assert code == 0, text
    assert "FAIL" not in text
    for what in ("configuration", "credentials", "oned XML-RPC", "oned version", "raft role",
                 "kvm kernel", "firecracker kernel", "registry", "event stream"):
        assert f"OK    {what}:" in text, f"{what} missing in:\n{text}"
    assert "6.8.3" in text and "solo (HA off)" in text


def test_wrong_password(tmp_path: Path, simulator: Simulator, registry: FakeRegistry) -> None:
    code, text = run(config(tmp_path, simulator, registry, password="wrong"))
    assert code == 1
    assert "FAIL  oned XML-RPC" in text and "hint: check user:password" in text


def test_xmlrpc_down(tmp_path: Path, simulator: Simulator, registry: FakeRegistry) -> None:
    path = config(tmp_path, simulator, registry,
                  one={"xmlrpc": f"http://127.0.0.1:{free_port()}/RPC2"})
    code, text = run(path)
    assert code == 1
    assert "FAIL  oned XML-RPC: cannot reach oned" in text
    assert "hint: is oned running" in text


def test_zmq_down(tmp_path: Path, simulator: Simulator, registry: FakeRegistry) -> None:
    path = config(tmp_path, simulator, registry, one={"zmq": f"tcp://127.0.0.1:{free_port()}"})
    code, text = run(path)
    assert code == 1
    assert "FAIL  event stream: no ZMTP handshake" in text
    assert "hint: is oned running with its hook manager" in text
    assert "OK    oned XML-RPC" in text


def test_world_readable_credentials_fail(tmp_path: Path, simulator: Simulator,
                                         registry: FakeRegistry) -> None:
    path = config(tmp_path, simulator, registry)
    (tmp_path / "one_auth").chmod(0o644)
    code, text = run(path)
    assert code == 1
    assert "FAIL  credentials" in text and "chmod 600" in text


def test_missing_kernel_for_existing_hosts_fails(tmp_path: Path, simulator: Simulator,
                                                 registry: FakeRegistry) -> None:
    path = config(tmp_path, simulator, registry, kernels={"kvm": None, "firecracker": None})
    code, text = run(path)
    assert code == 1
    assert "FAIL  kvm kernel: kvm hosts exist but kernels.kvm is not set" in text


def test_a_kernel_name_resolves_only_to_the_configured_owners_image(
        tmp_path: Path, simulator: Simulator, registry: FakeRegistry) -> None:
    """Any user can register an image called kernel-kvm: it must neither stall every fix
    (two matches) nor be written into templates once the operator's kernel is gone."""
    seed = simulator.seed_info
    mallory = simulator.controls.add_user("mallory", "pw")
    theirs = simulator.controls.add_kernel_image("kernel-kvm", mallory,
                                                 seed.datastores["kernels"])
    ours = seed.images["kernel-kvm"]
    code, text = run(config(tmp_path, simulator, registry))
    assert code == 0, text
    assert (f"OK    kvm kernel: image {ours} (kernel-kvm, owner oneadmin, datastore "
            f"{seed.datastores['kernels']} (kernels))") in text
    ok, *rest = simulator.call("one.image.delete", ours, False)
    assert ok, rest
    assert simulator.wait_image_deleted(ours, 10)
    code, text = run(config(tmp_path, simulator, registry))
    assert code == 1, text
    assert "FAIL  kvm kernel: no kernel image named 'kernel-kvm' owned by oneadmin" in text
    assert f"not used: {theirs} (owner mallory" in text
    code, text = run(config(tmp_path, simulator, registry, kernels={"owner": "mallory"}))
    assert f"OK    kvm kernel: image {theirs} (kernel-kvm, owner mallory" in text


def test_oned_error_text_is_redacted(tmp_path: Path, simulator: Simulator,
                                     registry: FakeRegistry) -> None:
    password = simulator.session.split(":", 1)[1]
    simulator.controls.fail_next("one.user.info", "error", code="internal",
                                 message=f"backend said: session={simulator.session} rejected; "
                                         f"password {password}")
    code, text = run(config(tmp_path, simulator, registry))
    assert code == 1 and "FAIL  oned XML-RPC" in text
    assert password not in text, text
    assert "****" in text


def test_bad_configuration(tmp_path: Path) -> None:
    path = tmp_path / "hookd.conf"
    path.write_text("one:\n  bogus: 1\n")
    code, text = run(path)
    assert code == 1 and "FAIL  configuration: unknown key one.bogus" in text
