"""The daemon runs without pyone (and without requests and urllib3): OpenNebula's reference
client stays a test and benchmark dependency only (README, "The HTTP client")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hookd.testing.daemon_config import simulator_config
from hookd.testing.registry import FakeRegistry
from hookd.testing.simulator import Simulator
from tests.daemon.harness import template_attrs

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parent.parent.parent

# Run in a fresh interpreter: a None entry in sys.modules makes ``import pyone`` raise
# ImportError, as if it were not installed.
BLOCKED_RUN = r"""
import importlib, pkgutil, sys
from pathlib import Path

for name in ("pyone", "requests", "urllib3"):
    sys.modules[name] = None

import hookd

runtime = sorted(m.name for m in pkgutil.walk_packages(hookd.__path__, "hookd.")
                 if not m.name.startswith("hookd.testing") and m.name != "hookd.__main__")
for name in runtime:
    importlib.import_module(name)
print("imported", len(runtime), "modules")

from hookd.operate import reconcile

status = reconcile(Path(sys.argv[1]), images=[int(sys.argv[2])], dry_run=False)
loaded = sorted(n for n in ("pyone", "requests", "urllib3") if sys.modules.get(n) is not None)
print("loaded:", loaded or "none")
sys.exit(status)
"""


def test_the_daemon_runs_and_reconciles_without_pyone(
        tmp_path: Path, simulator: Simulator, registry: FakeRegistry) -> None:
    seed = simulator.seed_info
    image_id, template_id = simulator.export_app(seed.apps["dockerhub/nginx"],
                                                 seed.datastores["kvm-images"], name="nopyone")
    assert template_id is not None and simulator.wait_image_state(image_id, "READY")
    config = tmp_path / "hookd.conf"
    config.write_text(yaml.safe_dump(simulator_config(
        tmp_path, xmlrpc=simulator.xmlrpc_url, zmq=simulator.zmq_url,
        session=simulator.session, registry=registry)))

    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(config), str(image_id)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded: none" in done.stdout
    assert "changed 1 template(s)" in done.stdout
    assert template_attrs(simulator.template_xml(template_id))["OS"]["ROOT"] == "vda"
    assert registry.requests  # the image config came over HTTP, through hookd.http
