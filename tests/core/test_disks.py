"""Device prediction mirrors VirtualMachineDisks::get_images (src/vm/VirtualMachineDisk.cc)."""

from __future__ import annotations

from handlers.disks import boot_disk_index, disks, predict_target
from tests.core import factories as f


def predict(specs: list[dict[str, str]], index: int, images: dict[int, int] | None = None,
            override: dict[int, str] | None = None) -> str:
    tmpl = f.vmtemplate(disks=specs, attrs=[("CONTEXT", {"NETWORK": "YES"})])
    facts = {i: f.image(100 + i, type_=t, attrs=[]) for i, t in (images or {}).items()}
    return predict_target(disks(tmpl), index, facts, default_prefix="sd", cdrom_prefix="hd",
                          prefix_override=override).target


def test_first_os_disk_gets_letter_a() -> None:
    assert predict([{"IMAGE_ID": "1"}], 0, {0: 0}) == "sda"
    assert predict([{"IMAGE_ID": "1", "DEV_PREFIX": "vd"}], 0, {0: 0}) == "vda"


def test_explicit_targets_are_reserved_first() -> None:
    assert predict([{"IMAGE_ID": "2", "TARGET": "vda"}, {"IMAGE_ID": "1"}], 1, {1: 0},
                   override={1: "vd"}) == "vdb"


def test_datablock_before_os_disk_does_not_take_its_letter() -> None:
    assert predict([{"IMAGE_ID": "2"}, {"IMAGE_ID": "1"}], 1, {0: 2, 1: 0}) == "sda"
    assert predict([{"IMAGE_ID": "2"}, {"IMAGE_ID": "1"}], 0, {0: 2, 1: 0}) == "sdb"


def test_second_os_disk_is_a_datablock() -> None:
    assert predict([{"IMAGE_ID": "1"}, {"IMAGE_ID": "2"}], 1, {0: 0, 1: 0}) == "sdb"


def test_cdrom_and_context_come_before_datablocks() -> None:
    # OS sda; CD-ROM image with prefix hd -> hda; context -> hdb; datablock sdb.
    assert predict([{"IMAGE_ID": "1"}, {"IMAGE_ID": "3"}, {"IMAGE_ID": "2"}], 2,
                   {0: 0, 1: 1, 2: 2}) == "sdb"


def test_unknown_image_before_ours_makes_prediction_uncertain() -> None:
    tmpl = f.vmtemplate(disks=[{"IMAGE_ID": "9"}, {"IMAGE_ID": "1"}])
    prediction = predict_target(disks(tmpl), 1, {1: f.image(1, attrs=[])},
                                default_prefix="sd", cdrom_prefix="hd")
    assert not prediction.certain


def test_boot_disk_index() -> None:
    assert boot_disk_index(f.vmtemplate(attrs=[("OS", {"BOOT": "disk12,nic0"})])) == 12
    assert boot_disk_index(f.vmtemplate(attrs=[("OS", {"BOOT": "nic0,disk1"})])) is None
    assert boot_disk_index(f.vmtemplate(attrs=[])) is None
