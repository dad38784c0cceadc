"""HTTP for hookd on libcurl (pycurl): XML-RPC to oned, container registries and the Docker
Engine's unix socket. What every request gets (hard deadline, connect and idle timeouts, body
cap, proxies as operators set them, TLS against Python's trust store) is in the README, "The
HTTP client".

Only ``http`` and ``https``; redirects are never followed (the registry client follows them by
hand, with its own rules); no netrc, no cookies, no ``Expect: 100-continue``, no content
decoding (callers that accept compression decode it themselves, bounded). Failures are
:class:`HttpError`, each also a :class:`~handlers.errors.TransientError` or a
:class:`~handlers.errors.PermanentError`; HTTP statuses are returned, never raised.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import pycurl

from handlers.errors import HookdError, PermanentError, TransientError
from hookd import __version__

USER_AGENT = f"hookd/{__version__}"
_BUFFER = 256 * 1024  # libcurl's receive buffer: the largest chunk a stream hands out
_IDLE_HANDLES = 4  # per thread; more are closed when released
# CURLOPT_SUPPRESS_CONNECT_HEADERS (libcurl 7.54), not named by pycurl
_SUPPRESS_CONNECT_HEADERS = getattr(pycurl, "SUPPRESS_CONNECT_HEADERS", 265)


# --------------------------------------------------------------------------------------------
# Errors


class HttpError(HookdError):
    """A request failed before a complete answer arrived."""


class InvalidRequest(HttpError, PermanentError):
    """The request cannot be sent as asked (not http(s), malformed URL or header)."""


class TransferFailed(HttpError, TransientError):
    """The exchange broke off."""


class ConnectFailed(TransferFailed):
    """No answer at all: name not resolved, connection refused or reset, proxy failed, or the
    peer closed the connection before answering."""


class ConnectTimeout(ConnectFailed):
    """The connection (TCP, proxy tunnel, TLS handshake) was not up within the connect
    timeout."""


class BrokenResponse(TransferFailed):
    """The answer is not valid HTTP, or its body was cut short."""


class TimedOut(HttpError, TransientError):
    """The deadline passed (``idle`` False) or the peer went silent for longer than the idle
    timeout (``idle`` True) after the connection was made."""

    def __init__(self, reason: str, *, idle: bool = False) -> None:
        super().__init__(reason)
        self.idle = idle


class TLSFailed(HttpError, TransientError):
    """The TLS handshake failed for another reason than the peer's certificate."""


class NotTLS(TLSFailed):
    """The peer does not speak TLS (typically a plain-HTTP server on an https URL)."""


class TLSVerifyFailed(HttpError, PermanentError):
    """The peer's certificate is not trusted, or does not name the host."""


class CABundleUnreadable(HttpError, PermanentError):
    """The CA bundle to verify with cannot be read."""


class BodyTooLarge(HttpError, PermanentError):
    """The body is larger than ``limit``: its ``Content-Length`` said so (nothing of it was
    read), or it went on past the cap."""

    def __init__(self, reason: str, *, limit: int) -> None:
        super().__init__(reason)
        self.limit = limit


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True, slots=True)
class Proxies:
    """Which proxy each scheme goes through ("" = direct) and the hosts that never do.

    ``no_proxy`` is passed to libcurl as is: comma-separated host names, domains (a leading
    dot is optional and subdomains match), IPv4/IPv6 addresses or CIDR ranges, or ``*``.
    """

    http: str = ""
    https: str = ""
    no_proxy: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Proxies:
        """``http_proxy``/``https_proxy``/``all_proxy``/``no_proxy`` as operators set them: either
        case, lower case first (an empty lower-case variable turns the upper-case one off)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            value = env.get(name)
            return (env.get(name.upper(), "") if value is None else value).strip()

        everything = get("all_proxy")
        return cls(http=get("http_proxy") or everything,
                   https=get("https_proxy") or everything,
                   no_proxy=get("no_proxy"))


DIRECT = Proxies()


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How requests of one :class:`HttpClient` are made (each call may shorten the deadline).

    ``verify``: True (the system trust store), False (no verification) or a CA bundle path
    (only that bundle is trusted). ``idle_timeout``: None or the longest silence tolerated
    (exact for streams; :meth:`HttpClient.fetch` rounds it up to whole seconds).
    ``unix_socket``: connect to this socket instead of the URL's host (the URL still gives
    the ``Host`` header and the path).
    """

    connect_timeout: float = 5.0
    deadline: float = 30.0
    idle_timeout: float | None = None
    max_body: int | None = None
    verify: bool | str = True
    proxies: Proxies = DIRECT
    unix_socket: str | None = None


# --------------------------------------------------------------------------------------------
# Answers


class Headers(Mapping[str, str]):
    """Response headers by lower-case name, looked up in any case. A repeated header's values
    are joined with ``", "`` (as HTTP allows for list-valued headers)."""

    __slots__ = ("_items",)

    def __init__(self, lines: list[bytes] | None = None) -> None:
        items: dict[str, str] = {}
        last: str | None = None
        for raw in lines or ():
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if line[:1] in (" ", "\t") and last is not None:  # obsolete line folding
                items[last] += f" {line.strip()}"
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                continue
            last = name.lower()
            items[last] = f"{items[last]}, {value.strip()}" if last in items else value.strip()
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Response:
    """A complete answer (redirects are not followed)."""

    __slots__ = ("_head", "_headers", "body", "status")

    def __init__(self, status: int, head: list[bytes], body: bytes) -> None:
        self.status = status
        self.body = body
        self._head = head
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """Parsed on first use (XML-RPC answers never look at them)."""
        if self._headers is None:
            self._headers = Headers(_last_head(self._head))
        return self._headers

    def __repr__(self) -> str:
        return f"Response(status={self.status}, {len(self.body)} bytes)"


# --------------------------------------------------------------------------------------------
# Handles


class _Handle:
    """A libcurl easy handle, with the multi handle its streams run in (kept, so that a
    kept-alive connection is reused by the next stream of the same handle)."""

    __slots__ = ("curl", "multi", "prepared")

    def __init__(self) -> None:
        self.curl = pycurl.Curl()
        self.multi: pycurl.CurlMulti | None = None
        # What the options on the handle were set for, when the next fetch may keep them.
        self.prepared: tuple[object, ...] | None = None

    def close(self) -> None:
        if self.multi is not None:
            self.multi.close()
        self.curl.close()


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 token)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls other than tab


def _header_lines(headers: Mapping[str, str], with_body: bool) -> list[str]:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidRequest(f"the request header {name[:40]!r} is not valid")
        # "Name:" with no value removes a header libcurl would add; an empty value is sent
        # as "Name;".
        lines.append(f"{name}: {value}" if value else f"{name};")
    if with_body:
        lines.append("Expect:")  # never wait for a 100 Continue oned and registries do not send
    return lines


class HttpClient:
    """Makes requests with one :class:`HttpOptions`. Thread-safe; :meth:`close` when done
    (handles not closed are closed when collected)."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._closed = False
        self._idle_lists: list[list[_Handle]] = []
        # Python's trust store (SSL_CERT_FILE and SSL_CERT_DIR apply); None: libcurl's default
        paths = ssl.get_default_verify_paths()
        self._trust = (paths.cafile, paths.capath)

    # -- handles ---------------------------------------------------------------------------
    def _acquire(self) -> _Handle:
        idle: list[_Handle] | None = getattr(self._local, "idle", None)
        if idle is None:
            idle = self._local.idle = []
            with self._lock:
                self._idle_lists.append(idle)
        if idle:
            return idle.pop()
        return _Handle()

    def _release(self, handle: _Handle) -> None:
        idle: list[_Handle] = self._local.idle
        if self._closed or len(idle) >= _IDLE_HANDLES:
            handle.close()
        else:
            idle.append(handle)

    def close(self) -> None:
        """Close the idle handles (and their kept-alive connections) of every thread; a
        request in progress closes its handle when it ends."""
        with self._lock:
            self._closed = True
            lists, self._idle_lists = self._idle_lists, []
        for idle in lists:
            while idle:
                try:
                    idle.pop().close()
                except IndexError:  # its thread took it meanwhile
                    break

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- setting up a request --------------------------------------------------------------
    def _prepare(self, handle: _Handle, method: str, url: str, headers: Mapping[str, str],
                 body: bytes | None, deadline: float | None, *, keep: bool) -> float:
        """Set every option of the request on ``handle``; returns the deadline in seconds.

        With ``keep``, a handle whose options were set for the same method, URL, headers
        and connect timeout by the previous fetch keeps them, and only the body is set (this
        saves a third of this layer's CPU per XML-RPC call)."""
        options = self.options
        limit = options.deadline if deadline is None else min(deadline, options.deadline)
        if limit <= 0:
            raise TimedOut("the deadline passed before the request was sent")
        connect_ms = max(1, int(min(options.connect_timeout, limit) * 1000))
        c = handle.curl
        key = (method, url, tuple(headers.items()), body is not None, connect_ms) \
            if keep else None
        if key is not None and key == handle.prepared:
            if body is not None:
                c.setopt(pycurl.POSTFIELDS, body)
            return limit
        handle.prepared = None
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidRequest("only http and https URLs can be requested")
        c.reset()
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        c.setopt(_SUPPRESS_CONNECT_HEADERS, 1)  # a proxy's CONNECT answer is not the answer
        c.setopt(pycurl.CONNECTTIMEOUT_MS, connect_ms)
        c.setopt(pycurl.USERAGENT, USER_AGENT)
        c.setopt(pycurl.HTTPHEADER, _header_lines(headers, body is not None))
        if method == "HEAD":
            c.setopt(pycurl.NOBODY, 1)
        elif method == "POST":
            c.setopt(pycurl.POSTFIELDS, body or b"")
        elif method != "GET":
            c.setopt(pycurl.CUSTOMREQUEST, method)
            if body is not None:
                c.setopt(pycurl.POSTFIELDS, body)
        if options.unix_socket is not None:
            c.setopt(pycurl.UNIX_SOCKET_PATH, options.unix_socket)
            c.setopt(pycurl.PROXY, "")
        else:
            proxy = options.proxies.https if scheme == "https" else options.proxies.http
            c.setopt(pycurl.PROXY, proxy)  # "" = none, whatever the environment says
            if proxy:
                c.setopt(pycurl.NOPROXY, options.proxies.no_proxy)
        if scheme == "https":
            verify = options.verify
            if verify is False:
                c.setopt(pycurl.SSL_VERIFYPEER, 0)
                c.setopt(pycurl.SSL_VERIFYHOST, 0)
            elif verify is True:
                cafile, capath = self._trust
                if cafile:
                    c.setopt(pycurl.CAINFO, cafile)
                if capath:
                    c.setopt(pycurl.CAPATH, capath)
            else:
                c.setopt(pycurl.CAINFO, verify)
                c.unsetopt(pycurl.CAPATH)  # only the bundle is trusted
        if options.max_body is not None:
            c.setopt(pycurl.MAXFILESIZE_LARGE, options.max_body)
        if keep and options.idle_timeout is not None:  # fetch only: streams time it exactly
            c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
            c.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(options.idle_timeout)))
        handle.prepared = key
        return limit

    # -- buffered requests -----------------------------------------------------------------
    def fetch(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
              body: bytes | None = None, deadline: float | None = None) -> Response:
        """Send the request and read the whole answer (up to ``max_body``), all within the
        deadline (the client's, or ``deadline`` when shorter)."""
        handle = self._acquire()
        try:
            c = handle.curl
            limit = self._prepare(handle, method, url, headers or {}, body, deadline, keep=True)
            c.setopt(pycurl.TIMEOUT_MS, max(1, int(limit * 1000)))
            lines: list[bytes] = []
            chunks: list[bytes] = []
            c.setopt(pycurl.HEADERFUNCTION, lines.append)
            c.setopt(pycurl.WRITEFUNCTION, chunks.append)
            started = time.monotonic()
            try:
                c.perform()
            except pycurl.error as exc:
                code, message = exc.args if len(exc.args) == 2 else (-1, str(exc))
                raise classify(c, code, message, elapsed=time.monotonic() - started,
                               limit=limit, max_body=self.options.max_body) from None
            status: int = c.getinfo(pycurl.RESPONSE_CODE)
            return Response(status, lines, b"".join(chunks))
        finally:
            self._release(handle)

    # -- streamed requests -----------------------------------------------------------------
    def stream(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
               body: bytes | None = None, deadline: float | None = None) -> Stream:
        """Send the request and return once the answer's status and headers are read; the
        body is then pulled chunk by chunk. Use as a context manager (or :meth:`Stream.close`):
        closing before the end abandons the transfer."""
        handle = self._acquire()
        try:
            limit = self._prepare(handle, method, url, headers or {}, body, deadline, keep=False)
            stream = Stream(self, handle, limit)
        except BaseException:
            self._release(handle)
            raise
        try:
            stream.start()
        except BaseException:
            stream.close()
            raise
        return stream


def _connected(c: pycurl.Curl) -> bool:
    """Was the connection (TCP, and TLS for https) established?"""
    try:
        if c.getinfo(pycurl.CONNECT_TIME) <= 0:
            return False
        scheme = str(c.getinfo(pycurl.EFFECTIVE_URL) or "").split(":", 1)[0].lower()
        return scheme != "https" or c.getinfo(pycurl.APPCONNECT_TIME) > 0
    except pycurl.error:
        return False


def _last_head(lines: list[bytes]) -> list[bytes]:
    """The header lines of the last response head in ``lines`` (a proxy's CONNECT answer
    and ``100 Continue`` come first), without status line or blank line."""
    start = 0
    for index, line in enumerate(lines):
        if line.startswith(b"HTTP/"):
            start = index + 1
    return [line for line in lines[start:] if line not in (b"\r\n", b"\n")]


def _status_of(line: bytes) -> int:
    parts = line.split(None, 2)
    if len(parts) >= 2 and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return 0


# libcurl error codes (include/curl/curl.h), by pycurl's name where it has one
_CONNECT_CODES = frozenset({
    pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT,
    pycurl.E_GOT_NOTHING,  # closed without a byte of answer
    pycurl.E_SEND_ERROR,
    pycurl.E_RECV_ERROR,  # also a refused proxy tunnel
    97,  # CURLE_PROXY: a SOCKS/HTTPS proxy handshake failed
})
_BROKEN_CODES = frozenset({
    8,  # CURLE_WEIRD_SERVER_REPLY
    pycurl.E_HTTP2,
    92,  # CURLE_HTTP2_STREAM
    pycurl.E_PARTIAL_FILE,  # body shorter than its Content-Length
    pycurl.E_WRITE_ERROR,
    pycurl.E_BAD_CONTENT_ENCODING,
})
_TLS_CODES = frozenset({
    pycurl.E_SSL_CONNECT_ERROR,
    58, 59, 64, 66, 80, 82, 83, 90, 91, 98,  # certificate, cipher, engine, pinning, shutdown...
})
_NOT_TLS_MARKERS = ("wrong version number", "packet length too long", "unknown protocol",
                    "record layer failure")


def classify(c: pycurl.Curl, code: int, message: str, *, elapsed: float, limit: float,
             max_body: int | None) -> HttpError:
    """libcurl's error ``code`` (with its ``message``) on handle ``c`` as an :class:`HttpError`."""
    text = message or pycurl.easy_strerror(code)
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if not _connected(c) and elapsed < limit * 0.95:
            return ConnectTimeout(text)
        return TimedOut(text, idle="too slow" in text.lower() or "less than" in text.lower())
    if code == pycurl.E_FILESIZE_EXCEEDED:
        cap = max_body if max_body is not None else 0
        return BodyTooLarge(f"the body is larger than {cap} bytes", limit=cap)
    if code == pycurl.E_PEER_FAILED_VERIFICATION:
        return TLSVerifyFailed(text)
    if code == pycurl.E_SSL_CACERT_BADFILE:
        return CABundleUnreadable(text)
    if code in _TLS_CODES:
        lowered = text.lower()
        if any(marker in lowered for marker in _NOT_TLS_MARKERS):
            return NotTLS(text)
        return TLSFailed(text)
    if code in (pycurl.E_URL_MALFORMAT, pycurl.E_BAD_FUNCTION_ARGUMENT):
        return InvalidRequest(text)
    if code == pycurl.E_UNSUPPORTED_PROTOCOL:
        if "HTTP/0.9" in text:  # bytes that are not HTTP, e.g. a TLS server's alert
            return BrokenResponse(text)
        return InvalidRequest(text)
    if code in _CONNECT_CODES:
        return ConnectFailed(text)
    if code in _BROKEN_CODES:
        return BrokenResponse(text)
    return TransferFailed(text)


# --------------------------------------------------------------------------------------------
# Streams


class Stream:
    """An answer being read: ``status`` and ``headers`` are known; iterate the body's
    chunks (each at most about 256 KiB). Pull-style on libcurl's multi interface: nothing is read
    from the network while the consumer works on a chunk (libcurl is paused), and that time
    does not count against the deadline or the idle timeout."""

    status: int
    headers: Headers

    def __init__(self, client: HttpClient, handle: _Handle, limit: float) -> None:
        self.status = 0
        self.headers = Headers()
        self._client = client
        self._handle = handle
        self._limit = limit
        self._idle_limit = client.options.idle_timeout
        self._spent = 0.0  # seconds spent waiting on the network
        self._idle = 0.0  # of which since the last bytes arrived
        self._activity = False
        self._head: list[bytes] = []
        self._pending: list[bytes] = []  # libcurl hands out at most 16 KiB at a time
        self._pending_size = 0
        self._paused = False
        self._done = False
        self._error: HttpError | None = None
        self._closed = False
        if handle.multi is None:
            handle.multi = pycurl.CurlMulti()
        self._multi = handle.multi
        self._selector = selectors.DefaultSelector()
        self._fds: dict[int, int] = {}
        self._timer: float | None = None

    # -- libcurl callbacks (never raise) ---------------------------------------------------
    def _on_header(self, line: bytes) -> None:
        self._activity = True
        if line.startswith(b"HTTP/"):
            self._head = [line]
        elif line in (b"\r\n", b"\n"):
            status = _status_of(self._head[0]) if self._head else 0
            if status >= 200:  # not a 100 Continue
                self.status = status
                self.headers = Headers(self._head[1:])
        else:
            self._head.append(line)

    def _on_body(self, chunk: bytes) -> int | None:
        self._activity = True
        if self._pending_size >= _BUFFER:
            self._paused = True
            return pycurl.WRITEFUNC_PAUSE  # handed again once the consumer took the others
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        return None

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        try:
            if self._fds.pop(fd, 0):
                self._selector.unregister(fd)
            events = 0 if what == pycurl.POLL_REMOVE else (
                (selectors.EVENT_READ if what & pycurl.POLL_IN else 0)
                | (selectors.EVENT_WRITE if what & pycurl.POLL_OUT else 0))
            if events:
                self._selector.register(fd, events)
                self._fds[fd] = events
        except (KeyError, ValueError, OSError):  # never raise into libcurl
            self._fds.pop(fd, None)

    def _on_timer(self, timeout_ms: int) -> None:
        self._timer = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    # -- driving ---------------------------------------------------------------------------
    def start(self) -> None:
        handle = self._handle
        c = handle.curl
        c.setopt(pycurl.HEADERFUNCTION, self._on_header)
        c.setopt(pycurl.WRITEFUNCTION, self._on_body)
        c.setopt(pycurl.BUFFERSIZE, _BUFFER)
        multi = self._multi
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.add_handle(c)
        self._pump(lambda: self.status != 0)
        if self._error is not None:
            raise self._error
        if not self.status:  # completed without a final answer
            raise BrokenResponse("the connection ended without an HTTP answer")

    def _pump(self, ready: Callable[[], bool]) -> None:
        """Drive libcurl until ``ready()`` or the transfer ends (its error, if any, goes to
        ``_error``); raises :class:`TimedOut` when the deadline or idle timeout passes."""
        multi = self._multi
        while not self._done and not ready():
            began = time.monotonic()
            wait = self._limit - self._spent
            if self._idle_limit is not None:
                wait = min(wait, self._idle_limit - self._idle)
            if wait <= 0:
                self._expire()
            if self._timer is not None:
                wait = min(wait, max(0.0, self._timer - began))
            self._activity = False
            events = self._selector.select(wait)
            for key, mask in events:
                action = 0
                if mask & selectors.EVENT_READ:
                    action = pycurl.CSELECT_IN
                    self._activity = True  # the peer sent something (a header line may be
                    # incomplete yet: libcurl's callbacks cannot tell)
                if mask & selectors.EVENT_WRITE:
                    action |= pycurl.CSELECT_OUT
                multi.socket_action(int(key.fd), action)
            if self._timer is not None and time.monotonic() >= self._timer:
                self._timer = None
                multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
            self._collect()
            spent = time.monotonic() - began
            self._spent += spent
            self._idle = 0.0 if self._activity else self._idle + spent

    def _collect(self) -> None:
        multi = self._multi
        while True:
            queued, ok, failed = multi.info_read()
            if ok:
                self._done = True
            for c, code, message in failed:
                self._done = True
                self._error = classify(c, code, message, elapsed=self._spent, limit=self._limit,
                                       max_body=self._client.options.max_body)
            if not queued:
                return

    def _expire(self) -> None:
        idle = (self._idle_limit is not None and self._spent < self._limit
                and self._idle >= self._idle_limit)
        seconds = self._idle_limit if idle and self._idle_limit is not None else self._limit
        connected = _connected(self._handle.curl)
        self.close()
        if not connected and not idle and self._spent < self._limit * 0.95:
            raise ConnectTimeout("the connection was not up in time")
        if idle:
            raise TimedOut(f"the peer was silent for {seconds:g} s", idle=True)
        raise TimedOut(f"no complete answer within {seconds:g} s")

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if self._pending:
                chunk = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
                self._pending = []
                self._pending_size = 0
                if self._paused:
                    self._unpause()
                yield chunk
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            if self._closed:
                return
            self._pump(lambda: self._pending_size > 0)

    def _unpause(self) -> None:
        self._paused = False
        if self._done:  # it ended (with an error) while the consumer held a chunk
            return
        try:
            self._handle.curl.pause(pycurl.PAUSE_CONT)
        except pycurl.error as exc:
            self._collect()
            if not self._done:
                self._done = True
                self._error = TransferFailed(f"libcurl could not resume the transfer: {exc}")

    def read(self) -> bytes:
        """The rest of the body."""
        return b"".join(self)

    # -- end -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        handle = self._handle
        with contextlib.suppress(pycurl.error):
            self._multi.remove_handle(handle.curl)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, None)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, None)
        self._selector.close()
        self._pending = []
        self._client._release(handle)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
