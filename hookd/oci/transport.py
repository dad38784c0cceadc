"""HTTP for registries: a hard deadline per request, bounded bodies and manual redirects.

Everything a registry sends is untrusted:

* **Deadline.** ``requests``' read timeout bounds each ``recv``, not the request: a server that
  drips one byte per second keeps a download alive forever. Each logical request (its redirects
  and its body included) runs under a :class:`Deadline` whose timer shuts the sockets down when
  it expires; the connection classes mounted on every session register their sockets with the
  deadline of the request in progress (a context variable), from TCP connect to the last byte.
* **Bounded bodies.** Bodies are streamed and abandoned as soon as they exceed the cap
  (a larger ``Content-Length`` is refused before reading). We ask for ``identity`` encoding and
  decode gzip/deflate ourselves with a bounded decompressor, so a compression bomb cannot grow.
* **Redirects** are followed by hand, up to ``max_redirects``: a revisited URL is a loop, an
  https→http downgrade is refused, plain HTTP is only allowed to ``plain_http_registries``, and
  ``Authorization`` is dropped for good as soon as the origin (scheme, host, port) changes.
* **Authorization** is exactly what the caller passes: an ``auth`` hook sets or removes the
  header, so a ``~/.netrc`` or a session default can never add credentials.
"""

from __future__ import annotations

import contextvars
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import structlog
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

from handlers.errors import HookdError
from hookd import __version__
from hookd.oci.errors import (
    InvalidResponse,
    RedirectRefused,
    RegistryUnavailable,
    ResponseTooLarge,
    TLSFailure,
)
from hookd.oci.settings import RegistrySettings

log = structlog.get_logger(__name__)

USER_AGENT = f"hookd/{__version__}"
ERROR_BODY_LIMIT = 64 * 1024  # enough for a registry's {"errors": [...]} document
_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# --------------------------------------------------------------------------------------------
# Deadline


class Deadline:
    """A hard limit on one logical request. Use as a context manager.

    While active, sockets opened or used by the connection classes below are registered; when
    the time is up they are shut down, which unblocks any ``connect``/``recv`` in progress.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expires = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = False
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._token: contextvars.Token[Deadline | None] | None = None

    def __enter__(self) -> Deadline:
        self._token = _CURRENT_DEADLINE.set(self)
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._timer.cancel()
        if self._token is not None:
            _CURRENT_DEADLINE.reset(self._token)

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self._expires

    def remaining(self) -> float:
        return max(0.0, self._expires - time.monotonic())

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            if self._fired:
                _shutdown(sock)
            else:
                self._sockets.append(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._fired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        # The base-class method: SSLSocket.shutdown would also tear down its SSL object under
        # the feet of the thread blocked in read(); shutting the file descriptor is enough.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


_CURRENT_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "hookd_oci_deadline", default=None
)


def register_socket(sock: socket.socket | None) -> None:
    """Put ``sock`` under the deadline of the request in progress in this context, if any."""
    deadline = _CURRENT_DEADLINE.get()
    if deadline is not None and sock is not None:
        deadline.register(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        register_socket(sock)
        return sock

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        register_socket(self.sock)  # a kept-alive connection reused by this request
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # the TCP socket: covers the TLS handshake too
        register_socket(sock)
        return sock

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        register_socket(self.sock)
        return super().getresponse()


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {
    "http": _WatchedHTTPConnectionPool,
    "https": _WatchedHTTPSConnectionPool,
}


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections register their sockets with the current deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager):
            manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager


class _ExactAuthorization(requests.auth.AuthBase):
    """Sets ``Authorization`` to exactly ``value``, or removes it (also defeats ~/.netrc)."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.value is None:
            request.headers.pop("Authorization", None)
        else:
            request.headers["Authorization"] = self.value
        return request


# --------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class HttpResponse:
    """A fully read (and bounded) response. ``url`` is the final URL after redirects."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def host(self) -> str:
        return host_of(self.url)

    @property
    def error_code(self) -> str | None:
        """The first ``errors[].code`` of a registry error body, if it is a plain code."""
        try:
            document = json.loads(self.body[:ERROR_BODY_LIMIT])
            code = document["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return None
        if isinstance(code, str) and 0 < len(code) <= 64 and code.replace("_", "").isalpha():
            return code if code.isupper() else None
        return None

    @property
    def retry_after(self) -> float | None:
        """``Retry-After`` in seconds (delta form only), capped at one hour."""
        value = self.headers.get("Retry-After", "").strip()
        if value.isdigit() and len(value) <= 6:
            return float(min(int(value), 3600))
        return None

    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        if not value:
            return None
        return value.split(";", 1)[0].strip().lower() or None


def host_of(url: str) -> str:
    """``host[:port]`` of a URL as written (port kept when present), lower-cased, IPv6 in
    brackets: the same spelling as registry hosts in settings and image references."""
    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower()
    if ":" in hostname:
        hostname = f"[{hostname}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return hostname if port is None else f"{hostname}:{port}"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, host_of(url)


def safe_url(url: str) -> str:
    """``scheme://host/path`` without query or fragment (pre-signed URLs carry secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{host_of(url)}{parts.path}"


class _BoundedDecoder:
    """Decodes ``identity``/``gzip``/``deflate`` bodies without exceeding ``limit`` bytes."""

    def __init__(self, encoding: str, limit: int, what: str) -> None:
        self._limit = limit
        self._what = what
        self._size = 0
        self._zlib: Any = None
        encoding = encoding.strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        elif encoding not in ("", "identity"):
            raise InvalidResponse(f"{what} came with an unsupported Content-Encoding")

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"{self._what} is larger than the {self._limit} bytes allowed (its declared size "
            "or the configured cap)"
        )

    def feed(self, chunk: bytes) -> bytes:
        if self._zlib is not None:
            try:
                chunk = self._zlib.decompress(chunk, self._limit - self._size + 1)
            except zlib.error:
                raise InvalidResponse(f"{self._what} has a corrupt compressed body") from None
            if self._zlib.unconsumed_tail:
                raise self._too_large()
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large()
        return chunk

    def finish(self) -> bytes:
        if self._zlib is None:
            return b""
        try:
            tail: bytes = self._zlib.flush()
        except zlib.error:
            raise InvalidResponse(f"{self._what} has a corrupt compressed body") from None
        return self.feed(tail) if tail else b""


# --------------------------------------------------------------------------------------------
# Transport


SessionFactory = Callable[[], requests.Session]


class Transport:
    """Sends registry requests under the rules above. Thread-safe: one session per thread."""

    def __init__(self, settings: RegistrySettings, session_factory: SessionFactory) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            adapter = _DeadlineAdapter(max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def check_url_allowed(self, url: str, what: str) -> None:
        """Refuse anything but https, or http to a host listed in ``plain_http_registries``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RedirectRefused(f"{what} points to a URL that is not http(s)")
        if parts.username is not None or parts.password is not None:
            raise RedirectRefused(f"{what} points to a URL with embedded credentials")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise RedirectRefused(f"{what} points to a URL with an invalid port") from None
        if parts.scheme == "http" and host_of(url) not in self._settings.plain_http_registries:
            raise RedirectRefused(
                f"{what} points to plain-HTTP host {host_of(url)}, which is not listed in "
                "plain_http_registries"
            )

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        authorization: str | None,
        body_limit: int,
        what: str,
    ) -> HttpResponse:
        """Send ``method url`` and read the answer within the deadline.

        Redirects are followed here; ``authorization`` is bound to the origin of ``url``.
        2xx bodies are read up to ``body_limit`` (exceeding it is :class:`ResponseTooLarge`),
        error bodies up to :data:`ERROR_BODY_LIMIT`; ``HEAD`` bodies are never read.
        Raises :class:`RegistryUnavailable` (connection, timeout, deadline),
        :class:`TLSFailure`, :class:`RedirectRefused` and the body errors; HTTP statuses are
        returned, not raised.
        """
        settings = self._settings
        self.check_url_allowed(url, what)
        first_origin = _origin(url)
        request_headers = {
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
            **headers,
        }
        visited = {url}
        current = url
        deadline = Deadline(settings.request_deadline)
        with deadline:
            try:
                for _hop in range(settings.max_redirects + 1):
                    if authorization is not None and _origin(current) != first_origin:
                        authorization = None  # never forwarded to another origin, nor back
                    response = self._send(method, current, request_headers, authorization, deadline)
                    try:
                        location = response.headers.get("Location")
                        if response.status_code in _REDIRECT_STATUSES and location:
                            target = self._redirect_target(current, location, what)
                            if target in visited:
                                raise RedirectRefused(
                                    f"{what}: the registry redirected in a loop "
                                    f"(back to a URL on {host_of(target)})"
                                )
                            visited.add(target)
                            log.debug("oci.http.redirect", what=what, target=safe_url(target))
                            current = target
                            continue
                        return self._read(
                            response=response,
                            method=method,
                            url=current,
                            body_limit=body_limit,
                            what=what,
                            deadline=deadline,
                        )
                    finally:
                        response.close()
                raise RedirectRefused(
                    f"{what}: the registry redirected more than {settings.max_redirects} times"
                )
            except HookdError:
                if deadline.expired:
                    raise self._deadline_error(current, what) from None
                raise
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._classify(exc, current, what, deadline) from None

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        authorization: str | None,
        deadline: Deadline,
    ) -> requests.Response:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise self._deadline_error(url, "request")
        settings = self._settings
        log.debug("oci.http.request", method=method, url=safe_url(url))
        return self._session().request(
            method,
            url,
            headers=dict(headers),
            auth=_ExactAuthorization(authorization),
            allow_redirects=False,
            stream=True,
            timeout=(
                min(settings.connect_timeout, remaining),
                min(settings.read_timeout, remaining),
            ),
            verify=settings.verify_tls,
        )

    def _redirect_target(self, current: str, location: str, what: str) -> str:
        if len(location) > 8192:
            raise RedirectRefused(f"{what}: the registry sent an oversized redirect location")
        target = urljoin(current, location.strip()).split("#", 1)[0]
        self.check_url_allowed(target, f"{what}: a redirect")
        if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
            raise RedirectRefused(
                f"{what}: the registry redirected from https to plain http "
                f"({host_of(target)}); refusing the downgrade"
            )
        return target

    def _read(
        self,
        *,
        response: requests.Response,
        method: str,
        url: str,
        body_limit: int,
        what: str,
        deadline: Deadline,
    ) -> HttpResponse:
        status = response.status_code
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(response.headers)
        if method == "HEAD" or status in (204, 304):
            body = b""
        else:
            limit = body_limit if 200 <= status < 300 else ERROR_BODY_LIMIT
            body = self._read_body(response, headers, limit, what, 200 <= status < 300)
        if deadline.expired:  # a shut-down socket can look like a clean end of body
            raise self._deadline_error(url, what)
        log.debug("oci.http.response", url=safe_url(url), status=status, size=len(body))
        return HttpResponse(status=status, headers=headers, body=body, url=url)

    @staticmethod
    def _read_body(
        response: requests.Response,
        headers: Mapping[str, str],
        limit: int,
        what: str,
        strict: bool,
    ) -> bytes:
        length = headers.get("Content-Length", "").strip()
        encoding = headers.get("Content-Encoding", "")
        if strict and length.isdigit() and not encoding and int(length) > limit:
            raise ResponseTooLarge(
                f"{what} is {int(length)} bytes, larger than the {limit} bytes allowed (its "
                "declared size or the configured cap)"
            )
        try:
            decoder = _BoundedDecoder(encoding, limit, what)
        except InvalidResponse:
            if strict:
                raise
            return b""
        chunks: list[bytes] = []
        try:
            for chunk in _stream(response):
                chunks.append(decoder.feed(chunk))
            chunks.append(decoder.finish())
        except (ResponseTooLarge, InvalidResponse):
            if strict:
                raise
        return b"".join(chunks)

    def _deadline_error(self, url: str, what: str) -> RegistryUnavailable:
        return RegistryUnavailable(
            f"{what} from {host_of(url)} did not complete within the "
            f"{self._settings.request_deadline:g} s request deadline"
        )

    def _classify(self, exc: BaseException, url: str, what: str, deadline: Deadline) -> HookdError:
        host = host_of(url)
        if deadline.expired:
            return self._deadline_error(url, what)
        text = repr(exc)
        if isinstance(exc, requests.exceptions.SSLError) or "SSL" in type(exc).__name__:
            if any(marker in text for marker in _TLS_CONFIG_MARKERS):
                return TLSFailure(
                    f"TLS with {host} failed (certificate not trusted, name mismatch or not a "
                    "TLS server); set verify_tls to a CA bundle, or list the registry in "
                    "plain_http_registries if it only speaks HTTP"
                )
            return RegistryUnavailable(f"TLS connection to {host} failed while fetching {what}")
        if isinstance(exc, OSError) and "CA certificate bundle" in text:
            return TLSFailure("the CA bundle configured in verify_tls cannot be read")
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader)):
            return InvalidResponse(f"{what}: request to {host} could not be built")
        if isinstance(
            exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
        ):
            return RegistryUnavailable(f"timed out talking to {host} while fetching {what}")
        return RegistryUnavailable(f"connection to {host} failed while fetching {what}")


_TLS_CONFIG_MARKERS = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "WRONG_VERSION_NUMBER",
    "Hostname mismatch",
    "doesn't match",
)


def _stream(response: requests.Response) -> Iterator[bytes]:
    raw = response.raw
    yield from raw.stream(_CHUNK, decode_content=False)
