"""Reading a ``one.*pool.info`` answer while it arrives, one pool object at a time.

A pool page is an XML-RPC ``methodResponse`` whose second array value is the pool document
as one escaped string. Read whole, a page of 2,000 VM templates that carry hookd's
START_SCRIPT_BASE64 (about 25 KB each) is 50 MB of body, 50 MB of string and a tree several
times that: the start-up sweep's peak memory was these pages, not hookd's own state
(benchmarks/, ``scale``). Here the answer is fed in chunks to a streaming XML-RPC reader
(expat, as ``xmlrpc.client`` uses) whose string value goes, chunk by chunk, into a pull
parser for the pool document (lxml, hardened like :mod:`hookd.xmlsafe`); each pool object
is handed out as soon as its end tag is read and dropped once the caller is done with it.
Memory is bounded by one object and one network chunk, whatever the page size.

Shape read (oned's xmlrpc-c answer; include/Request.h, src/rm/Request.cc ``success_response``
and ``failure_response``)::

    <methodResponse><params><param><value><array><data>
      <value><boolean>1</boolean></value>
      <value><string>&lt;IMAGE_POOL&gt;...</string></value>   (or untyped <value>...</value>)
      <value><i4>0</i4></value>
    </data></array></value></param></params></methodResponse>

On failure the boolean is 0 and the string is oned's error message, followed by the error
code; a ``<fault>`` answer is an XML-RPC level failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from xml.parsers import expat

from lxml import etree

# Depth of the answer array's values, counted from methodResponse (1).
_VALUE_DEPTH = 7
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_MESSAGE_LIMIT = 64 * 1024


class PoolStreamError(ValueError):
    """The answer is not a readable XML-RPC pool answer (malformed, unsafe, too large)."""


@dataclass(frozen=True)
class PoolAnswer:
    """How the call ended: ``ok``, or oned's failure message and error code."""

    ok: bool
    message: str = ""
    code: int = 0
    fault: bool = False


class PoolStream:
    """Feed the raw HTTP body with :meth:`feed` and iterate the pool objects each chunk
    completes; then iterate :meth:`finish`, after which :attr:`answer` says how the call
    ended."""

    def __init__(self, pool_tag: str, item_tag: str, *,
                 max_bytes: int = 256 * 1024 * 1024,
                 drop_ids: frozenset[str] = frozenset()) -> None:
        """``drop_ids``: lists of ``<ID>`` inside an object that are dropped while they are
        read (``DATASTORE/IMAGES``, ``HOST/VMS``...: oned lists every image of a datastore,
        so a 100,000-image cloud makes one datastore a 100,000-element document)."""
        self.pool_tag, self.item_tag = pool_tag, item_tag
        self._drop_ids = drop_ids
        self._max_bytes = max_bytes
        self._received = 0
        self._outer = expat.ParserCreate()
        self._outer.buffer_text = True
        self._outer.buffer_size = 64 * 1024
        self._outer.StartElementHandler = self._start
        self._outer.EndElementHandler = self._end
        self._outer.CharacterDataHandler = self._data
        self._outer.StartDoctypeDeclHandler = self._refuse
        self._outer.EntityDeclHandler = self._refuse
        self._inner = etree.XMLPullParser(
            events=("end",), tag=(item_tag, "ID") if drop_ids else item_tag,
            resolve_entities=False, load_dtd=False,
            dtd_validation=False, no_network=True, huge_tree=False, remove_comments=True,
            remove_pis=True)
        self._depth = 0
        self._path: list[str] = []
        self._value_index = -1  # which value of the answer array we are in
        self._status_text: list[str] = []
        self._code_text: list[str] = []
        self._message: list[str] = []
        self._message_len = 0
        self._fault = False
        self._ok: bool | None = None
        self._document_started = False
        self._tail = ""  # the end of the previous document chunk, for the DOCTYPE check
        self.answer: PoolAnswer | None = None  # set by finish()

    # -- expat handlers -----------------------------------------------------------------
    def _refuse(self, *_args: object) -> None:
        raise PoolStreamError("the answer declares a DOCTYPE or ENTITY, which oned never sends")

    def _start(self, name: str, _attrs: dict[str, str]) -> None:
        self._depth += 1
        self._path.append(name)
        if self._depth == 1 and name != "methodResponse":
            raise PoolStreamError(f"answer is <{name}>, not an XML-RPC methodResponse")
        if self._depth == 2 and name == "fault":
            self._fault = True
        if (self._depth == _VALUE_DEPTH and name == "value"
                and self._path[:_VALUE_DEPTH - 1] == ["methodResponse", "params", "param",
                                                      "value", "array", "data"]):
            self._value_index += 1

    def _end(self, name: str) -> None:
        if self._depth == _VALUE_DEPTH and self._value_index == 0 and name == "value":
            self._ok = "".join(self._status_text).strip() in ("1", "true")
        self._depth -= 1
        self._path.pop()

    def _data(self, text: str) -> None:
        if self._fault:
            self._keep_message(text)
            return
        if not _VALUE_DEPTH <= self._depth <= _VALUE_DEPTH + 1 or self._value_index < 0:
            return  # outside the answer array's values and their type elements
        if self._value_index == 0:
            self._status_text.append(text)
        elif self._value_index == 1:
            if self._depth == _VALUE_DEPTH + 1 and self._path[-1] != "string":
                return
            if self._ok:
                self._document(text)
            else:
                self._keep_message(text)
        elif self._value_index == 2:
            self._code_text.append(text)

    # -- the pool document ----------------------------------------------------------------
    def _document(self, text: str) -> None:
        if not self._document_started:
            text = text.lstrip()
            if not text:
                return
            self._document_started = True
        window = self._tail + text
        if _DECLARATION.search(window):
            raise PoolStreamError("the pool document declares a DOCTYPE or ENTITY, "
                                  "which oned never sends")
        self._tail = window[-16:]  # (pieces can be shorter than a declaration)
        try:
            self._inner.feed(text)
        except etree.XMLSyntaxError as exc:
            raise PoolStreamError(f"pool document is not well-formed: {exc}") from None

    def _keep_message(self, text: str) -> None:
        if self._message_len < _MESSAGE_LIMIT:
            self._message.append(text[: _MESSAGE_LIMIT - self._message_len])
            self._message_len += len(text)

    # -- public -----------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> Iterator[etree._Element]:
        """Parse ``chunk``; yield each pool object completed by it (valid until the next
        item is requested: the caller must not keep elements, only what it read from them)."""
        self._received += len(chunk)
        if self._received > self._max_bytes:
            raise PoolStreamError(f"answer over the {self._max_bytes}-byte limit")
        try:
            self._outer.Parse(chunk, False)
        except expat.ExpatError as exc:
            raise PoolStreamError(f"answer is not well-formed XML: {exc}") from None
        yield from self._completed()

    def _completed(self) -> Iterator[etree._Element]:
        for _event, element in self._inner.read_events():
            if not isinstance(element, etree._Element):
                continue  # only "end" events are asked for: never
            parent = element.getparent()
            if element.tag != self.item_tag:  # an <ID>, asked for when drop_ids is set
                if parent is not None and parent.tag in self._drop_ids:
                    parent.remove(element)
                continue
            if parent is None or parent.tag != self.pool_tag or parent.getparent() is not None:
                raise PoolStreamError(f"<{self.item_tag}> outside <{self.pool_tag}>")
            yield element
            # Drop what was read: the element and everything before it in the pool.
            element.clear()
            while element.getprevious() is not None:
                del parent[0]

    def finish(self) -> Iterator[etree._Element]:
        """End of the body: yield the objects still pending, then set :attr:`answer`.
        Raises :class:`PoolStreamError` when the answer was incomplete or not a pool answer."""
        try:
            self._outer.Parse(b"", True)
        except expat.ExpatError as exc:
            raise PoolStreamError(f"answer is not well-formed XML: {exc}") from None
        if self._fault:
            self.answer = PoolAnswer(False, " ".join("".join(self._message).split()),
                                     fault=True)
            return
        if self._ok is None:
            raise PoolStreamError("answer carries no success flag")
        code_text = "".join(self._code_text).strip()
        code = int(code_text) if code_text.lstrip("-").isdigit() else 0
        if not self._ok:
            self.answer = PoolAnswer(False, "".join(self._message), code)
            return
        if not self._document_started:
            raise PoolStreamError("answer carries no pool document")
        try:
            root = self._inner.close()
        except etree.XMLSyntaxError as exc:
            raise PoolStreamError(f"pool document is not well-formed: {exc}") from None
        if root.tag != self.pool_tag:
            raise PoolStreamError(f"pool document is <{root.tag}>, not <{self.pool_tag}>")
        yield from self._completed()
        self.answer = PoolAnswer(True, code=code)
