"""The template language as oned 6.8.3's flex/bison parser handles it."""

from __future__ import annotations

import pytest

from hookd.testing.template_lang import (
    SingleAttribute,
    Template,
    TemplateParseError,
    VectorAttribute,
    normalize_attribute_name,
    parse_template,
)


def single(t: Template, name: str) -> str:
    value = t.get(name)
    assert value is not None, name
    return value


def test_recorded_parse_errors_are_reproduced_exactly() -> None:
    # error.template.update.malformed / error.image.update.malformed (recorded)
    with pytest.raises(TemplateParseError) as first:
        parse_template('OS=[KERNEL_CMD="console=ttyS0"\nCONTEXT=[NETWORK="YES"]\n')
    assert str(first.value) == (
        "Parse error: syntax error, unexpected VARIABLE, expecting COMMA or CBRACKET "
        "at line 1, columns 32:39"
    )
    with pytest.raises(TemplateParseError) as second:
        parse_template('OS=[KERNEL_CMD="a"\nDESCRIPTION="b"\n')
    assert str(second.value) == (
        "Parse error: syntax error, unexpected VARIABLE, expecting COMMA or CBRACKET "
        "at line 1, columns 20:31"
    )


def test_other_error_shapes_follow_the_grammar() -> None:
    with pytest.raises(TemplateParseError, match=r"unexpected COMMA, expecting \$end"):
        parse_template('A="x",\n')
    with pytest.raises(TemplateParseError,
                       match=r"unexpected \$end, expecting EQUAL or EQUAL_EMPTY"):
        parse_template("A = hello world\n")
    # In the VALUE start condition "]" and the newline match no rule (flex ECHOes them).
    with pytest.raises(TemplateParseError) as exc:
        parse_template("A = ]\n")
    assert str(exc.value) == (
        "Parse error: syntax error, unexpected $end, expecting OBRACKET or CCDATA or STRING "
        "at line 1, columns 6:7"
    )


def test_unterminated_quote_keeps_the_leading_quote() -> None:
    t = parse_template('DESCRIPTION="unterminated\n')
    assert single(t, "DESCRIPTION") == '"unterminated'


def test_only_backslash_quote_is_an_escape() -> None:
    t = parse_template('A="x\\y"\nC="say \\"hi\\""\nD="line1\nline2"\n')
    assert single(t, "A") == "x\\y"
    assert single(t, "C") == 'say "hi"'
    assert single(t, "D") == "line1\nline2"
    assert single(parse_template('B="x\\\\"')) == "x\\\\" if False else True
    assert single(parse_template('B="x\\\\"'), "B") == "x\\\\"


def test_quoted_value_extends_over_escaped_quotes_to_the_next_bare_quote() -> None:
    # flex takes the longest match: "x\"<newline>B=" is one value, then y is a name
    # without "=" -- the template is rejected, so "x\" cannot be written this way.
    with pytest.raises(TemplateParseError) as exc:
        parse_template('A="x\\"\nB="y"')
    assert str(exc.value) == (
        "Parse error: syntax error, unexpected $end, expecting EQUAL or EQUAL_EMPTY "
        "at line 1, columns 12:13"
    )
    assert single(parse_template('A="x\\"'), "A") == "x\\"


def test_values_are_kept_literally() -> None:
    t = parse_template('V=[D="a]b", E="c,d"]\nE="$VAR ${X}"\nG="t\tü日"\nU = plain-value\n')
    (vector,) = t.vectors("V")
    assert vector.value == {"D": "a]b", "E": "c,d"}
    assert single(t, "E") == "$VAR ${X}"
    assert single(t, "G") == "t\tü日"
    assert single(t, "U") == "plain-value"


def test_value_with_cdata_terminator_aborts_the_parse() -> None:
    with pytest.raises(TemplateParseError) as exc:
        parse_template('X="a]]>b"\n')
    assert str(exc.value) == "Parse error."


def test_dockerhub_stray_quote_is_swallowed() -> None:
    text = (
        'CPU = "1"\nMEMORY = "768"\nGRAPHICS = [\n    LISTEN  ="0.0.0.0",\n    TYPE  ="vnc"\n]\n'
        'CONTEXT = [\n    NETWORK  ="YES",\n    SSH_PUBLIC_KEY  ="$USER[SSH_PUBLIC_KEY]",\n'
        '    SET_HOSTNAME  ="$NAME"\n]\nOS = [\n    KERNEL_CMD="console=ttyS0 reboot=k panic=1"\n'
        ']"\n\n                    NAME = "nginx"\n                    DISK = [ IMAGE_ID = "3" ]\n'
    )
    t = parse_template(text)
    assert single(t, "NAME") == "nginx"
    assert t.vectors("OS")[0].value == {"KERNEL_CMD": "console=ttyS0 reboot=k panic=1"}
    assert t.vectors("DISK")[0].value == {"IMAGE_ID": "3"}
    assert t.vectors("CONTEXT")[0].value["SSH_PUBLIC_KEY"] == "$USER[SSH_PUBLIC_KEY]"


def test_names_comments_and_empty_values() -> None:
    t = parse_template("# comment\na = 1\nEMPTY =\nxmlfoo=1\nXMLBAR=2\n1abc=3\nv=[k=x, K=y]\n")
    assert single(t, "A") == "1"
    assert single(t, "EMPTY") == ""
    assert single(t, "XMLFOO") == "1"  # the XML check is case-sensitive on the raw name
    assert single(t, "ONE_XMLBAR") == "2"
    assert single(t, "ONE_1ABC") == "3"
    assert t.vectors("V")[0].value == {"K": "x"}  # std::map::insert: first value wins
    assert normalize_attribute_name("kernel_ds") == "KERNEL_DS"


def test_attributes_come_out_sorted_with_repeats_in_order() -> None:
    t = parse_template('Z="1"\nDISK=[IMAGE_ID="2"]\nA="0"\nDISK=[IMAGE_ID="1"]\nOS=[b="2",a="1"]\n')
    assert t.to_xml() == (
        "<TEMPLATE><A><![CDATA[0]]></A><DISK><IMAGE_ID><![CDATA[2]]></IMAGE_ID></DISK>"
        "<DISK><IMAGE_ID><![CDATA[1]]></IMAGE_ID></DISK><OS><A><![CDATA[1]]></A>"
        "<B><![CDATA[2]]></B></OS><Z><![CDATA[1]]></Z></TEMPLATE>"
    )


def test_replace_mode_keeps_the_last_repeat() -> None:
    t = parse_template('A="1"\nA="2"\n', replace_mode=True)
    assert [a.value for a in t.all("A") if isinstance(a, SingleAttribute)] == ["2"]


def test_name_is_trimmed() -> None:
    assert single(parse_template('NAME="web  \t"\n'), "NAME") == "web"


def test_xml_form_decodes_entities_and_cdata() -> None:
    t = parse_template(
        "<TEMPLATE><B><![CDATA[x\\]]></B><Q>say \"hi\" &amp; &lt;b&gt;</Q>"
        "<C>]]&gt;</C><U>ü&#10;日</U><OS><root>vda</root><X>1</X></OS><EMPTY/>"
        "<MIXED>a<![CDATA[b]]></MIXED></TEMPLATE>"
    )
    assert single(t, "B") == "x\\"
    assert single(t, "Q") == 'say "hi" & <b>'
    assert single(t, "C") == "]]>"
    assert single(t, "U") == "ü\n日"
    # vector sub-attribute names are kept as written in the XML form
    assert t.vectors("OS")[0].value == {"root": "vda", "X": "1"}
    assert "EMPTY" not in t and "MIXED" not in t


def test_malformed_xml_form() -> None:
    with pytest.raises(TemplateParseError) as exc:
        parse_template("<TEMPLATE><A>1</B></TEMPLATE>")
    assert str(exc.value) == "Parse error: XML Template malformed."


def test_merge_replaces_whole_top_level_names() -> None:
    base = parse_template(
        'OS=[KERNEL_DS="k", ROOT="vda"]\nDISK=[IMAGE_ID="1"]\nDISK=[IMAGE_ID="2"]\nCPU="1"\n'
    )
    base.merge(parse_template('OS=[KERNEL_CMD="quiet"]\nDISK=[IMAGE_ID="9"]\nEMPTYV=[]\n'))
    assert base.vectors("OS")[0].value == {"KERNEL_CMD": "quiet"}
    assert [d.value["IMAGE_ID"] for d in base.vectors("DISK")] == ["9"]
    assert single(base, "CPU") == "1"
    assert "EMPTYV" not in base


def test_to_xml_does_not_escape_cdata_terminator() -> None:
    t = Template(False, [SingleAttribute("Q", "a]]>b")])
    assert t.to_xml() == "<TEMPLATE><Q><![CDATA[a]]>b]]></Q></TEMPLATE>"
    assert not t.xml_is_well_formed()
    assert Template(False, [VectorAttribute("V", {"A": "ok"})]).xml_is_well_formed()
