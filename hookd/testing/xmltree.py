"""A tiny XML node tree built with expat that keeps the node *kinds* libxml2 keeps.

oned parses XML with libxml2 (``xmlParseMemory``) and, when it rebuilds a template from
XML (``Template::rebuild_attributes`` / ``single_xml_att`` / ``vector_xml_att`` in
``src/template/Template.cc`` at release-6.8.3), it looks at the *type* of each child node:
a text node and a CDATA section are different nodes, a comment is a node, adjacent
character data (including decoded entity and character references) is merged into one
text node. ElementTree and lxml hide those boundaries, so this module builds its own
tree from expat events.

Only what the simulator needs is modelled: elements, text, CDATA sections, comments and
processing instructions. Namespaces are not processed (element names are kept as
written), as in the documents oned exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat


class XmlSyntaxError(ValueError):
    """The input is not well-formed XML."""


@dataclass
class Text:
    """A run of character data (entities already decoded)."""

    data: str


@dataclass
class CData:
    """One ``<![CDATA[...]]>`` section."""

    data: str


@dataclass
class Comment:
    """An XML comment."""

    data: str


@dataclass
class ProcessingInstruction:
    """An XML processing instruction inside the document element."""

    target: str
    data: str


@dataclass
class Element:
    """An element and its ordered children."""

    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def elements(self) -> list[Element]:
        """The child elements, in document order."""
        return [c for c in self.children if isinstance(c, Element)]

    def first(self, name: str) -> Element | None:
        """The first child element called ``name``."""
        for child in self.children:
            if isinstance(child, Element) and child.name == name:
                return child
        return None

    def text(self) -> str:
        """All character data below this element, concatenated (like XPath string())."""
        parts: list[str] = []
        for child in self.children:
            if isinstance(child, Text | CData):
                parts.append(child.data)
            elif isinstance(child, Element):
                parts.append(child.text())
        return "".join(parts)


Node = Element | Text | CData | Comment | ProcessingInstruction


class _Builder:
    def __init__(self) -> None:
        self.root: Element | None = None
        self.stack: list[Element] = []
        self.in_cdata = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        element = Element(name, dict(attrs))
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)

    def end(self, _name: str) -> None:
        self.stack.pop()

    def chars(self, data: str) -> None:
        if not self.stack:
            return
        children = self.stack[-1].children
        if self.in_cdata:
            last = children[-1] if children else None
            if isinstance(last, CData):
                last.data += data
            return
        last = children[-1] if children else None
        if isinstance(last, Text):
            last.data += data
        else:
            children.append(Text(data))

    def start_cdata(self) -> None:
        self.in_cdata = True
        if self.stack:
            self.stack[-1].children.append(CData(""))

    def end_cdata(self) -> None:
        self.in_cdata = False

    def comment(self, data: str) -> None:
        if self.stack:
            self.stack[-1].children.append(Comment(data))

    def pi(self, target: str, data: str) -> None:
        if self.stack:
            self.stack[-1].children.append(ProcessingInstruction(target, data))


def parse(document: str | bytes) -> Element:
    """Parse ``document`` and return its root element.

    Raises :class:`XmlSyntaxError` when the document is not well-formed (the condition
    under which ``xmlParseMemory`` returns no document).
    """
    builder = _Builder()
    parser = expat.ParserCreate()
    parser.buffer_text = False
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.chars
    parser.StartCdataSectionHandler = builder.start_cdata
    parser.EndCdataSectionHandler = builder.end_cdata
    parser.CommentHandler = builder.comment
    parser.ProcessingInstructionHandler = builder.pi
    data = document.encode("utf-8") if isinstance(document, str) else document
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise XmlSyntaxError(str(exc)) from exc
    if builder.root is None:
        raise XmlSyntaxError("no root element")
    return builder.root


def is_well_formed(document: str) -> bool:
    """True when ``document`` parses (what ``ObjectXML::validate_xml`` checks)."""
    try:
        parse(document)
    except XmlSyntaxError:
        return False
    return True
