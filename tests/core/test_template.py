"""hookd's template model and the XML form it writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from hookd.template import Template, TemplateValueError, Vector, parse_template_xml, to_xml

HARD = ['x\\', 'x\\\\', 'say "hi"', "a]]>b<c&d", "line1\nline2", "$VAR ${X} $FILE[IMAGE_ID=3]",
        "t\tü日", "", "  spaced  "]


@pytest.mark.parametrize("value", HARD)
def test_every_hard_value_round_trips(value: str) -> None:
    xml = to_xml([("A", value), ("OS", Vector.of({"KERNEL_CMD": value}))])
    parsed = parse_template_xml(xml)
    assert parsed.get("A") == value
    os_vec = parsed.vector("OS")
    assert os_vec is not None and os_vec.get("KERNEL_CMD") == value


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"],
                                      blacklist_characters="\x00\ufffe\uffff"), max_size=200))
def test_any_xml_expressible_text_round_trips(value: str) -> None:
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        with pytest.raises(TemplateValueError):
            to_xml([("A", value)])
        return
    # lxml writes a carriage return as &#13;, so even that survives the parse.
    assert parse_template_xml(to_xml([("A", value)])).get("A") == value


def test_control_characters_are_refused_not_mangled() -> None:
    with pytest.raises(TemplateValueError, match="control characters"):
        to_xml([("A", "bell\x07")])


def test_empty_vector_is_refused() -> None:
    with pytest.raises(TemplateValueError, match="empty DISK vector"):
        to_xml([("DISK", Vector())])


def test_bad_names_are_refused() -> None:
    with pytest.raises(TemplateValueError):
        to_xml([("A B", "x")])
    with pytest.raises(TemplateValueError):
        to_xml([("<X>", "x")])


def test_repeated_vectors_keep_their_order() -> None:
    xml = to_xml([("DISK", Vector.of({"IMAGE_ID": "1"})), ("DISK", Vector.of({"IMAGE_ID": "2"}))])
    tmpl = parse_template_xml(xml)
    assert [v.get("IMAGE_ID") for v in tmpl.vectors("DISK")] == ["1", "2"]


def test_from_element_reads_cdata_as_oned_sends_it() -> None:
    element = etree.fromstring(
        "<TEMPLATE><CONTEXT><NETWORK><![CDATA[YES]]></NETWORK></CONTEXT>"
        "<PATH><![CDATA[docker://nginx?size=1&format=raw]]></PATH></TEMPLATE>")
    tmpl = Template.from_element(element)
    assert tmpl.get("PATH") == "docker://nginx?size=1&format=raw"
    ctx = tmpl.vector("CONTEXT")
    assert ctx is not None and ctx.as_dict() == {"NETWORK": "YES"}


def test_replaced_is_oned_merge() -> None:
    tmpl = Template.of(("A", "1"), ("DISK", Vector.of({"X": "1"})), ("B", "2"),
                       ("DISK", Vector.of({"X": "2"})))
    merged = tmpl.replaced("DISK", [Vector.of({"X": "3"})])
    assert merged.names() == ["A", "DISK", "B"]
    assert [v.get("X") for v in merged.vectors("DISK")] == ["3"]
    assert tmpl.replaced("NEW", ["v"]).get("NEW") == "v"


def test_vector_set_and_remove() -> None:
    vec = Vector.of({"a": "1", "B": "2"})
    assert vec.as_dict() == {"A": "1", "B": "2"}
    assert vec.set("A", None).as_dict() == {"B": "2"}
    assert vec.set("c", "3").items[-1] == ("C", "3")
