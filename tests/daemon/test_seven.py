"""OpenNebula 7.x: Linux Containers imports, with the marketplace template as a real oned
7.4.0 creates it (pinned to LXC), on KVM-only, LXC-only and mixed clusters; ``hookd run``
against the 7.4 simulator in its own process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hookd.testing.client import SimulatorClient
from hookd.testing.daemon_config import wait_for
from hookd.testing.registry import FakeRegistry
from tests.daemon.checks import image_attr
from tests.daemon.harness import Hookd, template_attrs

pytestmark = [pytest.mark.integration]

SimFactory = Callable[..., SimulatorClient]
HookdFactory = Callable[..., Hookd]


def test_linux_containers_imports_on_kvm_lxc_and_mixed_clusters(
        sim_process: SimFactory, hookd_factory: HookdFactory, registry: FakeRegistry) -> None:
    sim = sim_process("--one-version", "7.4")
    daemon = hookd_factory(sim.xmlrpc_url, sim.zmq_url, registry,
                           {"kernels": {"kvm": "kernel-kvm", "firecracker": None}}).start()
    seed = sim.seed_info()
    app = seed["apps"]["lxc/debian_bookworm"]
    made = {cluster: sim.export_app(app, seed["datastores"][f"{cluster}-images"],
                                    name=f"debian-{cluster}")
            for cluster in ("kvm", "lxc", "mixed")}
    before = {c: template_attrs(sim.template_xml(t)) for c, (_, t) in made.items()
              if t is not None}
    def applied(image_id: int) -> Callable[[], bool]:
        return lambda: image_attr(sim, image_id, "HOOKD_STATUS") == "applied"

    for image_id, _ in made.values():
        wait_for(applied(image_id), 60, f"image {image_id} applied")

    # KVM only: the export's template, pinned to LXC, re-targeted and fixed for KVM.
    image_id, template_id = made["kvm"]
    assert template_id is not None
    kvm = template_attrs(sim.template_xml(template_id))
    assert before["kvm"]["HYPERVISOR"] == "lxc"
    assert kvm["HYPERVISOR"] == "kvm"
    assert kvm["SCHED_REQUIREMENTS"] == "HYPERVISOR=kvm & ARCH=x86_64"
    assert "RAW" not in kvm and "LXC_UNPRIVILEGED" not in kvm
    assert kvm["DISK"] == {"IMAGE_ID": str(image_id), "DEV_PREFIX": "vd"}
    assert kvm["OS"] == {"KERNEL_DS": f"$FILE[IMAGE_ID={seed['images']['kernel-kvm']}]",
                         "ROOT": "vda", "KERNEL_CMD": "rw console=tty0"}
    reason = image_attr(sim, image_id, "HOOKD_REASON") or ""
    assert "re-targeted to kvm" in reason and "DEV_PREFIX=vd" in reason
    fixes = [e for e in daemon.events("template.fixed") if e["template_id"] == template_id]
    assert len(fixes) == 1 and fixes[0]["hypervisor"] == "kvm"
    changed = {c["attribute"] for c in fixes[0]["changes"]}
    assert {"HYPERVISOR", "SCHED_REQUIREMENTS", "RAW", "LXC_UNPRIVILEGED"} <= changed

    # LXC only, and mixed (LXC preferred, and the export pins LXC): nothing to change.
    for cluster in ("lxc", "mixed"):
        image_id, template_id = made[cluster]
        assert template_id is not None
        assert template_attrs(sim.template_xml(template_id)) == before[cluster], cluster
        assert image_attr(sim, image_id, "HOOKD_STATUS") == "applied"
    assert daemon.stop() == 0
