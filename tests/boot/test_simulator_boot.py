"""The boot proof, end to end: ``hookd run`` fixes a Docker Hub import on a KVM host of the
OpenNebula simulator, with the Debian kernel and an initrd registered as KERNEL and RAMDISK
images whose files are real; the template hookd wrote is booted under QEMU as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookd.testing.daemon_config import wait_for
from hookd.testing.registry import FakeRegistry, image_config
from hookd.testing.simulator import Simulator
from tests.daemon.checks import Export, is_fixed
from tests.daemon.harness import PASSWORD, Hookd, template_attrs

from .conftest import BootGuest
from .scenario import assert_app_ran_as_configured
from .scenario import image_config as app_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.requires_system("qemu"),
    pytest.mark.timeout(900),
]


def _register(sim: Simulator, name: str, kind: str, path: Path) -> int:
    ok, image_id, *_ = sim.call("one.image.allocate",
                                f'NAME="{name}"\nTYPE="{kind}"\nPATH="{path}"\n',
                                sim.seed_info.datastores["kernels"])
    assert ok, image_id
    assert sim.wait_image_state(int(image_id), "READY", timeout=60)
    return int(image_id)


def test_template_fixed_by_hookd_on_the_simulator_boots(boot_guest: BootGuest,
                                                        tmp_path: Path) -> None:
    doc = app_config()
    with FakeRegistry() as registry, Simulator(
            auth=f"oneadmin:{PASSWORD}", datastore_dir=str(tmp_path / "datastores"),
            ready_delay=0.05) as sim:
        registry.start()
        registry.add_image("library/nginx", "latest",
                           {"linux/amd64": {**image_config("linux/amd64"),
                                            "config": doc["config"]}})
        kernel_id = _register(sim, "debian-cloud-vmlinux", "KERNEL", boot_guest.kernel.vmlinux)
        initrd_id = _register(sim, "debian-cloud-initrd", "RAMDISK", boot_guest.initrd)
        daemon = Hookd(tmp_path / "hookd", xmlrpc=sim.xmlrpc_url, zmq=sim.zmq_url,
                       registry=registry,
                       settings={"kernels": {"kvm": kernel_id, "firecracker": None},
                                 "initrds": {"kvm": initrd_id}})
        try:
            daemon.start()
            seed = sim.seed_info
            image_id, template_id = sim.export_app(seed.apps["dockerhub/nginx"],
                                                   seed.datastores["kvm-images"], name="boot")
            assert template_id is not None
            wait_for(lambda: is_fixed(sim, Export(image_id, template_id, "kvm")), 60,
                     "hookd to fix the import")
            template_xml = sim.template_xml(template_id)
            assert daemon.stop() == 0
        finally:
            daemon.close()
        os_vec = template_attrs(template_xml)["OS"]
        # The console a VM of OpenNebula's KVM driver has is VNC's tty0 (no serial port).
        assert os_vec["KERNEL_CMD"].split()[-1] == "console=tty0"
        assert os_vec["KERNEL_DS"] == f"$FILE[IMAGE_ID={kernel_id}]"
        assert os_vec["INITRD_DS"] == f"$FILE[IMAGE_ID={initrd_id}]"
        # hookd read the kernel file through the datastore and inspected it for real.
        reason = template_attrs(sim.image_xml(image_id)).get("HOOKD_REASON", "")
        assert "not inspected" not in reason
    result = boot_guest.boot(template_xml, kernel_id=kernel_id, initrd_id=initrd_id,
                             rootfs_id=image_id)
    report = result.report()
    assert not result.problems(), report
    # As OpenNebula's driver passes it, plus the harness's observation port (see BootGuest).
    assert result.cmdline == f"root=/dev/{os_vec['ROOT']} {os_vec['KERNEL_CMD']} console=ttyS0"
    assert result.root_device == "/dev/vda" and result.root_mode == "rw", report
    assert result.start_script_exit == 0, report
    assert result.context_continued, report
    assert_app_ran_as_configured(result, doc)
