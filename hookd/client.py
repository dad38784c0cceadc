"""The OpenNebula client layer: the only code in hookd that talks XML-RPC.

Requests are built with ``xmlrpc.client.dumps``, sent with :mod:`hookd.http` (a hard deadline
per call: ``read_timeout`` from connect to last byte; never through a proxy) and answers read
with ``xmlrpc.client``'s unmarshaller, or as a stream for pool pages (:mod:`hookd.pool_stream`);
XML results are parsed by :mod:`hookd.xmlsafe`. Why not pyone: README, "The HTTP client".

Every failure becomes a :class:`~handlers.errors.TransientError` (connection, timeout, HTTP
5xx, a locked object, Raft replication) or a :class:`~handlers.errors.PermanentError`
(authentication, authorisation, not found, invalid template, TLS verification...), with
oned's code kept. Error codes: include/Request.h; a lock-protected object answers 0x200 with
"... is locked." (recorded on 6.8.3). Templates are written only as oned's XML form produced
by :func:`hookd.documents.to_xml`.
"""

from __future__ import annotations

import contextlib
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat
from xml.parsers.expat import ExpatError

from lxml import etree

from handlers.errors import HookdError, PermanentError, TransientError
from handlers.facts import (
    AppFacts,
    DatastoreFacts,
    HostFacts,
    ImageFacts,
    MarketFacts,
    VmTemplateFacts,
)
from hookd import documents
from hookd.documents import RaftFacts
from hookd.http import (
    DIRECT,
    BodyTooLarge,
    BrokenResponse,
    CABundleUnreadable,
    HttpClient,
    HttpError,
    HttpOptions,
    InvalidRequest,
    TimedOut,
    TLSVerifyFailed,
)
from hookd.pool_stream import PoolStream
from hookd.xmlsafe import parse

# A whole (not streamed) answer larger than this is refused: pool pages are streamed, the
# largest answers read whole are the host and datastore pools.
_MAX_ANSWER = 512 * 1024 * 1024
_HEADERS = {"Content-Type": "text/xml", "Connection": "close"}

# include/Request.h ErrorCode (those hookd tells apart)
AUTHENTICATION = 0x0100
AUTHORIZATION = 0x0200
NO_EXISTS = 0x0400
LOCKED = 0x8000
REPLICATION = 0x10000

MERGE = 1  # one.*.update type: 0 replace, 1 merge (src/pool/PoolObjectSQL.cc)


class OneError(PermanentError):
    """oned refused the call for good."""


class AuthenticationError(OneError):
    pass


class NotFound(OneError):
    pass


class OneTransientError(TransientError):
    """oned could not be asked, or asked us to come back later."""


class LockedError(OneTransientError):
    pass


def classify_failure(text: str, code: int) -> PermanentError | TransientError:
    """oned's failure answer (its message and error code) as a typed error."""
    if code == AUTHORIZATION and "is locked" in text:
        return LockedError(f"{text} (oned code 0x{code:x})", code=code)
    if code in (LOCKED, REPLICATION):
        return OneTransientError(f"{text} (oned code 0x{code:x})", code=code)
    if code == AUTHENTICATION:
        return AuthenticationError(
            f"{text} (oned code 0x{code:x}: check the credentials in the ONE_AUTH file)",
            code=code)
    if code == NO_EXISTS:
        return NotFound(f"{text} (oned code 0x{code:x})", code=code)
    return OneError(f"{text} (oned code 0x{code:x})", code=code)


CallObserver = Callable[[str, float, bool], None]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    tls_verify: bool | str = True
    page_size: int = 2000


def _status_error(name: str, status: int, endpoint: str) -> HookdError:
    """oned (or what answers in its place) answered with an HTTP error status."""
    if status >= 500:
        return OneTransientError(f"oned answered {name} with HTTP {status}")
    return OneError(f"oned answered {name} with HTTP {status}: is {endpoint} the XML-RPC "
                    "endpoint?")


def _loads(body: bytes) -> Any:
    """The result value of an XML-RPC answer: ``xmlrpc.client.loads`` with expat's text
    buffering on. A template travels as one string full of escaped markup, which expat
    otherwise hands over in hundreds of pieces (one per entity): buffered, an info answer
    parses in about a third of the time. Faults raise ``xmlrpc.client.Fault`` as in loads."""
    target = xmlrpc.client.Unmarshaller()
    parser = expat.ParserCreate(None, None)
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    parser.StartElementHandler = target.start
    parser.EndElementHandler = target.end
    parser.CharacterDataHandler = target.data
    # As xmlrpc.client.ExpatParser does: expat hands over str, nothing is left to decode
    # (typeshed's stub wants a str here).
    target.xml(None, None)  # type: ignore[arg-type]
    parser.Parse(body, True)
    return target.close()[0]


class OneClient:
    """Typed access to the oned calls hookd needs. Thread-safe."""

    def __init__(self, endpoint: str, session: str, options: ClientOptions | None = None,
                 observer: CallObserver | None = None) -> None:
        self.endpoint = endpoint
        self.options = options or ClientOptions()
        if not endpoint.startswith(("http://", "https://")):
            raise PermanentError(f"the XML-RPC endpoint {endpoint!r} must start with http:// "
                                 f"or https://")
        self._http = HttpClient(HttpOptions(
            connect_timeout=self.options.connect_timeout,
            deadline=self.options.read_timeout,
            max_body=_MAX_ANSWER,
            verify=self.options.tls_verify,
            proxies=DIRECT,
        ))
        self._session = session
        self._observer = observer

    def _request(self, name: str, params: tuple[Any, ...]) -> bytes:
        return xmlrpc.client.dumps((self._session, *params), name, encoding="utf-8").encode(
            "utf-8", "xmlcharrefreplace")

    # -- the one place a call happens ----------------------------------------------------
    def call(self, method: str, *params: Any) -> Any:
        """Call ``one.<method>`` and return the result value, or raise a typed error."""
        name = "one." + method
        with self._observed(name) as done:
            answer = self._http.fetch("POST", self.endpoint, headers=_HEADERS,
                                      body=self._request(name, params))
            if answer.status >= 400:
                raise _status_error(name, answer.status, self.endpoint)
            response = _loads(answer.body)
            if not isinstance(response, list) or not response:
                raise OneError(f"oned answered {name} with something that is not an array")
            if response[0] is True:
                done()
                return response[1] if len(response) > 1 else None
            message = str(response[1]) if len(response) > 1 else "unknown error"
            code = response[2] if len(response) > 2 and isinstance(response[2], int) else 0
            raise classify_failure(message, code)

    @contextlib.contextmanager
    def _observed(self, name: str) -> Iterator[Callable[[], None]]:
        """Map every way a call can fail to a typed error; report the call to the observer
        (ok once the body calls the function it is given)."""
        started = time.monotonic()
        ok = False

        def done() -> None:
            nonlocal ok
            ok = True

        try:
            yield done
        except TimedOut:
            raise OneTransientError(
                f"oned did not answer {name} within {self.options.read_timeout:g} s "
                f"({self.endpoint})") from None
        except (TLSVerifyFailed, CABundleUnreadable) as exc:
            raise OneError(f"TLS verification of {self.endpoint} failed: "
                           f"{_short(exc)} (see one.tls_verify)") from None
        except BrokenResponse as exc:
            raise OneTransientError(f"broken HTTP answer to {name}: {_short(exc)}") from None
        except BodyTooLarge:
            raise OneError(f"oned's answer to {name} is larger than {_MAX_ANSWER} bytes") \
                from None
        except InvalidRequest as exc:
            raise OneError(f"cannot call {name} at {self.endpoint}: {_short(exc)}") from None
        except HttpError as exc:  # refused, reset, closed, TLS handshake
            raise OneTransientError(
                f"cannot reach oned at {self.endpoint}: {_short(exc)}") from None
        except xmlrpc.client.Fault as exc:  # an XML-RPC <fault>
            raise OneError(f"oned rejected {name}: {exc}") from None
        except (xmlrpc.client.ResponseError, ValueError, ExpatError, IndexError) as exc:
            raise OneTransientError(f"unreadable answer to {name}: {_short(exc)}") from None
        finally:
            if self._observer is not None:
                self._observer(name, time.monotonic() - started, ok)

    def _pool_page(self, method: str, params: tuple[Any, ...], pool_tag: str,
                   item_tag: str, *, drop_ids: frozenset[str] = frozenset()
                   ) -> Iterator[etree._Element]:
        """One pool answer, read as it arrives (:mod:`hookd.pool_stream`): each object is
        yielded as soon as it is complete and dropped once the caller moves on. The call's
        observed duration therefore includes the caller's work on the page; its deadline
        does not (only the time spent waiting for oned counts)."""
        name = "one." + method
        with self._observed(name) as done, self._http.stream(
                "POST", self.endpoint, headers=_HEADERS,
                body=self._request(name, params)) as response:
            if response.status >= 400:
                raise _status_error(name, response.status, self.endpoint)
            stream = PoolStream(pool_tag, item_tag, drop_ids=drop_ids)
            for chunk in response:
                yield from stream.feed(chunk)
            yield from stream.finish()
            answer = stream.answer
            if answer is None:  # finish() sets it or raises: never
                raise OneTransientError(f"unreadable answer to {name}")
            if answer.fault:
                raise OneError(f"oned rejected {name}: {answer.message}")
            if not answer.ok:
                raise classify_failure(answer.message, answer.code)
            done()

    def _xml(self, method: str, *params: Any) -> etree._Element:
        result = self.call(method, *params)
        if not isinstance(result, str):
            raise OneError(f"one.{method} returned {type(result).__name__}, not XML")
        return parse(result)

    # -- system --------------------------------------------------------------------------
    def version(self) -> str:
        return str(self.call("system.version"))

    def system_config(self) -> etree._Element:
        return self._xml("system.config")

    def whoami(self) -> etree._Element:
        return self._xml("user.info", -1, False)

    def raft(self) -> RaftFacts:
        return documents.raft(self._xml("zone.raftstatus"))

    # -- single objects --------------------------------------------------------------------
    def image(self, image_id: int) -> ImageFacts:
        return documents.image(self._xml("image.info", int(image_id), False))

    def template(self, template_id: int) -> VmTemplateFacts:
        return documents.vm_template(
            self._xml("template.info", int(template_id), False, False))

    def datastore(self, datastore_id: int) -> DatastoreFacts:
        return documents.datastore(self._xml("datastore.info", int(datastore_id), False))

    def app(self, app_id: int) -> AppFacts:
        return documents.app(self._xml("marketapp.info", int(app_id), False))

    # -- pools -----------------------------------------------------------------------------
    # Datastores, hosts and marketplaces list every image, VM and app they hold by ID;
    # hookd never reads those lists, and they grow with the cloud: they are dropped while
    # the answer is read, so a world refresh costs the same for 100 or 100,000 images.
    def datastores(self) -> list[DatastoreFacts]:
        return [documents.datastore(e) for e in self._pool_page(
            "datastorepool.info", (), "DATASTORE_POOL", "DATASTORE",
            drop_ids=frozenset({"IMAGES"}))]

    def hosts(self) -> list[HostFacts]:
        return [documents.host(e) for e in self._pool_page(
            "hostpool.info", (), "HOST_POOL", "HOST", drop_ids=frozenset({"VMS"}))]

    def markets(self) -> list[MarketFacts]:
        return [documents.market(e) for e in self._pool_page(
            "marketpool.info", (), "MARKETPLACE_POOL", "MARKETPLACE",
            drop_ids=frozenset({"MARKETPLACEAPPS"}))]

    def iter_images(self) -> Iterator[ImageFacts]:
        return map(documents.image, self.iter_image_elements())

    def iter_image_elements(self) -> Iterator[etree._Element]:
        """The image pool's ``<IMAGE>`` elements; each is valid until the next is asked for."""
        return self._paged("imagepool.info", "IMAGE_POOL", "IMAGE")

    def iter_template_elements(self) -> Iterator[etree._Element]:
        """The template pool's ``<VMTEMPLATE>`` elements, for a caller that reads only some
        in full; each is valid until the next one is asked for."""
        return self._paged("templatepool.info", "VMTEMPLATE_POOL", "VMTEMPLATE")

    def _paged(self, method: str, pool_tag: str, item_tag: str) -> Iterator[etree._Element]:
        """Row-offset paging as oned implements it: ``end < -1`` means LIMIT start, -end
        (RequestManagerPoolInfoFilter::dump, src/rm/RequestManagerPoolInfoFilter.cc).

        Objects created during the walk may shift rows; duplicates are possible (harmless:
        every action is idempotent) and a deleted object may hide one row until the next
        sweep, which events cover meanwhile.
        """
        size = max(2, self.options.page_size)
        offset = 0
        seen: set[int] = set()
        while True:
            count = 0
            for element in self._pool_page(method, (-2, offset, -size), pool_tag, item_tag):
                count += 1
                first = element[0] if len(element) else None
                # oned writes <ID> first; anything else is looked for
                ident = first.text if first is not None and first.tag == "ID" else \
                    element.findtext("ID")
                if ident is not None and ident.isdigit():
                    if int(ident) in seen:
                        continue
                    seen.add(int(ident))
                yield element
            if count < size:
                return
            offset += size

    # -- writes ----------------------------------------------------------------------------
    def update_template(self, template_id: int, template_xml: str) -> None:
        self.call("template.update", int(template_id), template_xml, MERGE)

    def update_image(self, image_id: int, template_xml: str) -> None:
        self.call("image.update", int(image_id), template_xml, MERGE)

    def allocate_image(self, template_xml: str, datastore_id: int) -> int:
        return int(self.call("image.allocate", template_xml, int(datastore_id)))


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
