"""``hookd start-script --template ID``: what a VM template carries, readable, from oned."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from handlers.start_script import (
    build_fallback_script,
    readable_fallback_script,
    readable_start_script,
)
from handlers.template import Vector
from hookd.cli import main
from hookd.client import OneClient
from hookd.documents import to_xml
from hookd.operate import reconcile
from hookd.testing.daemon_config import simulator_config
from hookd.testing.registry import FakeRegistry
from hookd.testing.simulator import Simulator
from tests.daemon.harness import template_attrs

pytestmark = [pytest.mark.integration]


def write_config(tmp_path: Path, sim: Simulator, registry: FakeRegistry) -> Path:
    path = tmp_path / "hookd.conf"
    path.write_text(yaml.safe_dump(simulator_config(
        tmp_path, xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url, session=sim.session,
        registry=registry)))
    return path


def exported(sim: Simulator, name: str) -> int:
    seed = sim.seed_info
    image_id, template_id = sim.export_app(seed.apps["dockerhub/nginx"],
                                           seed.datastores["kvm-images"], name=name)
    assert template_id is not None and sim.wait_image_state(image_id, "READY")
    return template_id


def set_context(sim: Simulator, template_id: int, **context: str) -> None:
    client = OneClient(sim.xmlrpc_url, sim.session)
    client.update_template(template_id, to_xml([("CONTEXT", Vector.of(context))]))


def test_prints_what_the_template_carries(tmp_path: Path, simulator: Simulator,
                                          registry: FakeRegistry,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, simulator, registry)
    template_id = exported(simulator, "carried")
    assert reconcile(config, images=[], dry_run=False) == 0
    capsys.readouterr()
    carried = template_attrs(simulator.template_xml(template_id))["CONTEXT"]
    script = base64.b64decode(carried["START_SCRIPT_BASE64"]).decode()
    assert "base64 -d <<'HOOKD_CODE_EOF' | gzip -dc\n" in script  # packed in the template

    assert main(["start-script", "--template", str(template_id), "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (readable_start_script(script), "")
    assert "\ncat <<'HOOKD_CODE_EOF'\n" in out and "base64 -d" not in out
    assert "\nstart_systemd() {\n" in out and "\t\t'nginx' \\\n" in out


def test_fallback_and_plain_start_script(tmp_path: Path, simulator: Simulator,
                                         registry: FakeRegistry,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, simulator, registry)
    template_id = exported(simulator, "by-hand")
    fallback = base64.b64encode(build_fallback_script().encode()).decode()
    set_context(simulator, template_id, START_SCRIPT_BASE64=fallback)
    assert main(["start-script", "--template", str(template_id), "--config", str(config)]) == 0
    assert capsys.readouterr().out == readable_fallback_script()

    other = exported(simulator, "plain")
    set_context(simulator, other, START_SCRIPT="echo hello")
    assert main(["start-script", "--template", str(other), "--config", str(config)]) == 0
    assert capsys.readouterr().out == "echo hello\n"


@pytest.mark.parametrize("case", ["none", "missing", "not-base64"])
def test_nothing_to_show(tmp_path: Path, simulator: Simulator, registry: FakeRegistry,
                         capsys: pytest.CaptureFixture[str], case: str) -> None:
    config = write_config(tmp_path, simulator, registry)
    template_id = 987654 if case == "missing" else exported(simulator, f"case-{case}")
    if case == "not-base64":
        set_context(simulator, template_id, START_SCRIPT_BASE64="not base64!")
    assert main(["start-script", "--template", str(template_id), "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"hookd start-script: template {template_id}") and err.count("\n") == 1
    if case == "none":
        assert "has no CONTEXT/START_SCRIPT_BASE64 and no CONTEXT/START_SCRIPT" in err
