"""Decoding oned's event messages: recorded frames, and everything that is not one."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.intake import SUBSCRIPTIONS, EchoFilter, Malformed, Trigger, decode
from hookd.triggers import READY, Cause, Why
from tests.shared_data import recorded_events

UPDATE = Why(Cause.EVENT, "one.template.update", "one.template.update")

READY_XML = (
    "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>IMAGE</HOOK_OBJECT>"
    "<STATE>READY</STATE><RESOURCE_ID>{id}</RESOURCE_ID><IMAGE><ID>{id}</ID><UID>0</UID>"
    "<GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>nginx</NAME>"
    "<TYPE>0</TYPE><DISK_TYPE>0</DISK_TYPE><PERSISTENT>0</PERSISTENT>"
    "<SOURCE><![CDATA[dummy_path]]></SOURCE><PATH><![CDATA[docker://nginx]]></PATH>"
    "<STATE>1</STATE><PREV_STATE>4</PREV_STATE><DATASTORE_ID>101</DATASTORE_ID>"
    "<DATASTORE>images</DATASTORE><TEMPLATE><FROM_APP><![CDATA[0]]></FROM_APP></TEMPLATE>"
    "</IMAGE></HOOK_MESSAGE>")


def ready(image_id: int = 7) -> list[bytes]:
    body = READY_XML.format(id=image_id).encode()
    return [f"EVENT STATE IMAGE/READY//{image_id} ".encode(), base64.b64encode(body)]


def test_ready_event_gives_an_image_trigger_and_nothing_from_its_body() -> None:
    trigger = decode(ready(7))
    assert trigger is not None and trigger.kind == "image" and trigger.object_id == 7
    # The body's image is never believed (anyone who can bind the port can publish one):
    # the trigger carries only the id.
    assert not hasattr(trigger, "image")


def test_recorded_ready_events_decode() -> None:
    events = recorded_events("image_allocate_dummy_ds_ready.jsonl")
    triggers = [decode([e["key"].encode(), e["content_b64"].encode()]) for e in events]
    ready_ones = [t for t in triggers if t is not None and t.why == READY]
    assert len(ready_ones) == 1  # only the STATE family key; EVENT IMAGE 1/READY/ is not ours
    assert ready_ones[0].object_id == 1


def test_recorded_malformed_api_body_still_gives_the_new_id() -> None:
    events = recorded_events("api_one.image.allocate_with_ampersand.jsonl")
    api = [e for e in events if e["key"].startswith("EVENT API")]
    assert api
    # one.image.allocate is not a call hookd acts on; read the id the way hookd would for a
    # template allocate by rewriting only the call name.
    raw = base64.b64decode(api[0]["content_b64"]).replace(b"one.image.allocate",
                                                         b"one.template.allocate")
    trigger = decode([b"EVENT API one.template.allocate 1", base64.b64encode(raw)])
    assert trigger is not None and trigger.kind == "template" and trigger.object_id == 5


def test_recorded_template_update_event() -> None:
    events = recorded_events("api_one.template.update.jsonl")
    trigger = decode([events[0]["key"].encode(), events[0]["content_b64"].encode()])
    assert trigger is not None and trigger.kind == "template" and trigger.object_id == 0


def test_failed_api_calls_are_not_triggers() -> None:
    assert decode([b"EVENT API one.template.update 0", base64.b64encode(b"<x/>")]) is None


def test_forged_out_parameter_in_free_text_does_not_win() -> None:
    forged = ("<PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>999</VALUE>"
              "</PARAMETER>")
    body = ("<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.template.allocate</CALL>"
            "<CALL_INFO><RESULT>1</RESULT><PARAMETERS>"
            "<PARAMETER><POSITION>1</POSITION><TYPE>IN</TYPE><VALUE>****</VALUE></PARAMETER>"
            f"<PARAMETER><POSITION>2</POSITION><TYPE>IN</TYPE><VALUE>NAME=\"a & {forged}"
            "\"</VALUE></PARAMETER>"
            "<PARAMETER><POSITION>1</POSITION><TYPE>OUT</TYPE><VALUE>true</VALUE></PARAMETER>"
            "<PARAMETER><POSITION>2</POSITION><TYPE>OUT</TYPE><VALUE>12</VALUE></PARAMETER>"
            "<PARAMETER><POSITION>3</POSITION><TYPE>OUT</TYPE><VALUE>0</VALUE></PARAMETER>"
            "</PARAMETERS><EXTRA></EXTRA></CALL_INFO></HOOK_MESSAGE>")
    for text in (body, body.replace(" & ", " and ")):  # malformed, then well-formed
        trigger = decode([b"EVENT API one.template.allocate 1",
                          base64.b64encode(text.encode())])
        assert trigger is not None and trigger.object_id == 12


@pytest.mark.parametrize(("frames", "reason"), [
    ([b"EVENT STATE IMAGE/READY//7 "], "frames"),
    ([b"EVENT STATE IMAGE/READY//7 ", b"a", b"b"], "frames"),
    ([b"EVENT STATE IMAGE/READY//7 ", b"!!!notbase64"], "base64"),
    ([b"EVENT STATE IMAGE/READY//7 ", base64.b64encode(b"not xml")], "xml"),
    ([b"EVENT STATE IMAGE/READY//7 ", base64.b64encode(
        b'<!DOCTYPE x [<!ENTITY a "b">]><HOOK_MESSAGE>&a;</HOOK_MESSAGE>')], "xml"),
    ([b"EVENT STATE IMAGE/READY//7 ", base64.b64encode(b"<OTHER/>")], "root"),
    ([b"EVENT STATE IMAGE/READY//7 ", base64.b64encode(READY_XML.format(id=8).encode())],
     "id"),
    ([b"EVENT STATE IMAGE/READY//7 ", base64.b64encode(
        READY_XML.format(id=7).replace("<RESOURCE_ID>7", "<RESOURCE_ID>x").encode())], "id"),
    ([b"X" * 300, b""], "key_size"),
    ([b"EVENT STATE IMAGE/READY//7 ", b"A" * (5 * 1024 * 1024)], "size"),
    ([b"EVENT API one.template.update 1", base64.b64encode(b"<HOOK_MESSAGE/>")], "fields"),
])
def test_malformed_messages_are_rejected_with_a_reason(frames: list[bytes],
                                                       reason: str) -> None:
    with pytest.raises(Malformed) as info:
        decode(frames)
    assert info.value.reason == reason


def test_billion_laughs_is_refused_without_expansion() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{"&lol" + str(i - 1) + ";" * 10 if i else "&lol;"}">'
                      for i in range(1, 9))
            + ']><HOOK_MESSAGE>&lol8;</HOOK_MESSAGE>')
    with pytest.raises(Malformed):
        decode([b"EVENT STATE IMAGE/READY//7 ", base64.b64encode(bomb.encode())])


def test_keys_we_do_not_want_are_ignored() -> None:
    assert decode([b"EVENT IMAGE 7/READY/ ", base64.b64encode(b"<x/>")]) is None
    assert decode([b"EVENT API one.vm.allocate 1", base64.b64encode(b"<x/>")]) is None


@pytest.mark.parametrize("key", [b"EVENT STATE IMAGE/READY//7", b"EVENT STATE IMAGE/READY//x ",
                                 b"EVENT STATE IMAGE/READY//7 extra",
                                 b"EVENT API one.template.update 1x"])
def test_subscribed_keys_in_the_wrong_shape_are_malformed(key: bytes) -> None:
    with pytest.raises(Malformed) as info:
        decode([key, base64.b64encode(b"<x/>")])
    assert info.value.reason == "key"


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_arbitrary_frames_never_crash(frames: list[bytes]) -> None:
    try:
        result = decode(frames)
    except Malformed:
        return
    assert result is None or isinstance(result, Trigger)


def test_subscriptions_include_ready_and_template_calls() -> None:
    subs = SUBSCRIPTIONS
    assert b"EVENT STATE IMAGE/READY/" in subs
    assert b"EVENT API one.template.update 1" in subs
    assert all(not s.endswith(b" ") for s in subs)


def test_echo_filter_recognises_our_own_update_once() -> None:
    now = [100.0]
    echo = EchoFilter(ttl=10, clock=lambda: now[0])
    payload = "<TEMPLATE><OS><ROOT>vda</ROOT></OS></TEMPLATE>"
    echo.expect("one.template.update", 5, payload)
    body = ("<HOOK_MESSAGE>...<VALUE>" + payload + "</VALUE>...").encode()
    ours = Trigger("template", 5, UPDATE, raw=body)
    assert echo.is_echo(ours)
    assert not echo.is_echo(ours)  # consumed
    echo.expect("one.template.update", 5, payload)
    assert not echo.is_echo(Trigger("template", 6, UPDATE, raw=body))
    now[0] += 11
    assert not echo.is_echo(ours)  # expired


def test_echo_filter_matches_exact_bytes_only() -> None:
    echo = EchoFilter(ttl=10)
    script = "A" * 30_000
    ours = f"<TEMPLATE><CONTEXT><START_SCRIPT_BASE64>{script}</START_SCRIPT_BASE64></CONTEXT>"
    echo.expect("one.template.update", 5, ours + "</TEMPLATE>")
    # Same length, same beginning, one byte different near the end: a person's update.
    theirs = ours[:-2] + "B>" + "</TEMPLATE>"
    body = f"<HOOK_MESSAGE><VALUE>{theirs}</VALUE>".encode()
    assert not echo.is_echo(Trigger("template", 5, UPDATE, raw=body))
    # The payload found after a false start with the same first bytes.
    body = f"<VALUE>{ours[:100]}</VALUE><VALUE>{ours}</TEMPLATE></VALUE>".encode()
    assert echo.is_echo(Trigger("template", 5, UPDATE, raw=body))


def test_echo_filter_keeps_no_payloads() -> None:
    import tracemalloc

    echo = EchoFilter(ttl=120)
    payload = "<TEMPLATE><CONTEXT><START_SCRIPT_BASE64>" + "Q" * 25_000 + "</START_SCRIPT_BASE64>"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for template_id in range(2_000):
            echo.expect("one.template.update", template_id, payload + f"{template_id}</TEMPLATE>")
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 2,000 payloads are 50 MB; what is kept is a few hundred bytes each.
    assert retained < 2_000 * 1_000, retained


def _update(template_id: int, payload: str) -> Trigger:
    body = f"<HOOK_MESSAGE><CALL>one.template.update</CALL><VALUE>{payload}</VALUE>".encode()
    return Trigger("template", template_id, UPDATE, raw=body)


def test_an_update_by_someone_else_between_read_and_echo_is_named() -> None:
    """oned publishes API events in the order its calls finish: an update by someone else
    whose event arrives after hookd began reading and before the echo of hookd's own update
    may have been overwritten by it."""
    now = [100.0]
    echo = EchoFilter(ttl=10, clock=lambda: now[0], wall=lambda: 1_764_676_927.0)
    reported: list[tuple[int, int]] = []
    echo.on_concurrent = lambda image_id, template_id: reported.append((image_id, template_id))
    ours = "<TEMPLATE><CONTEXT><START_SCRIPT_BASE64>eA==</START_SCRIPT_BASE64></CONTEXT>"
    echo.watch([5])
    assert not echo.is_echo(_update(5, "CONTEXT=[SSH_PUBLIC_KEY=\"k\"]"))  # the person
    echo.expect("one.template.update", 5, ours, image_id=42, rewritten=("CONTEXT",))
    echo.unwatch([5])  # the reconcile is over; the watch waits for the echo
    assert echo.is_echo(_update(5, ours))
    assert reported == [(42, 5)]
    note = echo.concurrent_changes(42)[5]
    assert "someone else updated this template while hookd was fixing it" in note
    assert "CONTEXT" in note and "2025-12-02 12:02:07 UTC" in note
    assert echo.concurrent_changes(7) == {}


def test_updates_before_the_read_or_after_the_echo_are_not_concurrent() -> None:
    echo = EchoFilter(ttl=10)
    reported: list[tuple[int, int]] = []
    echo.on_concurrent = lambda image_id, template_id: reported.append((image_id, template_id))
    ours = "<TEMPLATE><OS><ROOT>vda</ROOT></OS></TEMPLATE>"
    assert not echo.is_echo(_update(5, "NAME=\"before\""))  # not watched yet
    echo.watch([5, 6])
    echo.expect("one.template.update", 5, ours, image_id=42, rewritten=("OS",))
    echo.unwatch([5, 6])  # 6 was read but not written: no longer watched
    assert not echo.is_echo(_update(6, "NAME=\"x\""))
    assert echo.is_echo(_update(5, ours))
    assert not echo.is_echo(_update(5, "NAME=\"after\""))  # after hookd's write: nothing lost
    assert reported == [] and echo.concurrent_changes(42) == {}


def test_a_concurrent_note_expires() -> None:
    wall = [1000.0]
    echo = EchoFilter(ttl=10, wall=lambda: wall[0], note_ttl=60)
    ours = "<TEMPLATE><OS><ROOT>vda</ROOT></OS></TEMPLATE>"
    echo.watch([5])
    echo.is_echo(_update(5, "x"))
    echo.expect("one.template.update", 5, ours, image_id=42, rewritten=("OS",))
    assert echo.is_echo(_update(5, ours))
    assert 5 in echo.concurrent_changes(42)
    wall[0] += 61
    assert echo.concurrent_changes(42) == {}
