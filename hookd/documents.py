"""oned's XML documents read into the core's values, and the core's edits written as XML.

Reading: each function takes an element of a document parsed by :mod:`hookd.xmlsafe` (an
``*.info`` answer or one object of a pool page) and returns a plain value of
:mod:`handlers.facts`. Element names and enum values follow OpenNebula's own serialisation
(``Image::to_xml`` in src/image/Image.cc, ``include/Image.h``, ``include/Datastore.h``,
``include/RaftManager.h``, ``MarketPlaceApp::to_xml`` in src/market/MarketPlaceApp.cc). A
document that lacks an element hookd relies on raises :class:`MalformedObject` (permanent:
the object is not what oned would send).

Writing: hookd writes templates only through :func:`to_xml`, in oned's XML form, never in the
``KEY="value"`` attribute syntax: in that syntax only ``\\"`` is an escape, so a value that
ends in a backslash cannot be written at all (recorded on oned 6.8.3:
``one.template.update`` and ``one.image.update`` accept the XML form in merge and replace
mode and store every value exactly).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from handlers.classify import DOCKER_SCHEMES, LXD_SCHEMES
from handlers.errors import PermanentError
from handlers.facts import (
    AppFacts,
    DatastoreFacts,
    HostFacts,
    ImageFacts,
    MarketFacts,
    VmTemplateFacts,
)
from handlers.template import (
    Attribute,
    Removal,
    Template,
    TemplateValueError,
    Vector,
    WriteValue,
)

# include/RaftManager.h: State
RAFT_STATES = {0: "SOLO", 1: "CANDIDATE", 2: "FOLLOWER", 3: "LEADER"}


class MalformedObject(PermanentError):
    """An XML document does not have the shape oned gives it."""


# -- reading ------------------------------------------------------------------------------
class _Children:
    """An element's direct children by tag (the first of each), for objects read by the
    hundred thousand in a sweep: one pass instead of a linear ``find`` per field."""

    __slots__ = ("_kids", "tag")

    def __init__(self, el: etree._Element) -> None:
        self.tag = el.tag
        # Read backwards so the first child of each tag is the one kept. (Comments and
        # processing instructions, whose tag is not a string, are keys no name matches.)
        self._kids: dict[object, etree._Element] = {child.tag: child for child in reversed(el)}

    def find(self, name: str) -> etree._Element | None:
        return self._kids.get(name)


def _text(el: etree._Element | _Children, name: str, default: str | None = None) -> str:
    child = el.find(name)
    if child is None:
        if default is None:
            raise MalformedObject(f"<{el.tag}> has no <{name}>")
        return default
    return child.text or ""


def _int(el: etree._Element | _Children, name: str, default: int | None = None) -> int:
    child = el.find(name)
    if child is None or child.text is None:
        if default is None:
            raise MalformedObject(f"<{el.tag}> has no numeric <{name}>")
        return default
    try:
        return int(child.text)  # int() ignores surrounding whitespace itself
    except ValueError:
        raise MalformedObject(f"<{el.tag}>/<{name}> is not an integer") from None


def _ids(el: etree._Element, name: str) -> tuple[int, ...]:
    parent = el.find(name)
    if parent is None:
        return ()
    out: list[int] = []
    for child in parent.findall("ID"):
        try:
            out.append(int((child.text or "").strip()))
        except ValueError:
            raise MalformedObject(f"<{el.tag}>/<{name}> holds a non-numeric ID") from None
    return tuple(out)


def _expect(el: etree._Element, tag: str) -> None:
    if el.tag != tag:
        raise MalformedObject(f"expected <{tag}>, got <{el.tag}>")


def template(element: etree._Element | None) -> Template:
    """oned's ``<TEMPLATE>`` (or ``<USER_TEMPLATE>``) element. Top-level names are upper
    case in oned; vector sub-attribute names are kept exactly as stored."""
    if element is None:
        return Template()
    attrs: list[Attribute] = []
    for child in element:
        tag: object = child.tag
        if not isinstance(tag, str):  # a comment, processing instruction or entity reference
            continue
        if len(child):
            items = tuple((sub.tag, sub.text or "") for sub in child if isinstance(sub.tag, str))
            attrs.append(Attribute(tag.upper(), Vector(items)))
        else:
            attrs.append(Attribute(tag.upper(), child.text or ""))
    return Template(tuple(attrs))


def image(el: etree._Element) -> ImageFacts:
    _expect(el, "IMAGE")
    f = _Children(el)
    return ImageFacts(
        id=_int(f, "ID"),
        name=_text(f, "NAME"),
        uid=_int(f, "UID"),
        uname=_text(f, "UNAME", ""),
        type=_int(f, "TYPE"),
        state=_int(f, "STATE"),
        datastore_id=_int(f, "DATASTORE_ID"),
        datastore=_text(f, "DATASTORE", ""),
        path=_text(f, "PATH", ""),
        source=_text(f, "SOURCE", ""),
        template=template(f.find("TEMPLATE")),
    )


def plainly_not_ours(el: etree._Element, *, opt_attribute: str,
                     scope: frozenset[int], names: frozenset[str]) -> bool:
    """Whether a pool's ``<IMAGE>`` is, without reading it in full, an image hookd has no
    business with and nothing to take back from: in scope, no FROM_APP, no opt attribute,
    no HOOKD_* status, a PATH of no container scheme, not named like a configured kernel.
    A sweep reads nine images in ten of a cloud this way; anything else is read in full
    and decided by :func:`handlers.planner.start` (tests/core/test_plainly_not_ours.py
    checks both agree)."""
    f = _Children(el)
    _int(f, "ID")  # a malformed object fails here as it does when read in full
    name, datastore, path = (_text(f, tag, "") for tag in ("NAME", "DATASTORE_ID", "PATH"))
    if name in names:
        return False
    if scope and (not datastore.strip().isdigit() or int(datastore) not in scope):
        return False
    if path.strip().lower().startswith((*DOCKER_SCHEMES, *LXD_SCHEMES)):
        return False
    tmpl = f.find("TEMPLATE")
    for child in () if tmpl is None else tmpl:
        tag = child.tag
        if isinstance(tag, str):
            attribute = tag.upper()
            if attribute in ("FROM_APP", opt_attribute) or attribute.startswith("HOOKD_"):
                return False
    return True


def vm_template(el: etree._Element) -> VmTemplateFacts:
    _expect(el, "VMTEMPLATE")
    f = _Children(el)
    return VmTemplateFacts(
        id=_int(f, "ID"),
        name=_text(f, "NAME"),
        uid=_int(f, "UID"),
        uname=_text(f, "UNAME", ""),
        template=template(f.find("TEMPLATE")),
    )


def datastore(el: etree._Element) -> DatastoreFacts:
    _expect(el, "DATASTORE")
    return DatastoreFacts(
        id=_int(el, "ID"),
        name=_text(el, "NAME"),
        type=_int(el, "TYPE"),
        cluster_ids=_ids(el, "CLUSTERS"),
    )


def host(el: etree._Element) -> HostFacts:
    _expect(el, "HOST")
    return HostFacts(
        id=_int(el, "ID"),
        name=_text(el, "NAME"),
        vm_mad=_text(el, "VM_MAD", "").strip().lower(),
        cluster_id=_int(el, "CLUSTER_ID", -1),
    )


def market(el: etree._Element) -> MarketFacts:
    _expect(el, "MARKETPLACE")
    return MarketFacts(
        id=_int(el, "ID"),
        name=_text(el, "NAME"),
        market_mad=_text(el, "MARKET_MAD", "").strip().lower(),
    )


def app(el: etree._Element) -> AppFacts:
    _expect(el, "MARKETPLACEAPP")
    encoded = el.findtext("TEMPLATE/VMTEMPLATE64")
    return AppFacts(
        id=_int(el, "ID"),
        name=_text(el, "NAME"),
        market_id=_int(el, "MARKETPLACE_ID"),
        source=_text(el, "SOURCE", ""),
        vm_template=_vm_template64(encoded) if encoded else None,
    )


_MAX_APP_TEMPLATE = 64 * 1024


def _vm_template64(encoded: str) -> Template | None:
    """An app's VMTEMPLATE64: base64 of the attribute syntax the export sends to
    ``one.template.allocate``. None when it is not what a marketplace driver writes."""
    try:
        text = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(text) > _MAX_APP_TEMPLATE:
        return None
    try:
        return parse_attributes(text.decode("utf-8"))
    except (UnicodeDecodeError, TemplateValueError):
        return None


# A marketplace driver's template: NAME = "value" (only \" escapes), NAME = value, and
# NAME = [ KEY = "value", ... ] over lines; # comments. Names are upper-cased and values
# trimmed, as oned stores them (src/parsers/template_syntax.y, Template::trim_attributes).
_ATTR_TOKEN = re.compile(r"""
    \s*(?:
      (?P<comment>\#[^\n]*)
    | (?P<name>[A-Za-z_][A-Za-z0-9_\-.]*)\s*=\s*
    | (?P<open>\[)
    | (?P<close>\])
    | (?P<comma>,)
    | "(?P<quoted>(?:[^"\\]|\\.)*)"
    | (?P<bare>[^=\#\s,\[\]"]+)
    | (?P<stray>")
    )""", re.VERBOSE | re.DOTALL)


def parse_attributes(text: str) -> Template:
    """The attribute syntax of a marketplace template, as a :class:`Template` (raises
    :class:`TemplateValueError` on anything else)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _ATTR_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise TemplateValueError(f"cannot read the template at {text[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        # A quote that opens nothing (6.x Docker Hub and LXD templates end in ']"') is
        # skipped, as oned's lexer skips what no rule matches (src/parsers/template_parser.l).
        if kind not in ("comment", "stray"):
            value = match.group(kind)
            tokens.append((kind, value.replace('\\"', '"') if kind == "quoted" else value))
    attrs: list[Attribute] = []
    i = 0
    while i < len(tokens):
        kind, name = tokens[i]
        if kind != "name" or i + 1 >= len(tokens):
            raise TemplateValueError("expected NAME = value in the template")
        kind, value = tokens[i + 1]
        i += 2
        if kind in ("quoted", "bare"):
            attrs.append(Attribute(name.upper(), value.strip()))
            continue
        if kind != "open":
            raise TemplateValueError(f"expected a value for {name}")
        items: dict[str, str] = {}
        while i < len(tokens) and tokens[i][0] != "close":
            if tokens[i][0] == "comma":
                i += 1
                continue
            if (tokens[i][0] != "name" or i + 1 >= len(tokens)
                    or tokens[i + 1][0] not in ("quoted", "bare")):
                raise TemplateValueError(f"cannot read the vector {name}")
            items.setdefault(tokens[i][1].upper(), tokens[i + 1][1].strip())
            i += 2
        if i >= len(tokens):
            raise TemplateValueError(f"the vector {name} is not closed")
        i += 1
        attrs.append(Attribute(name.upper(), Vector(tuple(sorted(items.items())))))
    return Template(tuple(attrs))


@dataclass(frozen=True, slots=True)
class TemplateDisks:
    """What a sweep reads of every VM template: its id, owner, DISK vectors and the image
    hookd's record names. Full facts (:func:`vm_template`) are read only for templates that
    use an image hookd manages (a tenth of a 100,000-template pool in the ``scale``
    benchmark)."""

    id: int
    uid: int
    disks: tuple[Vector, ...]
    recorded_image: int | None


def template_disks(el: etree._Element) -> TemplateDisks:
    """The same checks as :func:`vm_template`; DISK vectors read as :func:`template` reads
    them (names kept as oned stored them)."""
    _expect(el, "VMTEMPLATE")
    f = _Children(el)
    _text(f, "NAME")
    element = f.find("TEMPLATE")
    disks: list[Vector] = []
    recorded: int | None = None
    for child in () if element is None else element:
        tag = child.tag
        if not isinstance(tag, str) or not len(child):
            continue
        name = tag.upper()
        if name == "DISK":
            disks.append(Vector(tuple((sub.tag, sub.text or "")
                                      for sub in child if isinstance(sub.tag, str))))
        elif name == "HOOKD":
            text = (child.findtext("IMAGE_ID") or "").strip()
            recorded = int(text) if text.isdigit() else None
    return TemplateDisks(id=_int(f, "ID"), uid=_int(f, "UID"), disks=tuple(disks),
                         recorded_image=recorded)


@dataclass(frozen=True, slots=True)
class RaftFacts:
    """This oned's Raft role (``one.zone.raftstatus``)."""

    server_id: int
    state: int

    @property
    def state_name(self) -> str:
        return RAFT_STATES.get(self.state, str(self.state))

    @property
    def ha_enabled(self) -> bool:
        # A solo oned reports SERVER_ID -1 and STATE 0 (recorded on 6.8.3).
        return not (self.server_id < 0 and self.state == 0)

    @property
    def may_act(self) -> bool:
        """Only the leader writes; with HA off the single oned is in charge."""
        return not self.ha_enabled or self.state == 3


def raft(el: etree._Element) -> RaftFacts:
    _expect(el, "RAFT")
    return RaftFacts(server_id=_int(el, "SERVER_ID"), state=_int(el, "STATE"))


def pool_items(root: etree._Element, pool_tag: str, item_tag: str
               ) -> Iterator[etree._Element]:
    _expect(root, pool_tag)
    for child in root:
        if child.tag == item_tag:
            yield child


# -- writing -------------------------------------------------------------------------------
# XML 1.0 cannot carry these characters at all (not even escaped).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")
_REMOVE_CHILD = "HOOKD_REMOVE"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TemplateValueError(f"{name!r} is not a valid template attribute name")
    return name


def to_xml(attributes: Iterable[tuple[str, WriteValue]]) -> str:
    """Serialise attributes to oned's XML form ``<TEMPLATE>...</TEMPLATE>``.

    Values are XML-escaped text (lxml does the escaping), so quotes, backslashes, ``&``,
    ``<``, ``]]>``, ``$VAR`` and newlines arrive as written. An empty value is written as
    ``<![CDATA[]]>``: oned ignores an element without text (the attribute would keep its old
    value) but stores an empty CDATA section as the empty string. ``REMOVE`` removes the
    attribute. Empty vectors are refused: a merge would remove the attribute instead of
    setting it (use ``REMOVE`` to say so).
    """
    root = etree.Element("TEMPLATE")
    for name, value in attributes:
        tag = _check_name(name).upper()
        element = etree.SubElement(root, tag)
        if isinstance(value, Removal):
            etree.SubElement(element, _REMOVE_CHILD)
        elif isinstance(value, Vector):
            if not value.items:
                raise TemplateValueError(f"refusing to write an empty {tag} vector")
            for sub_name, sub_value in value.items:
                sub_tag = _check_name(sub_name)  # case kept, as oned stored it
                _set_text(etree.SubElement(element, sub_tag), f"{tag}/{sub_tag}", sub_value)
        else:
            _set_text(element, tag, value)
    text: str = etree.tostring(root, encoding="unicode")
    return text


def _set_text(element: etree._Element, what: str, value: str) -> None:
    if _XML_INVALID.search(value):
        raise TemplateValueError(
            f"the value of {what} contains control characters that an XML template cannot carry"
        )
    element.text = value if value else etree.CDATA("")
