"""The 7.4 flavour's ``onemarketapp export`` of a Linux Containers app, against a real one.

The expected values were measured on a real oned 7.4.0 on 2026-12-02 (real_oned_7_4.md in
this directory, section 1): app ``alpine_3.20`` of a ``linuxcontainers`` marketplace on
``http://127.0.0.1:8445/`` exported with ``onemarketapp export 0 sim74-alpine -d 101`` into
a dummy image datastore. The world here is the same: a dummy datastore 101, the app as the
driver listed it (with the MD5 it computed), the export through the front door.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from hookd.testing import Simulator, builders, xmltree
from hookd.testing.seed import add_linuxcontainers_app, lxd_vmtemplate_7
from tests.simulator.simhelpers import Event, event_tap

ENDPOINT = "http://127.0.0.1:8445/"
MD5 = "8a39a0810f9ef0216b4197d798a5ff6f"
SOURCE = (f"lxd://{ENDPOINT}images/alpine/3.20/amd64/default/20250102_13:00/rootfs.tar.xz"
          "?size=2048&filesystem=ext4&format=raw")
# Measured (image 22, template 43 on the real oned; {image} is the new image's ID):
IMAGE_TEMPLATE = (
    "<TEMPLATE><DEV_PREFIX><![CDATA[sd]]></DEV_PREFIX><FROM_APP><![CDATA[0]]></FROM_APP>"
    f"<FROM_APP_MD5><![CDATA[{MD5}]]></FROM_APP_MD5>"
    "<FROM_APP_NAME><![CDATA[alpine_3.20]]></FROM_APP_NAME></TEMPLATE>"
)
VM_TEMPLATE = (
    "<TEMPLATE><CONTEXT><NETWORK><![CDATA[YES]]></NETWORK><SET_HOSTNAME><![CDATA[$NAME]]>"
    "</SET_HOSTNAME><SSH_PUBLIC_KEY><![CDATA[$USER[SSH_PUBLIC_KEY]]]></SSH_PUBLIC_KEY>"
    "</CONTEXT><CPU><![CDATA[1]]></CPU><DISK><IMAGE_ID><![CDATA[{image}]]></IMAGE_ID></DISK>"
    "<GRAPHICS><LISTEN><![CDATA[0.0.0.0]]></LISTEN><TYPE><![CDATA[vnc]]></TYPE></GRAPHICS>"
    "<HYPERVISOR><![CDATA[lxc]]></HYPERVISOR><LXC_UNPRIVILEGED><![CDATA[false]]>"
    "</LXC_UNPRIVILEGED><MEMORY><![CDATA[768]]></MEMORY><RAW><DATA>"
    "<![CDATA[lxc.apparmor.profile=unconfined]]></DATA><TYPE><![CDATA[lxc]]></TYPE></RAW>"
    "<SCHED_REQUIREMENTS><![CDATA[HYPERVISOR=lxc & ARCH=x86_64]]></SCHED_REQUIREMENTS>"
    "<VCPU><![CDATA[2]]></VCPU></TEMPLATE>"
)
ALLOCATE_IN = ["****", 'DRIVER="raw"\n                NAME     = "sim74-alpine"\n'
               '                FROM_APP = "0"\n', "101", "0"]
UPDATE_IN_3 = (
    "<TEMPLATE>\n  <DEV_PREFIX><![CDATA[sd]]></DEV_PREFIX>\n"
    "  <FROM_APP><![CDATA[0]]></FROM_APP>\n"
    f"  <FROM_APP_MD5><![CDATA[{MD5}]]></FROM_APP_MD5>\n"
    "  <FROM_APP_NAME><![CDATA[alpine_3.20]]></FROM_APP_NAME>\n</TEMPLATE>"
)
TEMPLATE_ALLOCATE_IN_2 = (lxd_vmtemplate_7() + '\n                    NAME = "sim74-alpine"\n'
                          '                    DISK = [ IMAGE_ID = "{image}" ]\n')


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(one_version="7.4", seed=False, ready_delay=0.02).start()
    try:
        world = simulator.world
        with world.lock:
            cluster = builders.add_cluster(world, "dummy-cluster")
            builders.add_host(world, "kvm-host-01", "kvm", cluster.oid, im_mad="dummy")
            builders.add_datastore(world, "dummy-files", "FILE_DS", ds_mad="dummy",
                                   tm_mad="dummy", cluster_ids=(cluster.oid,))
            builders.add_datastore(world, "dummy-images", "IMAGE_DS", ds_mad="dummy",
                                   tm_mad="dummy", cluster_ids=(cluster.oid,))
            add_linuxcontainers_app(world, 1, "alpine", "3.20", "20250102_13:00",
                                    endpoint=ENDPOINT, md5=MD5)
        yield simulator
    finally:
        simulator.stop()


def in_values(event: Event) -> list[str]:
    """IN parameters as written (unescaped: an XML template is not a child element)."""
    return re.findall(r"<TYPE>IN</TYPE><VALUE>(.*?)</VALUE></PARAMETER>", event.xml, re.DOTALL)


def template_of(document: str) -> str:
    start, end = document.index("<TEMPLATE>"), document.rindex("</TEMPLATE>")
    return document[start:end + len("</TEMPLATE>")]


def test_linuxcontainers_export_matches_real_oned_74(sim: Simulator) -> None:
    with event_tap(sim.zmq_url, sim.xmlrpc_url, sim.session, [b"EVENT "]) as tap:
        image, template = sim.export_app(0, 101, name="sim74-alpine")
        assert template is not None
        events = tap.wait_for(f"EVENT STATE IMAGE/READY//{image} ".encode())
        events += tap.drain(0.3)
    keys = [e.key.decode() for e in events]
    # READY may come before or after the template's allocation (the copy runs meanwhile)
    image_keys = [k for k in keys if "template" not in k]
    assert image_keys == [
        "EVENT API one.image.allocate 1", f"EVENT IMAGE {image}/LOCKED/ ",
        f"EVENT STATE IMAGE/LOCKED//{image} ", "EVENT API one.image.update 1",
        f"EVENT IMAGE {image}/READY/ ", f"EVENT STATE IMAGE/READY//{image} "]
    assert keys.index("EVENT API one.template.allocate 1") > keys.index(
        "EVENT API one.image.update 1")
    by_key = {e.key.decode(): e for e in events}
    assert in_values(by_key["EVENT API one.image.allocate 1"]) == ALLOCATE_IN
    assert in_values(by_key["EVENT API one.image.update 1"]) == [
        "****", str(image), UPDATE_IN_3, "0"]
    assert in_values(by_key["EVENT API one.template.allocate 1"]) == [
        "****", TEMPLATE_ALLOCATE_IN_2.format(image=image)]

    image_doc = xmltree.parse(sim.image_xml(image))
    fields = {e.name: e.text() for e in image_doc.elements()}
    assert (fields["TYPE"], fields["SOURCE"], fields["FORMAT"], fields["PATH"],
            fields["SIZE"], fields["STATE"]) == ("0", "dummy_path", "dummy_format", SOURCE,
                                                 "2048", "1")
    assert template_of(sim.image_xml(image)) == IMAGE_TEMPLATE
    assert template_of(sim.template_xml(template)) == VM_TEMPLATE.format(image=image)
