"""The event stream as a subscriber sees it: keys, frames, bodies, ordering."""

from __future__ import annotations

import pyone

from hookd.testing import Simulator, xmltree
from tests.simulator.simhelpers import Event, SubscriberProcess, event_tap, rpc

ADMIN = "oneadmin:opennebula"


def field(xml: str, *path: str) -> str:
    element: xmltree.Element | None = xmltree.parse(xml)
    for name in path:
        assert element is not None
        element = element.first(name)
    assert element is not None, path
    return element.text()


def test_pyone_export_ready_events_reach_a_subscriber_in_another_process() -> None:
    # A long ready_delay keeps the image LOCKED until the test finishes the transfer.
    with Simulator(ready_delay=60) as sim:
        ready_sub = SubscriberProcess(sim.zmq_url, [b"EVENT STATE IMAGE/READY/"])
        all_sub = SubscriberProcess(sim.zmq_url, [b"EVENT "])
        try:
            ready_sub.wait_ready(sim.xmlrpc_url, ADMIN)
            all_sub.wait_ready(sim.xmlrpc_url, ADMIN)
            one = pyone.OneServer(sim.xmlrpc_url, session=ADMIN)
            exported = one.marketapp.export(sim.seed_info.apps["dockerhub/nginx"],
                                            sim.seed_info.datastores["kvm-images"], "nginx")
            image_id = exported["image"]
            assert exported["vmtemplate"] >= 0
            assert one.image.info(image_id).STATE == 4
            # the Ruby client's follow-up update lands while the copy is running
            one.image.update(image_id, 'DESCRIPTION="exported by pyone"\n', 1)
            assert sim.controls.finish_transfers() == 1
            assert sim.wait_image_state(image_id, "READY", 5)
        finally:
            ready = ready_sub.stop()
            everything = all_sub.stop()

    expected_key = f"EVENT STATE IMAGE/READY//{image_id} ".encode()
    assert [e.key for e in ready] == [expected_key]
    assert all(e.frames == 2 for e in [*ready, *everything])
    (event,) = ready
    assert field(event.xml, "STATE") == "READY"
    assert field(event.xml, "RESOURCE_ID") == str(image_id)
    assert field(event.xml, "IMAGE", "STATE") == "1"
    assert field(event.xml, "IMAGE", "PREV_STATE") == "4"
    assert not event.xml.startswith("<?xml")
    assert b"\n" not in event.content

    image_keys = [e.key for e in everything if b"IMAGE" in e.key]
    assert image_keys == [
        f"EVENT IMAGE {image_id}/LOCKED/ ".encode(),
        f"EVENT STATE IMAGE/LOCKED//{image_id} ".encode(),
        f"EVENT IMAGE {image_id}/READY/ ".encode(),
        f"EVENT STATE IMAGE/READY//{image_id} ".encode(),
    ]
    by_key = {e.key: e for e in everything}
    assert by_key[image_keys[0]].content == by_key[image_keys[1]].content
    locked = by_key[image_keys[0]]
    assert field(locked.xml, "IMAGE", "STATE") == "4"
    assert field(locked.xml, "IMAGE", "PREV_STATE") == "0"
    keys = [e.key for e in everything]
    assert keys.index(b"EVENT API one.image.allocate 1") < keys.index(image_keys[0])
    assert keys.index(image_keys[1]) < keys.index(b"EVENT API one.image.update 1")
    assert keys.index(b"EVENT API one.template.allocate 1") < keys.index(image_keys[2])
    assert all(not k.startswith(b"EVENT API one.image.info") for k in keys)
    assert all(not k.startswith(b"EVENT API one.marketapp.info") for k in keys)


def test_without_an_update_while_locked_the_first_event_is_ready_from_init() -> None:
    with Simulator(ready_delay=60) as sim:
        sub = SubscriberProcess(sim.zmq_url, [b"EVENT IMAGE "])
        try:
            sub.wait_ready(sim.xmlrpc_url, ADMIN)
            one = pyone.OneServer(sim.xmlrpc_url, session=ADMIN)
            image_id = one.marketapp.export(sim.seed_info.apps["dockerhub/alpine"],
                                            sim.seed_info.datastores["kvm-images"])["image"]
            sim.controls.finish_transfers()
            assert sim.wait_image_state(image_id, "READY", 5)
        finally:
            events = sub.stop()
    assert [e.key for e in events] == [f"EVENT IMAGE {image_id}/READY/ ".encode()]
    assert field(events[0].xml, "IMAGE", "PREV_STATE") == "0"


def test_export_app_produces_the_api_sequence_of_the_ruby_client(simulator: Simulator) -> None:
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN, [b"EVENT API "]) as tap:
        image_id, template_id = simulator.export_app(
            simulator.seed_info.apps["dockerhub/redis"], simulator.seed_info.datastores[
                "kvm-images"], name="redis-7", tag="7.2")
        events = tap.wait_for(b"EVENT API one.template.allocate")
    assert [e.key for e in events] == [
        b"EVENT API one.image.allocate 1", b"EVENT API one.image.update 1",
        b"EVENT API one.template.allocate 1",
    ]
    allocate, update, template = events
    assert '                NAME     = "redis-7"\n' in allocate.xml
    assert 'URL_ARGS="tag=7.2"\n' in allocate.xml
    assert field(allocate.xml, "CALL_INFO", "EXTRA", "IMAGE", "STATE") == "4"
    assert "<TEMPLATE>\n  <DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX>" in update.xml
    assert f'DISK = [ IMAGE_ID = "{image_id}" ]' in template.xml
    assert template_id is not None
    doc = xmltree.parse(simulator.template_xml(template_id))
    assert (doc.first("NAME") or doc).text() == "redis-7"
    image = xmltree.parse(simulator.image_xml(image_id))
    names = [e.name for e in (image.first("TEMPLATE") or image).elements()]
    assert names == ["DEV_PREFIX", "FROM_APP", "FROM_APP_MD5", "FROM_APP_NAME", "URL_ARGS"]


def test_enable_publishes_state_events_before_its_api_event(simulator: Simulator) -> None:
    kernel = simulator.seed_info.images["kernel-kvm"]
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN, [b"EVENT "]) as tap:
        simulator.call("one.image.enable", kernel, False)
        simulator.call("one.image.enable", kernel, True)
        events = tap.drain(0.3)
    assert [e.key for e in events] == [
        f"EVENT IMAGE {kernel}/DISABLED/ ".encode(),
        f"EVENT STATE IMAGE/DISABLED//{kernel} ".encode(),
        b"EVENT API one.image.enable 1",
        f"EVENT IMAGE {kernel}/READY/ ".encode(),
        f"EVENT STATE IMAGE/READY//{kernel} ".encode(),
        b"EVENT API one.image.enable 1",
    ]
    assert field(events[3].xml, "IMAGE", "PREV_STATE") == "3"
    assert "<VALUE>0</VALUE></PARAMETER><PARAMETER><POSITION>1</POSITION><TYPE>OUT" in (
        events[2].xml)


def test_allocate_publishes_no_state_event_until_ready(simulator: Simulator) -> None:
    ds = simulator.seed_info.datastores["kvm-images"]
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN, [b"EVENT "]) as tap:
        image_id = simulator.call("one.image.allocate", 'NAME="quiet"\n'
                                  'PATH="docker://busybox?size=16"\n', ds)[1]
        events = tap.wait_for(f"EVENT STATE IMAGE/READY//{image_id} ".encode())
    assert [e.key for e in events] == [
        b"EVENT API one.image.allocate 1",
        f"EVENT IMAGE {image_id}/READY/ ".encode(),
        f"EVENT STATE IMAGE/READY//{image_id} ".encode(),
    ]
    assert field(events[1].xml, "IMAGE", "PREV_STATE") == "0"


def test_api_event_parameters_are_unescaped(simulator: Simulator) -> None:
    ds = simulator.seed_info.datastores["kvm-images"]
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN, [b"EVENT API "]) as tap:
        simulator.call("one.image.allocate", 'NAME="amp"\n'
                       'PATH="docker://nginx?size=2048&filesystem=ext4&format=raw"\n'
                       'DESCRIPTION="uses <docker> & ampersands"\n', ds)
        (event,) = tap.wait_for(b"EVENT API one.image.allocate")
    assert "<VALUE>****</VALUE>" in event.xml
    assert 'DESCRIPTION="uses <docker> & ampersands"' in event.xml
    assert not xmltree.is_well_formed(event.xml)  # as recorded from oned


def test_failures_and_info_calls(simulator: Simulator) -> None:
    kernel = simulator.seed_info.images["kernel-kvm"]
    with event_tap(simulator.zmq_url, simulator.xmlrpc_url, ADMIN, [b"EVENT API "]) as tap:
        simulator.call("one.image.info", kernel)
        simulator.call("one.imagepool.info", -2, -1, -1)
        rpc(simulator.xmlrpc_url, "one.image.delete", "oneadmin:bad", kernel)  # auth: none
        simulator.call("one.image.update", kernel, 'OS=[A="1"\n', 1)
        events: list[Event] = tap.wait_for(b"EVENT API one.image.update 0")
    assert [e.key for e in events] == [b"EVENT API one.image.update 0"]
    xml = events[0].xml
    assert "<RESULT>0</RESULT>" in xml
    assert "<POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE><![CDATA[[one.image.update] Cannot" in xml
    assert "<POSITION>4</POSITION><TYPE>OUT</TYPE><VALUE>-1</VALUE>" in xml


def test_failed_call_event_carries_the_error_text_raw_on_7x_in_cdata_on_6x(
    simulator: Simulator, simulator_74: Simulator,
) -> None:
    """6.8.3 escapes the error message (src/rm/Request.cc:757); 7.4.0 writes it as it is
    (include/Request.h:222-262): a message with ``&`` or ``<`` makes the event invalid XML
    (as IN parameters always could, on both)."""
    for sim, cdata in ((simulator, True), (simulator_74, False)):
        with event_tap(sim.zmq_url, sim.xmlrpc_url, ADMIN,
                       [b"EVENT API one.image.allocate 0"]) as tap:
            response = rpc(sim.xmlrpc_url, "one.image.allocate", ADMIN,
                           'NAME="a&b"\nSOURCE="/x"\nFORMAT="raw"\nSIZE="1"\n',
                           sim.seed_info.datastores["default"])
            (event,) = tap.wait_for(b"EVENT API one.image.allocate 0")
        message = response[1]
        assert "char '&' is not allowed" in message
        out = f"<TYPE>OUT</TYPE><VALUE>{f'<![CDATA[{message}]]>' if cdata else message}</VALUE>"
        assert out in event.xml
