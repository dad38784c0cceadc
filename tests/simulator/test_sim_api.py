"""The XML-RPC API of the simulator: results, error arrays, faults, pools, templates."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path

import pyone
import pytest

from hookd.testing import Simulator, xmltree
from tests.simulator.simhelpers import rpc

ADMIN = "oneadmin:opennebula"


def fail_array(response: list[object], code: int) -> str:
    assert response[0] is False, response
    assert response[2] == code, response
    assert len(response) == 5
    assert response[4] == -1
    message = response[1]
    assert isinstance(message, str)
    return message


def test_pyone_talks_to_the_simulator(simulator: Simulator) -> None:
    one = pyone.OneServer(simulator.xmlrpc_url, session=ADMIN)
    assert one.system.version() == "6.8.3"
    pool = one.imagepool.info(-2, -1, -1)
    assert {i.NAME for i in pool.IMAGE} == {"kernel-kvm", "kernel-firecracker"}
    assert one.user.info(-1).NAME == "oneadmin"
    config = one.system.config()
    assert config is not None


def test_bad_session_and_unknown_user_give_the_same_authentication_error(
    simulator: Simulator,
) -> None:
    url = simulator.xmlrpc_url
    for session in ("oneadmin:wrong", "nobody:opennebula", "no-colon"):
        response = rpc(url, "one.imagepool.info", session, -2, -1, -1)
        assert response == [
            False,
            "[one.imagepool.info] User couldn't be authenticated, aborting call.",
            256, -1, -1,
        ]
    with pytest.raises(pyone.OneAuthenticationException):
        pyone.OneServer(url, session="oneadmin:wrong").system.version()


def test_unknown_object_is_no_exists_with_the_requested_id(simulator: Simulator) -> None:
    message = fail_array(simulator.call("one.image.info", 99999, False), 0x400)
    assert message == "[one.image.info] Error getting image [99999]."
    response = simulator.call("one.template.info", 99999, False, False)
    assert response[1] == ("[one.template.info] Error getting virtual machine template "
                           "[99999].")
    assert response[3] == 99999
    # oid -1 has no object and no special meaning for images
    assert fail_array(simulator.call("one.image.info", -1), 0x400) == (
        "[one.image.info] Error getting image Pool."
    )
    bad_ds = simulator.call("one.image.allocate", 'NAME="x"\nPATH="/tmp/x"\n', 99999)
    assert fail_array(bad_ds, 0x400) == "[one.image.allocate] Error getting datastore [99999]."
    assert bad_ds[3] == 99999


def test_update_of_a_locked_image_is_an_authorization_error(simulator: Simulator) -> None:
    kernel = simulator.seed_info.images["kernel-kvm"]
    assert simulator.call("one.image.lock", kernel, 1, False) == [True, kernel, 0]
    response = simulator.call("one.image.update", kernel, 'DESCRIPTION="x"\n', 1)
    assert response == [False, f"[one.image.update] User [0] : IMAGE is locked. [{kernel}].",
                        512, -1, -1]
    info = xmltree.parse(simulator.call("one.image.info", kernel)[1])
    lock = info.first("LOCK")
    assert lock is not None and (lock.first("LOCKED") or lock).text() == "1"
    assert simulator.call("one.image.lock", kernel, 2, True)[2] == 0x800  # test + locked
    assert simulator.call("one.image.unlock", kernel) == [True, kernel, 0]
    assert simulator.call("one.image.update", kernel, 'DESCRIPTION="x"\n', 1)[0] is True
    assert simulator.call("one.image.lock", kernel, 7)[1] == (
        "[one.image.lock] Wrong lock level specified"
    )


def test_malformed_template_is_an_internal_error(simulator: Simulator) -> None:
    kernel = simulator.seed_info.images["kernel-kvm"]
    response = simulator.call("one.image.update", kernel, 'OS=[KERNEL_CMD="a"\nDESCRIPTION="b"\n',
                              1)
    assert response == [
        False,
        "[one.image.update] Cannot update template. Parse error: syntax error, unexpected "
        "VARIABLE, expecting COMMA or CBRACKET at line 1, columns 20:31",
        8192, -1, -1,
    ]
    response = simulator.call("one.template.allocate", "NAME=x\nOS=[A=1\n")
    assert fail_array(response, 0x2000).startswith("[one.template.allocate] Parse error: ")
    assert fail_array(simulator.call("one.image.update", kernel, "<T><A></T>", 0), 0x2000) == (
        "[one.image.update] Cannot update template. Parse error: XML Template malformed."
    )


def test_wrong_update_type_and_filter_flag_are_api_errors(simulator: Simulator) -> None:
    kernel = simulator.seed_info.images["kernel-kvm"]
    assert simulator.call("one.image.update", kernel, 'A="1"', 2) == [
        False, "[one.image.update] Wrong update type", 0x1000, -1, -1]
    assert simulator.call("one.imagepool.info", -5, -1, -1) == [
        False, "[one.imagepool.info] Incorrect filter_flag", 0x1000, -1, -1]


def test_unknown_method_and_wrong_types_are_faults(simulator: Simulator) -> None:
    url = simulator.xmlrpc_url
    with pytest.raises(xmlrpc.client.Fault) as unknown:
        rpc(url, "one.image.nosuchmethod", ADMIN, 1)
    assert (unknown.value.faultCode, unknown.value.faultString) == (
        -506, "Method 'one.image.nosuchmethod' not defined")
    with pytest.raises(xmlrpc.client.Fault) as wrong:
        rpc(url, "one.image.info", ADMIN, "notanint", False)
    assert (wrong.value.faultCode, wrong.value.faultString) == (
        -501, "Parameter that is supposed to be integer is not")
    with pytest.raises(xmlrpc.client.Fault) as missing:
        rpc(url, "one.image.update", ADMIN, 1)
    assert missing.value.faultString == "Not enough parameters"
    with pytest.raises(xmlrpc.client.Fault) as no_session:
        rpc(url, "one.system.version", 5)
    assert no_session.value.faultString == "Parameter that is supposed to be a string is not"


def test_allocate_errors(simulator: Simulator) -> None:
    images_ds = simulator.seed_info.datastores["kvm-images"]
    kernels_ds = simulator.seed_info.datastores["kernels"]
    name_taken = simulator.call("one.image.allocate", 'NAME="kernel-kvm"\nTYPE=KERNEL\n'
                                'PATH="/etc/hostname"\n', kernels_ds)
    assert fail_array(name_taken, 0x4000) == (
        f"[one.image.allocate] Error allocating a new image. NAME is already taken by IMAGE "
        f"{simulator.seed_info.images['kernel-kvm']}."
    )
    wrong_ds = simulator.call("one.image.allocate", 'NAME="k2"\nTYPE=KERNEL\n'
                              'PATH="/etc/hostname"\n', images_ds)
    assert "cannot be registered in an IMAGE_DS datastore" in fail_array(wrong_ds, 0x4000)
    missing = simulator.call("one.image.allocate", 'NAME="broken-disk"\nTYPE="DATABLOCK"\n'
                             'PATH="/srv/images/does-not-exist.img"\n', images_ds)
    assert fail_array(missing, 0x2000) == (
        "[one.image.allocate] Cannot parse image SIZE: File not found")
    bad_name = simulator.call("one.image.allocate", 'NAME="a/b"\nPATH="docker://x?size=1"\n',
                              images_ds)
    assert fail_array(bad_name, 0x4000).endswith("Invalid NAME, char '/' is not allowed")
    system_ds = simulator.seed_info.datastores["kvm-system"]
    assert "only be allocated in a files or image datastore" in fail_array(
        simulator.call("one.image.allocate", 'NAME="s"\nPATH="/etc/hostname"\n', system_ds),
        0x4000)


def test_image_allocated_with_from_app_gets_the_app_fields(simulator: Simulator) -> None:
    ds = simulator.seed_info.datastores["kvm-images"]
    app = simulator.seed_info.apps["dockerhub/alpine"]
    response = simulator.call("one.image.allocate",
                              f'NAME="alpine"\nFROM_APP="{app}"\nTYPE="OS"\nDRIVER="raw"\n', ds)
    image_id = response[1]
    assert response == [True, image_id, 0]
    doc = xmltree.parse(simulator.image_xml(image_id))
    assert (doc.first("STATE") or doc).text() == "4"
    assert (doc.first("PREV_STATE") or doc).text() == "0"
    assert (doc.first("PATH") or doc).text() == (
        "docker://alpine?size=2048&filesystem=ext4&format=raw")
    assert (doc.first("SIZE") or doc).text() == "2048"
    template = doc.first("TEMPLATE")
    assert template is not None
    assert [e.name for e in template.elements()] == [
        "DEV_PREFIX", "FROM_APP", "FROM_APP_MD5", "FROM_APP_NAME"]
    assert simulator.wait_image_state(image_id, "READY")
    ready = xmltree.parse(simulator.image_xml(image_id))
    assert (ready.first("FORMAT") or ready).text() == "raw"
    assert (ready.first("SOURCE") or ready).text().startswith("/var/lib/one//datastores/")


def test_merge_update_replaces_whole_vectors_and_keeps_others(simulator: Simulator) -> None:
    tid = simulator.call("one.template.allocate",
                         'NAME="t1"\nCPU="1"\nOS=[KERNEL_DS="$FILE[IMAGE_ID=0]", ROOT="vda"]\n'
                         'DISK=[IMAGE_ID="1"]\nDISK=[IMAGE_ID="2"]\n'
                         'CONTEXT=[NETWORK="YES", SSH_PUBLIC_KEY="k"]\n')[1]
    assert simulator.call("one.template.update", tid, 'OS=[KERNEL_CMD="quiet"]\n'
                          'DISK=[IMAGE_ID="7"]\n', 1)[0] is True
    doc = xmltree.parse(simulator.template_xml(tid))
    template = doc.first("TEMPLATE")
    assert template is not None
    names = [e.name for e in template.elements()]
    assert names == ["CONTEXT", "CPU", "DISK", "OS"]
    os_el = template.first("OS")
    assert os_el is not None and [e.name for e in os_el.elements()] == ["KERNEL_CMD"]
    # replace (type 0) drops everything not sent
    assert simulator.call("one.template.update", tid, 'CPU="2"\n', 0)[0] is True
    replaced = xmltree.parse(simulator.template_xml(tid)).first("TEMPLATE")
    assert replaced is not None and [e.name for e in replaced.elements()] == ["CPU"]


def test_xml_form_update_expresses_any_value(simulator: Simulator) -> None:
    image = simulator.seed_info.images["kernel-kvm"]
    values = {"BS": "x\\", "QU": 'say "hi"', "AMP": "a & b", "LT": "<b>", "NL": "l1\nl2",
              "UNI": "ü日\t"}
    body = "".join(
        f"<{k}>{v.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</{k}>"
        for k, v in values.items()
    )
    assert simulator.call("one.image.update", image, f"<TEMPLATE>{body}</TEMPLATE>", 0)[0]
    stored = xmltree.parse(simulator.call("one.image.info", image)[1]).first("TEMPLATE")
    assert stored is not None
    assert {e.name: e.text() for e in stored.elements()} == values
    # "]]>" cannot be stored: oned answers success but its DB write fails (see report)
    before = simulator.call("one.image.info", image)[1]
    assert simulator.call("one.image.update", image,
                          "<TEMPLATE><X>a]]&gt;b</X></TEMPLATE>", 0) == [True, image, 0]
    assert simulator.call("one.image.info", image)[1] == before
    # in the attribute syntax it is a parse error
    assert simulator.call("one.image.update", image, 'X="a]]>b"', 1)[1] == (
        "[one.image.update] Cannot update template. Parse error.")


def test_pool_filters_ranges_and_pages(simulator: Simulator) -> None:
    ds = simulator.seed_info.datastores["kvm-images"]
    ids = simulator.controls.bulk_images(30, 'PATH="/srv/{i}.img"\n', ds)

    def listed(*params: int) -> list[int]:
        doc = xmltree.parse(simulator.call("one.imagepool.info", *params)[1])
        return [int((i.first("ID") or i).text()) for i in doc.elements()]

    everything = listed(-2, -1, -1)
    assert everything == sorted(everything, reverse=True)  # API_LIST_ORDER DESC
    assert listed(-2, ids[5], ids[9]) == list(reversed(ids[5:10]))
    assert listed(-2, ids[25], -1) == list(reversed(ids[25:]))
    assert listed(-2, -1, ids[3]) == everything  # start -1: no ID filter at all
    assert listed(-2, 0, -10) == everything[:10]  # page: offset 0, size 10
    assert listed(-2, 10, -10) == everything[10:20]
    assert listed(-2, -5, -3) == everything[:3]  # negative offset behaves as 0
    assert listed(-3, -1, -1) == everything  # mine
    assert listed(0, -1, -1) == everything  # uid 0
    assert listed(5, -1, -1) == []
    assert listed(-4, 0, -2) == everything[:2]


def test_image_enable_clone_and_delete(simulator: Simulator) -> None:
    ds = simulator.seed_info.datastores["kvm-images"]
    image = simulator.call("one.image.allocate", 'NAME="d"\nPATH="docker://alpine?size=64"\n',
                           ds)[1]
    assert simulator.wait_image_state(image, "READY")
    assert simulator.call("one.image.enable", image, False) == [True, image, 0]
    assert simulator.wait_image_state(image, "DISABLED", 0)
    assert "Could not enable image" not in str(simulator.call("one.image.enable", image, True))
    assert simulator.wait_image_state(image, "READY", 0)
    clone = simulator.call("one.image.clone", image, "d-copy")[1]
    assert isinstance(clone, int)
    source = xmltree.parse(simulator.image_xml(image))
    assert (source.first("STATE") or source).text() == "2"  # USED (non-persistent source)
    assert (source.first("CLONING_OPS") or source).text() == "1"
    assert simulator.wait_image_state(clone, "READY")
    assert simulator.wait_image_state(image, "READY")
    cloned = xmltree.parse(simulator.image_xml(clone))
    assert (cloned.first("CLONING_ID") or cloned).text() == "-1"
    assert simulator.call("one.image.delete", clone) == [True, clone, 0]
    assert simulator.wait_image_state(clone, "DELETE", 0)
    assert simulator.wait_image_deleted(clone)
    assert simulator.call("one.image.info", clone)[0] is False


def test_templates_extended_info_clone_delete(simulator: Simulator) -> None:
    image = simulator.seed_info.images["kernel-kvm"]
    tid = simulator.call("one.template.allocate", f'NAME="ext"\nDISK=[IMAGE_ID="{image}"]\n')[1]
    extended = xmltree.parse(simulator.call("one.template.info", tid, True, False)[1])
    disk = (extended.first("TEMPLATE") or extended).first("DISK")
    assert disk is not None
    names = [e.name for e in disk.elements()]
    assert names == sorted(names)
    assert {"DATASTORE", "DISK_ID", "IMAGE", "IMAGE_STATE", "SOURCE", "TM_MAD"} <= set(names)
    assert simulator.call("one.template.clone", tid, "ext")[1] == (
        "[one.template.clone] Error allocating a new virtual machine template. NAME is already "
        f"taken by TEMPLATE {tid}."
    )
    copy = simulator.call("one.template.clone", tid, "ext2")[1]
    assert simulator.call("one.template.delete", copy) == [True, copy, 0]
    assert simulator.call("one.template.info", copy)[0] is False


def test_system_calls(simulator: Simulator) -> None:
    config = xmltree.parse(simulator.call("one.system.config")[1])
    values = {e.name: e.text() for e in config.elements() if not e.elements()}
    assert values["DEFAULT_DEVICE_PREFIX"] == "sd"
    assert values["DEFAULT_CDROM_DEVICE_PREFIX"] == "hd"
    assert values["API_LIST_ORDER"] == "DESC"
    names = [e.name for e in config.elements()]
    assert names == sorted(names)
    assert simulator.call("one.zone.raftstatus")[1] == (
        "<RAFT><SERVER_ID>-1</SERVER_ID><STATE>0</STATE><TERM>0</TERM><VOTEDFOR>-1</VOTEDFOR>"
        "<COMMIT>0</COMMIT><LOG_INDEX>-1</LOG_INDEX><LOG_TERM>-1</LOG_TERM>"
        "<FEDLOG_INDEX>-1</FEDLOG_INDEX></RAFT>"
    )
    user = xmltree.parse(simulator.call("one.user.info", -1)[1])
    assert (user.first("NAME") or user).text() == "oneadmin"


def test_datastore_dir_copies_local_files(tmp_path: Path) -> None:
    store = tmp_path / "datastores"
    kernel_file = tmp_path / "vmlinuz"
    kernel_file.write_bytes(b"\x7fELF" + b"k" * 4096)
    with Simulator(datastore_dir=str(store), ready_delay=0.01) as sim:
        files_ds = sim.seed_info.datastores["kernels"]
        image = sim.call("one.image.allocate",
                         f'NAME="real-kernel"\nTYPE="KERNEL"\nPATH="{kernel_file}"\n',
                         files_ds)[1]
        assert sim.wait_image_state(image, "READY")
        source = (xmltree.parse(sim.image_xml(image)).first("SOURCE") or xmltree.Element("X"))
        path = Path(source.text())
        assert path.parent == store / str(files_ds)
        assert path.read_bytes() == kernel_file.read_bytes()
        # the bootstrap datastore keeps oned's defaults: /tmp is outside SAFE_DIRS
        restricted = sim.call("one.image.allocate",
                              f'NAME="r"\nTYPE="DATABLOCK"\nPATH="{kernel_file}"\n', 1)[1]
        assert sim.wait_image_state(restricted, "ERROR")
        error = xmltree.parse(sim.image_xml(restricted)).first("TEMPLATE")
        assert error is not None
        assert "check RESTRICTED_DIRS in your datastore" in (error.first("ERROR") or error).text()
