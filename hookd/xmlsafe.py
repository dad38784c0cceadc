"""Parsing XML from oned and from the event stream without trusting it.

Every XML document hookd reads (XML-RPC results, HOOK_MESSAGE payloads) goes through these
parsers: no DTD loading, no entity resolution, no network access, no huge-tree mode. A
document that declares a DOCTYPE or an ENTITY is refused outright: oned never sends one, so
its presence means the input is not oned's.
"""

from __future__ import annotations

import re
import threading

from lxml import etree

from handlers.errors import PermanentError

_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class UnsafeXml(PermanentError):
    """The document is not one hookd will parse (DTD, entity, malformed, too large)."""


# lxml parsers must not be shared between threads that parse concurrently;
# each thread gets its own through this local cache.
_local = threading.local()


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False, load_dtd=False, dtd_validation=False, no_network=True,
            huge_tree=False, recover=False, remove_comments=True, remove_pis=True)
        _local.parser = parser
    return parser


def parse(data: bytes | str, *, max_bytes: int = 256 * 1024 * 1024) -> etree._Element:
    """Parse a well-formed document strictly; raise :class:`UnsafeXml` otherwise."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise UnsafeXml(f"XML document of {len(raw)} bytes is over the {max_bytes}-byte limit")
    if _DECLARATION.search(raw):
        raise UnsafeXml("XML document declares a DOCTYPE or ENTITY, which oned never sends")
    try:
        return etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"XML is not well-formed: {exc}") from None
