"""``hookd plan``, ``hookd reconcile [--dry-run]``, ``hookd kernel register``, on the simulator."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from hookd.cli import main
from hookd.operate import plan, reconcile
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


def test_plan_dry_run_then_reconcile(tmp_path: Path, simulator: Simulator,
                                     registry: FakeRegistry) -> None:
    seed = simulator.seed_info
    image_id, template_id = simulator.export_app(seed.apps["dockerhub/nginx"],
                                                 seed.datastores["kvm-images"], name="cli")
    assert template_id is not None and simulator.wait_image_state(image_id, "READY")
    config = write_config(tmp_path, simulator, registry)
    simulator.controls.reset_counters()

    out = io.StringIO()
    assert plan(config, image_id, out=out) == 0
    text = out.getvalue()
    assert f"image {image_id}: applied" in text
    assert f"template {template_id} (cli) [kvm]: applied" in text
    assert "OS/ROOT:" in text and "+ vda" in text and "- (unset)" in text

    out = io.StringIO()
    assert reconcile(config, images=[], dry_run=True, out=out) == 0
    assert "would change 1 template(s)" in out.getvalue()
    counters = simulator.controls.counters()
    assert counters.get("one.template.update", 0) == 0
    assert counters.get("one.image.update", 0) == 0

    out = io.StringIO()
    assert reconcile(config, images=[image_id], dry_run=False, out=out) == 0
    assert "changed 1 template(s)" in out.getvalue()
    os_vec = template_attrs(simulator.template_xml(template_id))["OS"]
    assert os_vec["ROOT"] == "vda"

    out = io.StringIO()
    assert plan(config, image_id, out=out) == 0
    assert "nothing to change" in out.getvalue()


def test_reconcile_of_a_missing_image_says_so_and_fails(tmp_path: Path, simulator: Simulator,
                                                        registry: FakeRegistry) -> None:
    out = io.StringIO()
    assert reconcile(write_config(tmp_path, simulator, registry), images=[99999],
                     dry_run=False, out=out) == 1
    assert "image 99999: FAILED - it does not exist" in out.getvalue()


def test_plan_of_a_missing_image(tmp_path: Path, simulator: Simulator,
                                 registry: FakeRegistry) -> None:
    out = io.StringIO()
    assert plan(write_config(tmp_path, simulator, registry), 4242, out=out) == 1


def test_kernel_register_checks_then_creates_the_image(
        tmp_path: Path, simulator: Simulator, registry: FakeRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.kernels.builders import build_elf  # a minimal x86-64 kernel ELF, PVH note

    config = write_config(tmp_path, simulator, registry)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(build_elf().data)
    files = simulator.seed_info.datastores["kernels"]
    code = main(["kernel", "register", str(kernel), "--hypervisor", "kvm", "--datastore",
                 str(files), "--config", str(config), "--name", "my-kernel"])
    out = capsys.readouterr().out
    assert code == 0, out
    image_id = int(out.split("created KERNEL image ")[1].split()[0])
    image = simulator.image_xml(image_id)
    assert "<TYPE>3</TYPE>" in image and "my-kernel" in image
    # The wrong datastore type and an unusable kernel are refused before anything is made.
    code = main(["kernel", "register", str(kernel), "--hypervisor", "kvm", "--datastore",
                 str(simulator.seed_info.datastores["kvm-images"]), "--config", str(config)])
    assert code == 1 and "is not a file datastore" in capsys.readouterr().out
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a kernel" * 100)
    code = main(["kernel", "register", str(garbage), "--hypervisor", "kvm", "--datastore",
                 str(files), "--config", str(config)])
    assert code == 1 and "FAIL:" in capsys.readouterr().out


def test_start_script_command_through_the_main_cli(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "config.json"
    doc.write_text('{"config": {"Cmd": ["nginx", "-g", "daemon off;"]}}')
    assert main(["start-script", "--oci-config", str(doc)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/sh") and "'daemon off;'" in out
    doc.write_text('{"config": {"Cmd": []}}')
    assert main(["start-script", "--oci-config", str(doc)]) == 1
