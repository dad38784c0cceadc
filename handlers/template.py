"""OpenNebula templates as plain values: single and vector attributes, in oned's order.

oned returns a template as XML: each child of ``<TEMPLATE>`` is either a *single* attribute
(text) or a *vector* attribute (children with text). Names repeat (several ``DISK``).
:class:`Template` keeps exactly that, in document order, as immutable values.
:mod:`hookd.documents` reads oned's XML into these values and writes edits back in oned's
XML form.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from handlers.errors import PermanentError


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
        # A later duplicate replaces the value and keeps the first one's place, as in a dict.
        return cls(tuple(dict(mapping).items()))

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

    # -- building ----------------------------------------------------------------------
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


class Removal:
    """The value that removes an attribute in a merge update (see :data:`REMOVE`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REMOVE"


#: Removes the attribute in a merge update: written as ``<NAME><HOOKD_REMOVE/></NAME>``, which
#: oned reads as an empty vector; ``Template::merge`` first erases every attribute named like
#: one it receives, then skips empty vectors (src/template/Template.cc, 6.0 - 7.4; verified on
#: a real oned 7.4.0 and 6.8.3). An element with no content at all (``<NAME/>``) is ignored
#: instead: NAME keeps its old value.
REMOVE = Removal()

WriteValue = Value | Removal
