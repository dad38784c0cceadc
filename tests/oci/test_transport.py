"""Registry answers in a Content-Encoding hookd did not ask for (it asks for ``identity``):
gzip and deflate are decoded within the cap, a compression bomb is cut, anything else is
refused for a 2xx answer and dropped for an error answer."""

from __future__ import annotations

import gzip
import http.server
import threading
import zlib
from collections.abc import Iterator

import pytest

from hookd.http import DIRECT
from hookd.oci import InvalidResponse, RegistrySettings, ResponseTooLarge
from hookd.oci.transport import Transport

pytestmark = [pytest.mark.integration]

DOCUMENT = b'{"schemaVersion": 2, "note": "' + b"x" * 5000 + b'"}'
ERRORS = b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}'
ROUTES: dict[str, tuple[int, str, bytes]] = {
    "/gzip": (200, "gzip", gzip.compress(DOCUMENT)),
    "/deflate": (200, "deflate", zlib.compress(DOCUMENT)),
    "/bomb": (200, "gzip", gzip.compress(b"\0" * (8 * 1024 * 1024))),
    "/corrupt": (200, "gzip", b"this is not gzip at all"),
    "/brotli": (200, "br", b"\x0b\x02\x80{}\x03"),
    "/error-gzip": (404, "gzip", gzip.compress(ERRORS)),
    "/error-brotli": (404, "br", b"\x0b\x02\x80{}\x03"),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Accept-Encoding"))
        status, encoding, body = ROUTES[self.path]
        self.send_response(status)
        self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(base: str, path: str) -> tuple[int, bytes, str | None]:
    settings = RegistrySettings(plain_http_registries=frozenset({base.removeprefix("http://")}))
    transport = Transport(settings, DIRECT)
    try:
        response = transport.request("GET", base + path, headers={}, authorization=None,
                                     body_limit=1024 * 1024, what="the test document")
    finally:
        transport.close()
    return response.status, response.body, response.error_code


def test_gzip_and_deflate_are_decoded(base: str) -> None:
    assert get(base, "/gzip")[:2] == (200, DOCUMENT)
    assert get(base, "/deflate")[:2] == (200, DOCUMENT)
    assert set(_Handler.seen) == {"identity"}


def test_a_compression_bomb_is_cut_at_the_cap(base: str) -> None:
    with pytest.raises(ResponseTooLarge, match="larger than the 1048576 bytes allowed"):
        get(base, "/bomb")


@pytest.mark.parametrize(("path", "reason"), [("/corrupt", "corrupt compressed body"),
                                              ("/brotli", "unsupported Content-Encoding")])
def test_undecodable_answers_are_refused(base: str, path: str, reason: str) -> None:
    with pytest.raises(InvalidResponse, match=reason):
        get(base, path)


def test_error_answers_are_decoded_or_dropped(base: str) -> None:
    assert get(base, "/error-gzip") == (404, ERRORS, "MANIFEST_UNKNOWN")
    assert get(base, "/error-brotli") == (404, b"", None)
