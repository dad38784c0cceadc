"""OpenNebula's template language: lexer, parser, XML form, merge and serialisation.

Everything here reproduces oned 6.8.3 (OpenNebula/one, tag ``release-6.8.3``):

* Lexer: ``src/parsers/template_parser.l``. flex picks the *longest* match among the
  rules active in the current start condition, the earliest rule on a tie, and an
  unmatched character is consumed by flex's default rule (ECHO, i.e. silently skipped
  by oned). The quoted-string rule is ``\\"([^"]|\\\\\\")*\\"``, so a quoted value ends at
  the first quote that is not preceded by a backslash; a value with no closing quote
  falls back to the unquoted rule ``[^=#[:blank:]\\n,\\[\\]]+``, which accepts the leading
  quote character (``DESCRIPTION="unterminated`` stores ``"unterminated``). A value
  whose line contains ``]]>`` is the ``CCDATA`` token, which the grammar turns into
  ``YYABORT`` (error ``Parse error.`` with no detail).
* Locations: ``YY_USER_ACTION`` sets ``first_line = yylineno``, ``first_column =
  last_column`` and ``last_column += yyleng`` for every rule, so columns are byte offsets
  counted from 1 across the whole input (never reset at a newline). The string scanner
  (``yy_scan_buffer``) never initialises ``yy_bs_lineno``; the recorded oned reports a
  token on the second line as ``line 1``, so the counter starts at 0.
* Grammar and error messages: ``src/parsers/template_syntax.y`` built with
  ``YYERROR_VERBOSE`` (the pre-generated ``template_syntax.cc`` names the end token
  ``$end``). The LR automaton below is derived from that grammar; each state lists the
  tokens bison reports after "expecting".
* Values: ``unescape()`` in template_syntax.y turns only ``\\"`` into ``"``; vector
  sub-attribute names are upper-cased, stored in a ``std::map`` (sorted, first value of a
  duplicated key wins).
* Attribute names: ``Attribute::Attribute`` in ``include/Attribute.h`` upper-cases the
  name and prefixes ``ONE_`` when it does not start with a letter or ``_`` or when it
  starts with ``XML`` (checked on the name as written).
* Storage order: ``Template::attributes`` is a ``std::multimap`` (``include/Template.h``):
  top-level names sorted byte-wise, repeated names in insertion order. In
  ``replace_mode`` (image templates, ``include/ImageTemplate.h``) ``Template::set``
  removes attributes with the same name first.
* XML form: ``Template::parse_str_or_xml`` uses the XML parser when the first character
  is ``<``; ``Template::rebuild_attributes`` builds a single attribute from an element
  with exactly one text/CDATA child, a vector from an element with element children
  (sub-attribute names kept as written, value = the first child node of each element),
  and ignores anything else.
* ``Template::merge`` (``src/template/Template.cc``): erase every name present in the new
  template, then add the new attributes, skipping empty vectors.
* ``to_xml``: ``SingleAttribute::to_xml`` / ``VectorAttribute::to_xml`` wrap every value
  in ``<![CDATA[...]]>`` with no escaping at all (``one_util::escape_xml`` in
  ``include/NebulaUtil.h``), so a value containing ``]]>`` produces malformed XML.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from hookd.testing import xmltree

# ---------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------


def _c_upper(name: str) -> str:
    """``one_util::toupper``: ASCII-only upper-casing (the C locale ``toupper``)."""
    if name.isascii():
        return name.upper()
    return "".join(c.upper() if c.isascii() else c for c in name)


def normalize_attribute_name(raw: str) -> str:
    """The name an ``Attribute`` stores for ``raw`` (``include/Attribute.h``)."""
    name = _c_upper(raw)
    if raw and (not (raw[0].isascii() and (raw[0].isalpha() or raw[0] == "_"))
                or raw.startswith("XML")):
        name = "ONE_" + name
    return name


class SingleAttribute:
    """``NAME = "value"``."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str, *, normalized: bool = False) -> None:
        self.name = name if normalized else normalize_attribute_name(name)
        self.value = value

    def clone(self) -> SingleAttribute:
        return SingleAttribute(self.name, self.value, normalized=True)

    def to_xml(self, out: list[str]) -> None:
        out.append(f"<{self.name}><![CDATA[{self.value}]]></{self.name}>")

    def __repr__(self) -> str:
        return f"SingleAttribute({self.name!r}, {self.value!r})"


class VectorAttribute:
    """``NAME = [ A = "1", B = "2" ]``; sub-attributes are kept sorted on output."""

    __slots__ = ("name", "value")

    def __init__(
        self, name: str, value: dict[str, str] | None = None, *, normalized: bool = False
    ) -> None:
        self.name = name if normalized else normalize_attribute_name(name)
        self.value: dict[str, str] = dict(value) if value else {}

    def clone(self) -> VectorAttribute:
        return VectorAttribute(self.name, self.value, normalized=True)

    def to_xml(self, out: list[str]) -> None:
        out.append(f"<{self.name}>")
        for key in sorted(self.value):
            if key:
                out.append(f"<{key}><![CDATA[{self.value[key]}]]></{key}>")
        out.append(f"</{self.name}>")

    def __repr__(self) -> str:
        return f"VectorAttribute({self.name!r}, {self.value!r})"


Attribute = SingleAttribute | VectorAttribute


class Template:
    """An attribute multimap with oned's ordering, replace mode and merge semantics."""

    __slots__ = ("_attrs", "_names", "replace_mode")

    def __init__(self, replace_mode: bool = False, attributes: Iterable[Attribute] = ()) -> None:
        self.replace_mode = replace_mode
        self._names: list[str] = []
        self._attrs: list[Attribute] = []
        for attr in attributes:
            self.set(attr)

    # -- multimap primitives ------------------------------------------------------------
    def set(self, attr: Attribute) -> None:
        """``Template::set``: insert after equal names; replace them in replace mode."""
        if self.replace_mode:
            self.erase(attr.name)
        pos = bisect.bisect_right(self._names, attr.name)
        self._names.insert(pos, attr.name)
        self._attrs.insert(pos, attr)

    def erase(self, name: str) -> int:
        """Remove every attribute called ``name``; return how many were removed."""
        lo = bisect.bisect_left(self._names, name)
        hi = bisect.bisect_right(self._names, name)
        del self._names[lo:hi]
        del self._attrs[lo:hi]
        return hi - lo

    def remove(self, attr: Attribute) -> None:
        """Remove one specific attribute object."""
        for i, candidate in enumerate(self._attrs):
            if candidate is attr:
                del self._names[i]
                del self._attrs[i]
                return

    def replace(self, name: str, value: str) -> None:
        """``Template::replace``: drop all ``name`` attributes, add one single attribute."""
        self.erase(name)
        attr = SingleAttribute(name, value, normalized=True)
        pos = bisect.bisect_right(self._names, attr.name)
        self._names.insert(pos, attr.name)
        self._attrs.insert(pos, attr)

    def all(self, name: str) -> list[Attribute]:
        lo = bisect.bisect_left(self._names, name)
        hi = bisect.bisect_right(self._names, name)
        return self._attrs[lo:hi]

    def get(self, name: str) -> str | None:
        """``Template::get(name, string&)``: the first attribute, if it is a single one."""
        found = self.all(name)
        if found and isinstance(found[0], SingleAttribute):
            return found[0].value
        return None

    def vectors(self, name: str) -> list[VectorAttribute]:
        return [a for a in self.all(name) if isinstance(a, VectorAttribute)]

    def __iter__(self) -> Iterator[Attribute]:
        return iter(list(self._attrs))

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.all(name))

    def copy(self) -> Template:
        clone = Template(self.replace_mode)
        clone._names = list(self._names)
        clone._attrs = [a.clone() for a in self._attrs]
        return clone

    def map_values(self, fn: Callable[[str], str]) -> Template:
        """A copy whose every value (single and vector) went through ``fn``."""
        clone = Template(self.replace_mode)
        clone._names = list(self._names)
        out: list[Attribute] = []
        for attr in self._attrs:
            if isinstance(attr, VectorAttribute):
                out.append(VectorAttribute(
                    attr.name, {k: fn(v) for k, v in attr.value.items()}, normalized=True))
            else:
                out.append(SingleAttribute(attr.name, fn(attr.value), normalized=True))
        clone._attrs = out
        return clone

    def values(self) -> Iterator[str]:
        """Every value, single and vector, in storage order."""
        for attr in self._attrs:
            if isinstance(attr, VectorAttribute):
                yield from attr.value.values()
            else:
                yield attr.value

    # -- oned operations ----------------------------------------------------------------
    def merge(self, other: Template) -> None:
        """``Template::merge``: replace by top-level name, skip empty vectors."""
        for name in {a.name for a in other._attrs}:
            self.erase(name)
        for attr in other._attrs:
            if isinstance(attr, VectorAttribute) and not attr.value:
                continue
            self.set(attr.clone())

    def trim_name(self) -> None:
        """``Template::trim_name``: strip trailing blanks of a single NAME attribute."""
        value = self.get("NAME")
        if value:
            self.replace("NAME", value.rstrip(" \f\n\r\t\v"))

    def to_xml(self, root: str = "TEMPLATE") -> str:
        out = [f"<{root}>"]
        for attr in self._attrs:
            attr.to_xml(out)
        out.append(f"</{root}>")
        return "".join(out)

    def normalize_for_storage(self) -> None:
        """Apply what a save + reload through oned's database does to a template.

        oned keeps no objects in memory (``PoolSQL::get`` in ``include/PoolSQL.h``
        re-reads the body every time), so what a client sees is the XML written by
        ``to_xml`` and parsed back by ``Template::from_xml``: an empty vector is written as
        ``<OS></OS>`` and dropped on reload, and XML end-of-line normalisation turns
        ``\\r\\n`` and lone ``\\r`` inside CDATA into ``\\n``.
        """
        keep_names: list[str] = []
        keep: list[Attribute] = []
        for name, attr in zip(self._names, self._attrs, strict=True):
            if isinstance(attr, VectorAttribute):
                if not attr.value:
                    continue
                attr.value = {k: _eol(v) for k, v in attr.value.items()}
            else:
                attr.value = _eol(attr.value)
            keep_names.append(name)
            keep.append(attr)
        self._names = keep_names
        self._attrs = keep

    def xml_is_well_formed(self) -> bool:
        """False when ``to_xml`` output cannot be parsed back (e.g. a value with ``]]>``)."""
        for attr in self._attrs:
            values = attr.value.values() if isinstance(attr, VectorAttribute) else (attr.value,)
            for value in values:
                if "]]>" in value or _INVALID_XML_CHARS.search(value):
                    return False
        return True


_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _eol(value: str) -> str:
    if "\r" not in value:
        return value
    return value.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class TemplateParseError(ValueError):
    """Parsing failed; ``str(error)`` is oned's ``error_msg`` (``Parse error...``)."""


# ---------------------------------------------------------------------------------------
# Lexer (src/parsers/template_parser.l)
# ---------------------------------------------------------------------------------------

EQUAL = "EQUAL"
COMMA = "COMMA"
OBRACKET = "OBRACKET"
CBRACKET = "CBRACKET"
EQUAL_EMPTY = "EQUAL_EMPTY"
CCDATA = "CCDATA"
STRING = "STRING"
VARIABLE = "VARIABLE"
END = "$end"

# INITIAL start condition, in rule order. ``None`` means "matched and skipped".
_INITIAL_RULES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"[ \t]*#[^\n]*\n"), None),
    (re.compile(r"[ \t\n]+"), None),
    (re.compile(r"[A-Za-z0-9_]+"), VARIABLE),
    (re.compile(r"[ \t]*=[ \t]*"), EQUAL),
    (re.compile(r"[ \t]*=[ \t]*\n"), EQUAL_EMPTY),
    (re.compile(r"[ \t\n]*,[ \t\n]*"), COMMA),
    (re.compile(r"[ \t\n]*\][ \t\n]*"), CBRACKET),
)
_VALUE_OBRACKET = re.compile(r"[ \t]*\[[ \t\n]*")
_VALUE_UNQUOTED = re.compile(r"[^=#\t \n,\[\]]+")


@dataclass(frozen=True)
class Token:
    kind: str
    value: str
    line: int
    first_column: int
    last_column: int


def _quoted_length(text: str, pos: int) -> int:
    """Longest match of ``"([^"]|\\")*"`` at ``pos`` (0 if none), as flex computes it."""
    if text[pos] != '"':
        return 0
    best = 0
    k = text.find('"', pos + 1)
    while k != -1:
        best = k + 1 - pos
        if text[k - 1] != "\\" or k - 1 == pos:
            break  # a bare quote: the match cannot extend past it
        k = text.find('"', k + 1)
    return best


def _ccdata_length(text: str, pos: int) -> int:
    """Length of ``.*\\]\\]>.*`` at ``pos``: the rest of the line if it holds ``]]>``."""
    eol = text.find("\n", pos)
    if eol == -1:
        eol = len(text)
    return eol - pos if "]]>" in text[pos:eol] else 0


def _byte_len(chunk: str) -> int:
    return len(chunk) if chunk.isascii() else len(chunk.encode("utf-8"))


def tokenize(text: str) -> Iterator[Token]:
    """Yield the tokens flex would hand to the parser, with bison locations."""
    text = text.split("\x00", 1)[0]  # Template::parse works on a C string
    pos = 0
    line = 0
    first_column = 1
    last_column = 1
    matched_any = False
    in_value = False
    size = len(text)
    while pos < size:
        best_len = 0
        best_kind: str | None = None
        if in_value:
            candidates: list[tuple[int, str]] = []
            m = _VALUE_OBRACKET.match(text, pos)
            candidates.append((m.end() - pos if m else 0, OBRACKET))
            candidates.append((_ccdata_length(text, pos), CCDATA))
            candidates.append((_quoted_length(text, pos), "QSTRING"))
            m = _VALUE_UNQUOTED.match(text, pos)
            candidates.append((m.end() - pos if m else 0, STRING))
            for length, kind in candidates:
                if length > best_len:
                    best_len, best_kind = length, kind
        else:
            for pattern, rule_kind in _INITIAL_RULES:
                m = pattern.match(text, pos)
                if m and m.end() - pos > best_len:
                    best_len, best_kind = m.end() - pos, rule_kind or "SKIP"
        if best_kind is None:
            best_len, best_kind = 1, "ECHO"  # flex default rule
        chunk = text[pos : pos + best_len]
        pos += best_len
        matched_any = True
        line += chunk.count("\n")
        first_column = last_column
        last_column += _byte_len(chunk)
        if best_kind in ("SKIP", "ECHO"):
            continue
        if best_kind == "QSTRING":
            yield Token(STRING, chunk[1:-1], line, first_column, last_column)
            in_value = False
        elif best_kind in (STRING, VARIABLE):
            yield Token(best_kind, chunk, line, first_column, last_column)
            in_value = False
        else:
            if best_kind == EQUAL:
                in_value = True
            elif best_kind in (OBRACKET, CCDATA):
                in_value = False
            yield Token(best_kind, "", line, first_column, last_column)
    # flex runs no YY_USER_ACTION at end of input: $end keeps the location of the last
    # rule matched (bison's initial location {1,1,1,1} when nothing was matched).
    if matched_any:
        yield Token(END, "", line, first_column, last_column)
    else:
        yield Token(END, "", 1, 1, 1)


# ---------------------------------------------------------------------------------------
# Parser (src/parsers/template_syntax.y): an LR automaton derived from the grammar
# ---------------------------------------------------------------------------------------

_TOKEN_ORDER = (END, EQUAL, COMMA, OBRACKET, CBRACKET, EQUAL_EMPTY, CCDATA, STRING, VARIABLE)

_SHIFT: dict[int, dict[str, int]] = {
    0: {VARIABLE: 1},
    1: {EQUAL: 5, EQUAL_EMPTY: 6},
    2: {},  # accept on $end
    3: {VARIABLE: 1},
    5: {OBRACKET: 9, CCDATA: 10, STRING: 11},
    9: {CBRACKET: 12, VARIABLE: 13},
    13: {EQUAL: 15},
    14: {COMMA: 16, CBRACKET: 17},
    15: {STRING: 18},
    16: {VARIABLE: 19},
    19: {EQUAL: 20},
    20: {STRING: 21},
}
# state -> (rule name, symbols popped, non-terminal produced)
_REDUCE: dict[int, tuple[str, int, str]] = {
    0: ("empty", 0, "template_file"),
    3: ("file", 1, "template_file"),
    4: ("first", 1, "template"),
    6: ("equal_empty", 2, "attribute"),
    8: ("more", 2, "template"),
    10: ("ccdata", 3, "attribute"),
    11: ("single", 3, "attribute"),
    12: ("empty_vector", 4, "attribute"),
    17: ("vector", 5, "attribute"),
    18: ("first_pair", 3, "array_val"),
    21: ("next_pair", 5, "array_val"),
}
_GOTO: dict[tuple[int, str], int] = {
    (0, "template_file"): 2,
    (0, "template"): 3,
    (0, "attribute"): 4,
    (3, "attribute"): 8,
    (9, "array_val"): 14,
}
_CONSISTENT = {4, 6, 8, 10, 11, 12, 17, 18, 21}  # reduce without reading a lookahead


def _unescape(value: str) -> str:
    return value.replace('\\"', '"')


def _syntax_error(state: int, token: Token) -> TemplateParseError:
    expected = [t for t in _TOKEN_ORDER if t in _SHIFT.get(state, {})]
    if state == 2:
        expected = [END]
    message = f"syntax error, unexpected {token.kind}"
    if 0 < len(expected) <= 4:
        message += ", expecting " + " or ".join(expected)
    return TemplateParseError(
        f"Parse error: {message} at line {token.line}, "
        f"columns {token.first_column}:{token.last_column}"
    )


def _token(value: object) -> Token:
    if not isinstance(value, Token):
        raise TypeError("template parser stack out of sync")
    return value


def _pairs(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("template parser stack out of sync")
    return value


def parse_attribute_syntax(text: str) -> list[Attribute]:
    """Parse ``KEY = "value"`` text into attributes, in reduction order."""
    tokens = tokenize(text)
    states: list[int] = [0]
    values: list[object] = []
    result: list[Attribute] = []
    lookahead: Token | None = None

    while True:
        state = states[-1]
        if state not in _CONSISTENT:
            if lookahead is None:
                lookahead = next(tokens)
            if state == 2 and lookahead.kind == END:
                return result
            target = _SHIFT.get(state, {}).get(lookahead.kind)
            if target is not None:
                states.append(target)
                values.append(lookahead)
                lookahead = None
                continue
            if state not in _REDUCE:
                raise _syntax_error(state, lookahead)
        rule, size, produced = _REDUCE[state]
        popped = values[len(values) - size :] if size else []
        del states[len(states) - size :]
        del values[len(values) - size :]
        semantic: object = None
        if rule == "single":
            result.append(SingleAttribute(_token(popped[0]).value,
                                          _unescape(_token(popped[2]).value)))
        elif rule == "equal_empty":
            result.append(SingleAttribute(_token(popped[0]).value, ""))
        elif rule == "empty_vector":
            result.append(VectorAttribute(_token(popped[0]).value))
        elif rule == "vector":
            result.append(VectorAttribute(_token(popped[0]).value, _pairs(popped[3])))
        elif rule == "ccdata":
            raise TemplateParseError("Parse error.")  # YYABORT: no error message
        elif rule == "first_pair":
            semantic = {_c_upper(_token(popped[0]).value): _unescape(_token(popped[2]).value)}
        elif rule == "next_pair":
            pairs = _pairs(popped[0])
            pairs.setdefault(_c_upper(_token(popped[2]).value), _unescape(_token(popped[4]).value))
            semantic = pairs
        states.append(_GOTO[(states[-1], produced)])
        values.append(semantic)


# ---------------------------------------------------------------------------------------
# XML form (Template::from_xml / rebuild_attributes)
# ---------------------------------------------------------------------------------------


def parse_xml_form(text: str) -> list[Attribute]:
    """Attributes of a ``<TEMPLATE>...</TEMPLATE>`` document (any root element name)."""
    try:
        root = xmltree.parse(text)
    except xmltree.XmlSyntaxError as exc:
        raise TemplateParseError("Parse error: XML Template malformed.") from exc
    result: list[Attribute] = []
    for node in root.children:
        if not isinstance(node, xmltree.Element):
            continue
        kids = node.children
        if len(kids) == 1 and isinstance(kids[0], xmltree.Text | xmltree.CData):
            result.append(SingleAttribute(node.name, kids[0].data))
            continue
        first_element = next(
            (i for i, k in enumerate(kids) if isinstance(k, xmltree.Element)), None
        )
        if first_element is None:
            continue
        vector = VectorAttribute(node.name)
        for child in kids[first_element:]:
            if isinstance(child, xmltree.Element) and child.children:
                grandchild = child.children[0]
                if isinstance(grandchild, xmltree.Text | xmltree.CData):
                    vector.value[child.name] = grandchild.data
        result.append(vector)
    return result


def parse_template(text: str, *, replace_mode: bool = False, trim: bool = False) -> Template:
    """``Template::parse_str_or_xml``: attribute syntax or XML form, then ``trim_name``.

    ``trim``: oned 7.x strips leading and trailing white space from every value it parses
    (``Template::trim_attributes`` in src/template/Template.cc, release-7.4.0; 6.8.3 keeps
    it: checked on both, ``<X> a </X>`` is ``a`` on 7.4.0 and `` a `` on 6.8.3).

    Raises :class:`TemplateParseError` whose message is oned's (``Parse error: ...``).
    """
    attrs = parse_xml_form(text) if text[:1] == "<" else parse_attribute_syntax(text)
    if trim:
        for attr in attrs:
            if isinstance(attr, VectorAttribute):
                attr.value = {k: v.strip(_SPACE) for k, v in attr.value.items()}
            else:
                attr.value = attr.value.strip(_SPACE)
    template = Template(replace_mode, attrs)
    template.trim_name()
    return template


_SPACE = " \t\n\v\f\r"  # C isspace in the "C" locale


def quote_value(value: str) -> str:
    """Write ``value`` as a quoted attribute-syntax value (only ``"`` is escaped)."""
    return '"' + value.replace('"', '\\"') + '"'
