"""How oned stores what a merge update sends, as the simulator reproduces it.

From OpenNebula's source (src/template/Template.cc, 6.0 - 7.4: ``rebuild_attributes``,
``single_xml_att``, ``vector_xml_att``, ``merge``) and checked on a real oned (see
``../shared/reference/real-oned-scratch.md``): an element without text is no attribute at
all, so a merge keeps the old value; an empty CDATA section is the empty string; an element
whose children are empty elements is an empty vector, which a merge erases and does not put
back; vector sub-attribute names keep their case in the XML form.
"""

from __future__ import annotations

import base64

from lxml import etree

from hookd.testing import Simulator
from hookd.testing.template_lang import parse_template

BASE = 'NAME="t"\nA="1"\nB="2"\nOS=[ARCH="x86_64", ROOT="sda"]\nCONTEXT=[NETWORK="YES"]\n'


def _template(sim: Simulator) -> int:
    ok, template_id, *_ = sim.call("one.template.allocate", BASE)
    assert ok, template_id
    return int(template_id)


def _stored(sim: Simulator, template_id: int) -> etree._Element:
    root = etree.fromstring(sim.template_xml(template_id).encode())
    element = root.find("TEMPLATE")
    assert element is not None
    return element


def _merge(sim: Simulator, template_id: int, xml: str) -> None:
    ok, *rest = sim.call("one.template.update", template_id, xml, 1)
    assert ok, rest


def test_an_element_without_text_is_ignored_by_a_merge(simulator: Simulator) -> None:
    tid = _template(simulator)
    _merge(simulator, tid, "<TEMPLATE><A></A><B/></TEMPLATE>")
    stored = _stored(simulator, tid)
    assert stored.findtext("A") == "1" and stored.findtext("B") == "2"


def test_an_empty_cdata_section_stores_the_empty_string(simulator: Simulator) -> None:
    tid = _template(simulator)
    _merge(simulator, tid, "<TEMPLATE><A><![CDATA[]]></A></TEMPLATE>")
    stored = _stored(simulator, tid)
    assert stored.find("A") is not None and stored.findtext("A") == ""
    assert stored.findtext("B") == "2"


def test_an_empty_vector_removes_the_attribute(simulator: Simulator) -> None:
    tid = _template(simulator)
    _merge(simulator, tid, "<TEMPLATE><A><HOOKD_REMOVE/></A><OS><HOOKD_REMOVE/></OS>"
                           "</TEMPLATE>")
    stored = _stored(simulator, tid)
    assert stored.find("A") is None and stored.find("OS") is None
    assert stored.findtext("B") == "2"


def test_a_vector_is_replaced_whole_and_empty_sub_elements_are_dropped(
        simulator: Simulator) -> None:
    tid = _template(simulator)
    _merge(simulator, tid, "<TEMPLATE><OS><ROOT></ROOT><KERNEL_CMD>rw</KERNEL_CMD></OS>"
                           "</TEMPLATE>")
    os_vec = _stored(simulator, tid).find("OS")
    assert os_vec is not None
    assert [child.tag for child in os_vec] == ["KERNEL_CMD"]  # ARCH and ROOT are gone


def test_vector_names_keep_their_case_in_the_xml_form_only(simulator: Simulator) -> None:
    tid = _template(simulator)
    _merge(simulator, tid, "<TEMPLATE><CONTEXT><ssh_public_key>k</ssh_public_key>"
                           "<NETWORK>YES</NETWORK></CONTEXT><lower>v</lower></TEMPLATE>")
    stored = _stored(simulator, tid)
    context = stored.find("CONTEXT")
    assert context is not None
    assert sorted(child.tag for child in context) == ["NETWORK", "ssh_public_key"]
    assert stored.findtext("LOWER") == "v"  # top-level names are always upper-cased
    _merge(simulator, tid, 'CONTEXT=[ssh_public_key="k"]')
    context = _stored(simulator, tid).find("CONTEXT")
    assert context is not None and [child.tag for child in context] == ["SSH_PUBLIC_KEY"]
    assert parse_template('V=[lower="x"]').vectors("V")[0].value == {"LOWER": "x"}


def test_a_person_edit_is_one_merge_of_the_whole_vector_with_its_event(
        simulator: Simulator) -> None:
    tid = _template(simulator)
    events: list[str] = []
    emit = simulator.world.emit_api

    def record(message: str) -> None:
        events.append(message)
        emit(message)

    simulator.world.emit_api = record  # type: ignore[method-assign,assignment]
    assert simulator.controls.person_edit(tid, "CONTEXT", "SSH_PUBLIC_KEY", "ssh-ed25519 x&<")
    context = _stored(simulator, tid).find("CONTEXT")
    assert context is not None
    assert {c.tag: c.text for c in context} == {"NETWORK": "YES",
                                               "SSH_PUBLIC_KEY": "ssh-ed25519 x&<"}
    assert len(events) == 1
    body = base64.b64decode(events[0]).decode()
    assert "<CALL>one.template.update</CALL>" in body and "<RESULT>1</RESULT>" in body
    assert not simulator.controls.person_edit(99999, "CONTEXT", "K", "v")


def test_an_edit_armed_after_a_read_lands_between_that_read_and_the_next_call(
        simulator: Simulator) -> None:
    tid = _template(simulator)
    simulator.controls.edit_after_read(tid, "CONTEXT", "SSH_PUBLIC_KEY", "raced")
    ok, before, *_ = simulator.call("one.template.info", tid, False, False)
    assert ok and "raced" not in before  # the reader got the template without the edit
    assert "raced" in simulator.template_xml(tid)  # ... which oned now holds
    assert [(t, v) for t, v, _ in simulator.controls.raced()] == [(tid, "raced")]
    # One shot: the next read triggers nothing.
    simulator.call("one.template.info", tid, False, False)
    assert len(simulator.controls.raced()) == 1


def test_oned_7_trims_values_and_6_keeps_them(simulator: Simulator,
                                              simulator_74: Simulator) -> None:
    # Template::trim_attributes (release-7.4.0) after every parse; measured on both versions.
    for sim, expected in ((simulator, " a "), (simulator_74, "a")):
        tid = _template(sim)
        _merge(sim, tid, "<TEMPLATE><X> a </X><OS><ROOT>\tvda </ROOT></OS></TEMPLATE>")
        stored = _stored(sim, tid)
        assert stored.findtext("X") == expected
        assert stored.findtext("OS/ROOT") == ("vda" if expected == "a" else "\tvda ")
