"""hookd's template model and the XML form it writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from handlers.template import REMOVE, Template, TemplateValueError, Vector
from hookd import documents
from hookd.documents import to_xml
from hookd.xmlsafe import parse

HARD = ['x\\', 'x\\\\', 'say "hi"', "a]]>b<c&d", "line1\nline2", "$VAR ${X} $FILE[IMAGE_ID=3]",
        "t\tü日", "", "  spaced  "]


def parse_template_xml(text: str | bytes) -> Template:
    """A standalone ``<TEMPLATE>...</TEMPLATE>`` document, as hookd reads oned's."""
    return documents.template(parse(text))


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
    tmpl = documents.template(element)
    assert tmpl.get("PATH") == "docker://nginx?size=1&format=raw"
    ctx = tmpl.vector("CONTEXT")
    assert ctx is not None and ctx.as_dict() == {"NETWORK": "YES"}


def test_replaced_is_oned_merge() -> None:
    tmpl = Template.of(("A", "1"), ("DISK", Vector.of({"X": "1"})), ("B", "2"),
                       ("DISK", Vector.of({"X": "2"})))
    merged = tmpl.replaced("DISK", [Vector.of({"X": "3"})])
    assert [a.name for a in merged] == ["A", "DISK", "B"]
    assert [v.get("X") for v in merged.vectors("DISK")] == ["3"]
    assert tmpl.replaced("NEW", ["v"]).get("NEW") == "v"


def test_vector_set_and_remove() -> None:
    vec = Vector.of({"A": "1", "B": "2"})
    assert vec.as_dict() == {"A": "1", "B": "2"}
    assert vec.set("A", None).as_dict() == {"B": "2"}
    assert vec.set("C", "3").items[-1] == ("C", "3")


def test_vector_names_keep_their_case_as_oned_stores_them() -> None:
    # oned keeps a vector sub-attribute's name as written in the XML form and looks it up
    # by its exact name (Template::vector_xml_att, VectorAttribute::vector_value): a
    # lowercase name is another attribute, and a rewrite must not rename it.
    tmpl = parse_template_xml("<TEMPLATE><CONTEXT><ssh_public_key>k</ssh_public_key>"
                              "<NETWORK>YES</NETWORK></CONTEXT></TEMPLATE>")
    context = tmpl.vector("CONTEXT")
    assert context is not None
    assert context.items == (("ssh_public_key", "k"), ("NETWORK", "YES"))
    assert context.get("SSH_PUBLIC_KEY") is None
    written = to_xml([("CONTEXT", context.set("START_SCRIPT_BASE64", "eA=="))])
    assert "<ssh_public_key>k</ssh_public_key>" in written


def test_empty_values_are_written_so_that_oned_stores_them() -> None:
    # oned ignores an element without text in a merge (the old value stays) but stores an
    # empty CDATA section as the empty string (Template::single_xml_att).
    written = to_xml([("HOOKD_REASON", ""), ("OS", Vector.of({"ROOT": "", "X": "1"}))])
    assert written == ("<TEMPLATE><HOOKD_REASON><![CDATA[]]></HOOKD_REASON><OS>"
                       "<ROOT><![CDATA[]]></ROOT><X>1</X></OS></TEMPLATE>")
    assert parse_template_xml(written).get("HOOKD_REASON") == ""


def test_remove_is_written_as_an_empty_vector() -> None:
    # Template::merge erases every attribute named like one it receives, then skips empty
    # vectors: an element whose only children are empty elements removes the attribute.
    assert to_xml([("SCHED_REQUIREMENTS", REMOVE)]) == (
        "<TEMPLATE><SCHED_REQUIREMENTS><HOOKD_REMOVE/></SCHED_REQUIREMENTS></TEMPLATE>")
