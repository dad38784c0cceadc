"""The 7.x flavour: every document validates against the OpenNebula 7.4.0 schemas."""

from __future__ import annotations

import pytest

from hookd.testing import Simulator, xmltree
from tests.simulator.simhelpers import event_tap, validate

ADMIN = "oneadmin:opennebula"


def assert_valid(document: str, schema: str) -> None:
    errors = validate(document, schema)
    assert not errors, f"{schema}: {errors[:5]}"


def test_flavour_basics(simulator_74: Simulator) -> None:
    sim = simulator_74
    assert sim.call("one.system.version")[1] == "7.4.0"
    markets = xmltree.parse(sim.call("one.marketpool.info")[1])
    assert sorted((m.first("MARKET_MAD") or m).text() for m in markets.elements()) == [
        "linuxcontainers", "one"]
    hosts = xmltree.parse(sim.call("one.hostpool.info")[1])
    assert {(h.first("VM_MAD") or h).text() for h in hosts.elements()} == {"kvm", "lxc"}
    clusters = xmltree.parse(sim.call("one.clusterpool.info")[1])
    assert sorted((c.first("NAME") or c).text() for c in clusters.elements()) == [
        "default", "kvm", "lxc", "mixed"]
    apps = xmltree.parse(sim.call("one.marketapppool.info", -2, -1, -1)[1])
    for app in apps.elements():
        assert not (app.first("NAME") or app).text().endswith(" - LXD")
        template = app.first("TEMPLATE")
        assert template is not None and (template.first("HYPERVISOR") or app).text() == "lxc"


@pytest.mark.parametrize(
    ("method", "args", "schema"),
    [
        ("one.imagepool.info", (-2, -1, -1), "image_pool.xsd"),
        ("one.templatepool.info", (-2, -1, -1), "vmtemplate_pool.xsd"),
        ("one.datastorepool.info", (), "datastore_pool.xsd"),
        ("one.hostpool.info", (), "host_pool.xsd"),
        ("one.clusterpool.info", (), "cluster_pool.xsd"),
        ("one.marketpool.info", (), "marketplace_pool.xsd"),
        ("one.marketapppool.info", (-2, -1, -1), "marketplaceapp_pool.xsd"),
        ("one.zone.raftstatus", (), "raftstatus.xsd"),
        ("one.user.info", (-1,), "user.xsd"),
    ],
)
def test_documents_validate(simulator_74: Simulator, method: str, args: tuple[int, ...],
                            schema: str) -> None:
    sim = simulator_74
    image = sim.seed_info.images["kernel-kvm"]
    sim.call("one.template.allocate", f'NAME="t"\nCPU="1"\nDISK=[IMAGE_ID="{image}"]\n')
    sim.controls.lock("image", image, 1)
    document = sim.call(method, *args)[1]
    assert isinstance(document, str)
    assert_valid(document, schema)
    for element in xmltree.parse(document).elements():
        if method.endswith("pool.info"):
            single = {"one.imagepool.info": ("one.image.info", "image.xsd"),
                      "one.templatepool.info": ("one.template.info", "vmtemplate.xsd"),
                      "one.datastorepool.info": ("one.datastore.info", "datastore.xsd"),
                      "one.hostpool.info": ("one.host.info", "host.xsd"),
                      "one.clusterpool.info": ("one.cluster.info", "cluster.xsd"),
                      "one.marketpool.info": ("one.market.info", "marketplace.xsd"),
                      "one.marketapppool.info": ("one.marketapp.info",
                                                 "marketplaceapp.xsd")}[method]
            oid = int((element.first("ID") or element).text())
            assert_valid(sim.call(single[0], oid)[1], single[1])


def test_exported_image_and_hook_messages_validate(simulator_74: Simulator) -> None:
    sim = simulator_74
    app = sim.seed_info.apps["lxc/alpine_3.19"]
    ds = sim.seed_info.datastores["lxc-images"]
    with event_tap(sim.zmq_url, sim.xmlrpc_url, ADMIN, [b"EVENT "]) as tap:
        image_id, template_id = sim.export_app(app, ds, name="alpine")
        events = tap.wait_for(f"EVENT STATE IMAGE/READY//{image_id} ".encode())
        sim.call("one.image.update", image_id, 'LABELS="lxc"\n', 1)
        events += tap.wait_for(b"EVENT API one.image.update 1")
    assert template_id is not None
    image = sim.image_xml(image_id)
    assert "<MODTIME>" in image and "<BACKUP_DISK_IDS></BACKUP_DISK_IDS>" in image
    assert_valid(image, "image.xsd")
    assert_valid(sim.template_xml(template_id), "vmtemplate.xsd")
    template = xmltree.parse(sim.template_xml(template_id)).first("TEMPLATE")
    assert template is not None
    assert (template.first("HYPERVISOR") or template).text() == "lxc"
    assert (template.first("SCHED_REQUIREMENTS") or template).text() == (
        "HYPERVISOR=lxc & ARCH=x86_64")
    state_events = [e for e in events if e.key.startswith(b"EVENT STATE IMAGE/")]
    assert state_events
    for event in state_events:
        assert_valid(event.xml, "hook_message_state.xsd")
    api = [e for e in events if e.key.startswith(b"EVENT API one.image.")]
    assert api
    for event in api:
        # IN parameters are not escaped: only messages without & or < are XML at all
        if xmltree.is_well_formed(event.xml):
            assert_valid(event.xml, "hook_message_api.xsd")
    assert any(xmltree.is_well_formed(e.xml) for e in api)


def test_the_validator_rejects_a_6_8_image(simulator: Simulator) -> None:
    # 6.8 has no MODTIME: proves the schema check is real, and the flavours differ.
    errors = validate(simulator.image_xml(simulator.seed_info.images["kernel-kvm"]),
                      "image.xsd")
    assert any("MODTIME" in e for e in errors)
