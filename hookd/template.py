"""OpenNebula templates as hookd sees them, and the one way hookd writes them.

oned returns a template as XML: each child of ``<TEMPLATE>`` is either a *single* attribute
(text) or a *vector* attribute (children with text). Names repeat (several ``DISK``).
:class:`Template` keeps exactly that, in document order, as immutable values.

hookd writes templates only through :func:`to_xml`, in oned's XML form, never in the
``KEY="value"`` attribute syntax: in that syntax only ``\\"`` is an escape, so a value that
ends in a backslash cannot be written at all, and pyone's flat-dict serialiser does not
escape anything (see "Template value escaping" in shared/opennebula-recorded/README.md:
``one.template.update`` and ``one.image.update`` accept the XML form in merge and replace
mode and store every value exactly).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from lxml import etree

from hookd.errors import PermanentError

# XML 1.0 cannot carry these characters at all (not even escaped).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")


class TemplateValueError(PermanentError):
    """A value cannot be expressed in a template oned accepts."""


@dataclass(frozen=True, slots=True)
class Vector:
    """A vector attribute: ordered, unique sub-attribute names (oned keeps them in a map).

    Sub-attribute names are case-sensitive, as in oned: the attribute syntax upper-cases
    them (src/parsers/template_syntax.y) but the XML form keeps them as written
    (``Template::vector_xml_att``, src/template/Template.cc), and drivers and one-context
    look them up by their exact name. hookd keeps a name exactly as oned stored it.
    """

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Vector:
        pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
        seen: dict[str, str] = {}
        for key, value in pairs:
            seen[key] = value
        return cls(tuple(seen.items()))

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.items:
            if key == name:
                return value
        return default

    def set(self, name: str, value: str | None) -> Vector:
        """A copy with ``name`` set (appended if new) or removed when ``value`` is None."""
        out: list[tuple[str, str]] = []
        found = False
        for key, old in self.items:
            if key == name:
                found = True
                if value is not None:
                    out.append((key, value))
            else:
                out.append((key, old))
        if not found and value is not None:
            out.append((name, value))
        return Vector(tuple(out))

    def as_dict(self) -> dict[str, str]:
        return dict(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


Value = str | Vector


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    value: Value


@dataclass(frozen=True, slots=True)
class Template:
    """An ordered, immutable OpenNebula template."""

    attributes: tuple[Attribute, ...] = ()

    # -- reading -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Attribute]:
        return iter(self.attributes)

    def get(self, name: str) -> str | None:
        """The first single attribute called ``name`` (None if absent or a vector)."""
        name = name.upper()
        for attr in self.attributes:
            if attr.name == name and isinstance(attr.value, str):
                return attr.value
        return None

    def vector(self, name: str) -> Vector | None:
        name = name.upper()
        for attr in self.attributes:
            if attr.name == name and isinstance(attr.value, Vector):
                return attr.value
        return None

    def vectors(self, name: str) -> list[Vector]:
        name = name.upper()
        return [a.value for a in self.attributes if a.name == name and isinstance(a.value, Vector)]

    def values(self, name: str) -> list[Value]:
        name = name.upper()
        return [a.value for a in self.attributes if a.name == name]

    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    # -- building ----------------------------------------------------------------------
    @classmethod
    def from_element(cls, element: etree._Element | None) -> Template:
        """Read oned's ``<TEMPLATE>`` (or ``<USER_TEMPLATE>``) element."""
        if element is None:
            return cls()
        attrs: list[Attribute] = []
        for child in element:
            if _special(child):
                continue
            if len(child):
                items = tuple((str(sub.tag), sub.text or "") for sub in child
                              if not _special(sub))
                attrs.append(Attribute(child.tag.upper(), Vector(items)))
            else:
                attrs.append(Attribute(child.tag.upper(), child.text or ""))
        return cls(tuple(attrs))

    @classmethod
    def of(cls, *attributes: tuple[str, Value]) -> Template:
        return cls(tuple(Attribute(name.upper(), value) for name, value in attributes))

    def replaced(self, name: str, values: Iterable[Value]) -> Template:
        """A copy where every attribute called ``name`` is replaced by ``values``.

        The new values take the position of the first old one (or go last). This is the
        effect of a merge update that sends ``name`` (``Template::merge`` in
        src/template/Template.cc erases every attribute with that name first).
        """
        name = name.upper()
        new = [Attribute(name, v) for v in values]
        out: list[Attribute] = []
        placed = False
        for attr in self.attributes:
            if attr.name == name:
                if not placed:
                    out.extend(new)
                    placed = True
            else:
                out.append(attr)
        if not placed:
            out.extend(new)
        return Template(tuple(out))


def _special(node: etree._Element) -> bool:
    """Comments, processing instructions and entity references are not attributes."""
    tag: object = node.tag
    return not isinstance(tag, str)


def parse_template_xml(text: str | bytes) -> Template:
    """Parse a standalone ``<TEMPLATE>...</TEMPLATE>`` document (used by tests and the CLI)."""
    from hookd.xmlsafe import parse

    return Template.from_element(parse(text))


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TemplateValueError(f"{name!r} is not a valid template attribute name")
    return name.upper()


def _check_sub_name(name: str) -> str:
    """A vector sub-attribute name is written as oned stored it (case kept)."""
    if not _NAME.match(name):
        raise TemplateValueError(f"{name!r} is not a valid template attribute name")
    return name


def _check_value(name: str, value: str) -> str:
    if _XML_INVALID.search(value):
        raise TemplateValueError(
            f"the value of {name} contains control characters that an XML template cannot carry"
        )
    return value


class Removal:
    """The value that removes an attribute in a merge update (see :data:`REMOVE`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REMOVE"


#: Written as ``<NAME><HOOKD_REMOVE/></NAME>``: oned reads an element whose children are
#: elements without text as a vector with no values (``Template::vector_xml_att``), and
#: ``Template::merge`` first erases every attribute named like one it receives, then skips
#: empty vectors (src/template/Template.cc, 6.0 - 7.4): the attribute is gone. An element
#: with no content at all (``<NAME/>``) is ignored instead: NAME keeps its old value.
REMOVE = Removal()
_REMOVE_CHILD = "HOOKD_REMOVE"

WriteValue = Value | Removal


def to_xml(attributes: Iterable[tuple[str, WriteValue]]) -> str:
    """Serialise attributes to oned's XML form ``<TEMPLATE>...</TEMPLATE>``.

    Values are XML-escaped text (lxml does the escaping), so quotes, backslashes, ``&``,
    ``<``, ``]]>``, ``$VAR`` and newlines arrive as written. An empty value is written as
    ``<![CDATA[]]>``: oned ignores an element without text (the attribute would keep its old
    value) but stores an empty CDATA section as the empty string. :data:`REMOVE` removes
    the attribute. Empty vectors are refused: a merge would remove the attribute instead of
    setting it (use :data:`REMOVE` to say so).
    """
    root = etree.Element("TEMPLATE")
    for name, value in attributes:
        tag = _check_name(name)
        element = etree.SubElement(root, tag)
        if isinstance(value, Removal):
            etree.SubElement(element, _REMOVE_CHILD)
        elif isinstance(value, Vector):
            if not value.items:
                raise TemplateValueError(f"refusing to write an empty {tag} vector")
            for sub_name, sub_value in value.items:
                sub_tag = _check_sub_name(sub_name)
                _set_text(etree.SubElement(element, sub_tag), f"{tag}/{sub_tag}", sub_value)
        else:
            _set_text(element, tag, value)
    text: str = etree.tostring(root, encoding="unicode")
    return text


def _set_text(element: etree._Element, what: str, value: str) -> None:
    checked = _check_value(what, value)
    element.text = checked if checked else etree.CDATA("")
