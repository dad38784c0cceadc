"""HTTP for registries, on :mod:`hookd.http`: a deadline per logical request, bounded bodies
and redirects followed by hand. Everything a registry sends is untrusted:

* **Deadline.** Each request, its redirects and its body included, completes within
  ``request_deadline``: every hop gets what is left of it.
* **Bounded bodies.** Bodies are streamed and abandoned as soon as they exceed the cap (a
  larger ``Content-Length`` is refused before reading). We ask for ``identity`` encoding and
  decode gzip/deflate ourselves with a bounded decompressor, so a compression bomb cannot grow.
* **Redirects** are followed up to ``max_redirects``: a revisited URL is a loop, an https→http
  downgrade is refused, plain HTTP is only allowed to ``plain_http_registries``, and
  ``Authorization`` is dropped for good as soon as the origin (scheme, host, port) changes.
* **Authorization** is exactly what the caller passes (no ``~/.netrc``, no session defaults).
* **Proxies** come from the environment, read when the client is made; ``verify_tls: true``
  trusts the system store, or the bundle named by ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``
  (which hookd honoured when it ran on requests).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import structlog

from handlers.errors import HookdError
from hookd.http import (
    CABundleUnreadable,
    ConnectTimeout,
    HttpClient,
    HttpError,
    HttpOptions,
    InvalidRequest,
    NotTLS,
    Proxies,
    Stream,
    TimedOut,
    TLSFailed,
    TLSVerifyFailed,
)
from hookd.oci.errors import (
    InvalidResponse,
    RedirectRefused,
    RegistryUnavailable,
    ResponseTooLarge,
    TLSFailure,
)
from hookd.oci.settings import RegistrySettings

log = structlog.get_logger(__name__)

ERROR_BODY_LIMIT = 64 * 1024  # enough for a registry's {"errors": [...]} document
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


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


def _read_decoded(response: Stream, encoding: str, limit: int, what: str,
                  chunks: list[bytes]) -> None:
    """Append the body to ``chunks``, decoded (identity, gzip or deflate), up to ``limit``
    bytes: more is :class:`ResponseTooLarge`, however well it compresses. (Appended as read,
    so that an error answer keeps what came before a failure.)"""
    encoding = encoding.strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise InvalidResponse(f"{what} came with an unsupported Content-Encoding")
    size = 0
    for data in response:
        chunk = data
        if decoder is not None:
            try:  # at most one byte past the cap: then it fails, so nothing is left to flush
                chunk = decoder.decompress(data, limit - size + 1)
            except zlib.error:
                raise InvalidResponse(f"{what} has a corrupt compressed body") from None
        size += len(chunk)
        if size > limit or (decoder is not None and decoder.unconsumed_tail):
            raise ResponseTooLarge(f"{what} is larger than the {limit} bytes allowed (its "
                                   "declared size or the configured cap)")
        chunks.append(chunk)


# --------------------------------------------------------------------------------------------
# Transport


class Transport:
    """Sends registry requests under the rules above. Thread-safe.

    ``proxies``: None reads them from the environment now; :data:`hookd.http.DIRECT` uses none.
    """

    def __init__(self, settings: RegistrySettings, proxies: Proxies | None = None) -> None:
        self._settings = settings
        verify = settings.verify_tls
        if verify is True:  # a bundle named for requests still applies
            env = os.environ
            verify = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
        self._http = HttpClient(HttpOptions(
            connect_timeout=settings.connect_timeout, deadline=settings.request_deadline,
            idle_timeout=settings.read_timeout, verify=verify,
            proxies=Proxies.from_environment() if proxies is None else proxies))

    def close(self) -> None:
        self._http.close()

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

    def request(self, method: str, url: str, *, headers: Mapping[str, str],
                authorization: str | None, body_limit: int, what: str) -> HttpResponse:
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
        visited = {url}
        current = url
        expires = time.monotonic() + settings.request_deadline
        for _hop in range(settings.max_redirects + 1):
            if authorization is not None and _origin(current) != first_origin:
                authorization = None  # never forwarded to another origin, nor back
            remaining = expires - time.monotonic()  # hookd.http refuses to start at <= 0
            hop_headers = {"Accept-Encoding": "identity", **headers}
            if authorization is not None:
                hop_headers["Authorization"] = authorization
            log.debug("oci.http.request", method=method, url=safe_url(current))
            try:
                with self._http.stream(method, current, headers=hop_headers,
                                       deadline=remaining) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECT_STATUSES and location:
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
                    return self._read(response, method, current, body_limit, what)
            except HttpError as exc:
                raise self._classify(exc, current, what) from None
        raise RedirectRefused(
            f"{what}: the registry redirected more than {settings.max_redirects} times"
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

    @staticmethod
    def _read(response: Stream, method: str, url: str, body_limit: int,
              what: str) -> HttpResponse:
        """The answer with its body: a 2xx body up to ``body_limit`` (beyond is an error), an
        error body up to :data:`ERROR_BODY_LIMIT` (the rest is dropped)."""
        status, headers = response.status, response.headers
        strict = 200 <= status < 300
        limit = body_limit if strict else ERROR_BODY_LIMIT
        length = headers.get("Content-Length", "").strip()
        encoding = headers.get("Content-Encoding", "")
        chunks: list[bytes] = []
        if method == "HEAD" or status in (204, 304):
            pass
        elif strict and length.isdigit() and not encoding and int(length) > limit:
            raise ResponseTooLarge(
                f"{what} is {int(length)} bytes, larger than the {limit} bytes allowed (its "
                "declared size or the configured cap)"
            )
        else:
            try:
                _read_decoded(response, encoding, limit, what, chunks)
            except (ResponseTooLarge, InvalidResponse):
                if strict:
                    raise
        body = b"".join(chunks)
        log.debug("oci.http.response", url=safe_url(url), status=status, size=len(body))
        return HttpResponse(status=status, headers=headers, body=body, url=url)

    def _classify(self, exc: HttpError, url: str, what: str) -> HookdError:
        host = host_of(url)
        if isinstance(exc, TimedOut) and not exc.idle:
            return RegistryUnavailable(
                f"{what} from {host} did not complete within the "
                f"{self._settings.request_deadline:g} s request deadline"
            )
        if isinstance(exc, (TLSVerifyFailed, NotTLS)):
            return TLSFailure(
                f"TLS with {host} failed (certificate not trusted, name mismatch or not a "
                "TLS server); set verify_tls to a CA bundle, or list the registry in "
                "plain_http_registries if it only speaks HTTP"
            )
        if isinstance(exc, TLSFailed):
            return RegistryUnavailable(f"TLS connection to {host} failed while fetching {what}")
        if isinstance(exc, CABundleUnreadable):
            return TLSFailure("the CA bundle configured in verify_tls cannot be read")
        if isinstance(exc, InvalidRequest):
            return InvalidResponse(f"{what}: request to {host} could not be built")
        if isinstance(exc, (TimedOut, ConnectTimeout)):
            return RegistryUnavailable(f"timed out talking to {host} while fetching {what}")
        return RegistryUnavailable(f"connection to {host} failed while fetching {what}")
