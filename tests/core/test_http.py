"""hookd.http against loopback servers: deadline, connect timeout, body cap, streams, proxies
from the environment, unix socket, TLS (CA bundle, system store, off), no redirects."""

from __future__ import annotations

import http.server
import os
import select
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.errors import PermanentError, TransientError
from hookd.http import (
    DIRECT,
    BodyTooLarge,
    BrokenResponse,
    CABundleUnreadable,
    ConnectFailed,
    ConnectTimeout,
    HttpClient,
    HttpOptions,
    InvalidRequest,
    NotTLS,
    Proxies,
    TimedOut,
    TLSVerifyFailed,
)
from tests._require import require_program

pytestmark = [pytest.mark.integration]

MiB = 1024 * 1024
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


# -- servers -----------------------------------------------------------------------------------
def _send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
          headers: tuple[tuple[str, str], ...] = ()) -> None:
    h.send_response(status)
    for name, value in headers:
        h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _drip(h: http.server.BaseHTTPRequestHandler, data: bytes, interval: float) -> None:
    for i in range(len(data)):
        try:
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
        except OSError:
            return
        time.sleep(interval)


def _drip_body(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "200")
    h.end_headers()
    h.wfile.flush()
    _drip(h, b"x" * 200, 0.05)


def _drip_head(h: http.server.BaseHTTPRequestHandler) -> None:
    _drip(h, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200 + b"\r\n\r\n", 0.05)


def _chunked(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    piece = b"c" * 65536
    try:
        for _ in range(32):  # 2 MiB
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass


def _echo(h: http.server.BaseHTTPRequestHandler) -> None:
    body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
    _send(h, 200, body, (("X-Expect", h.headers.get("Expect", "-")),))


def _short(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100")
    h.end_headers()
    h.wfile.write(b"only this")
    h.close_connection = True


def _silent(h: http.server.BaseHTTPRequestHandler) -> None:
    time.sleep(3)


ROUTES: dict[str, Route] = {
    "/hello": lambda h: _send(h, 200, b"hello", (("X-Twice", "a"), ("x-twice", "b"))),
    "/big": lambda h: _send(h, 200, b"b" * (2 * MiB)),
    "/exact": lambda h: _send(h, 200, b"e" * 1000),
    "/chunked": _chunked,
    "/drip-body": _drip_body,
    "/drip-head": _drip_head,
    "/silent": _silent,
    "/echo": _echo,
    "/redirect": lambda h: _send(h, 302, b"", (("Location", "/hello"),)),
    "/short": _short,
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def _route(self) -> None:
        self.server.log.append((self.command, self.path, dict(self.headers.items())))
        route = ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            _send(self, 404, b"no such path")
        else:
            route(self)

    do_GET = do_POST = do_HEAD = _route

    def log_message(self, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client gave up (deadline, cap): expected here
            pass


class _TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.context = context

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.log: list[tuple[str, str, dict[str, str]]] = []


class _UnixHandler(_Handler):
    def address_string(self) -> str:
        return "unix"


def _serve(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[_TCPServer]:
    srv = _TCPServer()
    yield from (srv for _ in _serve(srv))


def url(srv: _TCPServer, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.server_address[1]}{path}"


# -- basics --------------------------------------------------------------------------------------
def test_fetch_post_headers_and_no_expect(server: _TCPServer) -> None:
    with HttpClient() as client:
        answer = client.fetch("GET", url(server, "/hello"))
        assert (answer.status, answer.body) == (200, b"hello")
        assert answer.headers["x-twice"] == "a, b" and answer.headers.get("X-TWICE") == "a, b"
        body = os.urandom(2 * MiB)  # large enough that libcurl would send Expect: 100-continue
        echoed = client.fetch("POST", url(server, "/echo"), body=body,
                              headers={"Content-Type": "text/xml"})
        # no Expect header: libcurl would otherwise wait a second for a 100 that never comes
        assert echoed.body == body and echoed.headers["X-Expect"] == "-"
    method, path, headers = server.log[0]
    assert (method, path) == ("GET", "/hello")
    assert headers["User-Agent"].startswith("hookd/")
    assert "Authorization" not in headers and "Accept-Encoding" not in headers


def test_redirects_are_returned_not_followed(server: _TCPServer) -> None:
    with HttpClient() as client:
        answer = client.fetch("GET", url(server, "/redirect"))
        with client.stream("GET", url(server, "/redirect")) as stream:
            assert stream.status == 302 and stream.read() == b""
    assert answer.status == 302 and answer.headers["Location"] == "/hello"
    assert [p for _, p, _ in server.log] == ["/redirect", "/redirect"]


def test_invalid_requests_are_refused_before_sending(server: _TCPServer) -> None:
    with HttpClient() as client:
        for target in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1/"):
            with pytest.raises(InvalidRequest):
                client.fetch("GET", target)
        for name, value in (("X-A", "1\r\nX-Injected: 1"), ("Bad Name", "1"), ("X:Y", "1")):
            with pytest.raises(InvalidRequest) as caught:
                client.fetch("GET", url(server, "/hello"), headers={name: value})
            assert isinstance(caught.value, PermanentError)
    assert server.log == []


def test_a_short_body_is_a_broken_response(server: _TCPServer) -> None:
    with HttpClient() as client:
        with pytest.raises(BrokenResponse) as caught:
            client.fetch("GET", url(server, "/short"))
        assert isinstance(caught.value, TransientError)
        with pytest.raises(BrokenResponse), client.stream("GET", url(server, "/short")) as s:
            s.read()


def test_netrc_is_never_read(server: _TCPServer, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    with HttpClient() as client:
        assert client.fetch("GET", url(server, "/hello")).status == 200
    assert "Authorization" not in server.log[0][2]


# -- deadline, timeouts ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/drip-body", "/drip-head"])
def test_a_dripping_server_is_cut_at_the_deadline(server: _TCPServer, path: str) -> None:
    """One byte every 50 ms for 10 s: no silence is long enough for a read timeout; only
    the whole-request deadline ends it."""
    with HttpClient(HttpOptions(deadline=1.0, idle_timeout=0.5)) as client:
        started = time.monotonic()
        with pytest.raises(TimedOut) as caught:
            client.fetch("GET", url(server, path))
        assert 0.9 < time.monotonic() - started < 3
        assert isinstance(caught.value, TransientError) and not caught.value.idle
        started = time.monotonic()
        with pytest.raises(TimedOut), client.stream("GET", url(server, path)) as stream:
            stream.read()
        assert 0.9 < time.monotonic() - started < 3


def test_idle_timeout_of_a_stream(server: _TCPServer) -> None:
    with HttpClient(HttpOptions(deadline=10, idle_timeout=0.5)) as client:
        started = time.monotonic()
        with pytest.raises(TimedOut) as caught:
            client.stream("GET", url(server, "/silent"))
        assert caught.value.idle and time.monotonic() - started < 2


def test_a_slow_consumer_does_not_spend_the_stream_deadline(server: _TCPServer) -> None:
    """The deadline counts the time spent waiting on the network, not the caller's work
    between chunks (a sweep works on each pool object as it arrives)."""
    with HttpClient(HttpOptions(deadline=0.5)) as client:
        started = time.monotonic()
        with client.stream("GET", url(server, "/big")) as stream:
            size = 0
            for chunk in stream:
                size += len(chunk)
                assert len(chunk) <= 300 * 1024
                time.sleep(0.1)
        assert size == 2 * MiB and time.monotonic() - started > 0.6


def test_connection_refused_and_connect_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with HttpClient(HttpOptions(connect_timeout=0.5)) as client:
        with pytest.raises(ConnectFailed) as refused:
            client.fetch("GET", f"http://127.0.0.1:{closed}/")
        assert isinstance(refused.value, TransientError)
        with pytest.raises(ConnectFailed):
            client.stream("GET", f"http://127.0.0.1:{closed}/")
    # A listening socket whose accept queue is full: the kernel drops further SYNs.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
            fillers.append(filler)
        time.sleep(0.1)
        target = f"http://127.0.0.1:{full.getsockname()[1]}/"
        with HttpClient(HttpOptions(connect_timeout=0.5, deadline=5)) as client:
            for call in (lambda: client.fetch("GET", target),
                         lambda: client.stream("GET", target)):
                started = time.monotonic()
                with pytest.raises(ConnectTimeout):
                    call()
                assert time.monotonic() - started < 2
    finally:
        for filler in fillers:
            filler.close()
        full.close()


# -- body cap ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/big", "/chunked"])
def test_body_cap(server: _TCPServer, path: str) -> None:
    with HttpClient(HttpOptions(max_body=MiB)) as client:
        with pytest.raises(BodyTooLarge) as caught:
            client.fetch("GET", url(server, path))
        assert caught.value.limit == MiB and isinstance(caught.value, PermanentError)
        received = 0
        with pytest.raises(BodyTooLarge), client.stream("GET", url(server, path)) as stream:
            for chunk in stream:
                received += len(chunk)
        assert received <= MiB
        if path == "/big":  # refused on its Content-Length: nothing of the body was read
            assert received == 0
    with HttpClient(HttpOptions(max_body=1000)) as client:
        assert client.fetch("GET", url(server, "/exact")).body == b"e" * 1000


# -- streams and handles -----------------------------------------------------------------------
def test_stream_chunks_early_close_and_nested_calls(server: _TCPServer) -> None:
    with HttpClient() as client:
        with client.stream("GET", url(server, "/chunked")) as stream:
            assert stream.status == 200 and stream.headers["Transfer-Encoding"] == "chunked"
            seen = 0
            for chunk in stream:
                seen += len(chunk)
                # a call made on the same thread while the stream is open gets its own handle
                assert client.fetch("GET", url(server, "/hello")).body == b"hello"
            assert seen == 2 * MiB
        with client.stream("GET", url(server, "/big")) as stream:
            next(iter(stream))  # then abandoned
        assert client.fetch("GET", url(server, "/hello")).body == b"hello"
        with client.stream("HEAD", url(server, "/hello")) as stream:
            assert stream.status == 200 and stream.read() == b""


def test_threads_use_their_own_handles(server: _TCPServer) -> None:
    errors: list[Exception] = []
    with HttpClient() as client:
        def work() -> None:
            try:
                for _ in range(20):
                    assert client.fetch("GET", url(server, "/hello")).body == b"hello"
                    with client.stream("GET", url(server, "/exact")) as stream:
                        assert stream.read() == b"e" * 1000
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []


# -- unix socket -------------------------------------------------------------------------------
def test_unix_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # never used for a unix socket
    path = str(tmp_path / "engine.sock")
    srv = _UnixServer(path)
    srv.RequestHandlerClass = _UnixHandler
    for _ in _serve(srv):
        options = HttpOptions(unix_socket=path, max_body=MiB, deadline=1.0)
        with HttpClient(options) as client:
            answer = client.fetch("GET", "http://docker/hello")
            assert answer.body == b"hello"
            with client.stream("GET", "http://docker/exact") as stream:
                assert stream.read() == b"e" * 1000
            with pytest.raises(BodyTooLarge):
                client.fetch("GET", "http://docker/big")
            with pytest.raises(TimedOut):
                client.fetch("GET", "http://docker/drip-body")
        assert srv.log[0][2]["Host"] == "docker"
    absent = HttpOptions(unix_socket=str(tmp_path / "absent.sock"))
    with HttpClient(absent) as client, pytest.raises(ConnectFailed):
        client.fetch("GET", "http://docker/hello")


# -- proxies ------------------------------------------------------------------------------------
def test_proxies_from_the_environment() -> None:
    env = {"HTTP_PROXY": "http://upper:1", "HTTPS_PROXY": "http://secure:2",
           "NO_PROXY": "localhost,10.0.0.0/8"}
    assert Proxies.from_environment(env) == Proxies(
        http="http://upper:1", https="http://secure:2", no_proxy="localhost,10.0.0.0/8")
    # lower case wins; an empty lower-case variable turns the upper-case one off
    env |= {"http_proxy": "http://lower:3", "https_proxy": "", "no_proxy": "example.com"}
    assert Proxies.from_environment(env) == Proxies(http="http://lower:3", https="",
                                                    no_proxy="example.com")
    assert Proxies.from_environment({"ALL_PROXY": "socks5h://all:4"}) == Proxies(
        http="socks5h://all:4", https="socks5h://all:4")
    assert Proxies.from_environment({}) == DIRECT


class _ForwardProxy(socketserver.ThreadingTCPServer):
    """Answers absolute-form requests itself ("via proxy") and tunnels CONNECT; logs both."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: _ForwardProxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.request.recv(65536)
            if not data:
                return
            head += data
        line = head.split(b"\r\n", 1)[0].decode()
        self.server.log.append(line)
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            body = b"via proxy"
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n%s" % (len(body), body))
            return
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\nX-Proxy: 1\r\n\r\n")
            pair = [self.request, upstream]
            while True:
                readable, _, _ = select.select(pair, [], [], 5)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.request else self.request).sendall(data)


@pytest.fixture
def proxy() -> Iterator[_ForwardProxy]:
    srv = _ForwardProxy()
    yield from (srv for _ in _serve(srv))


def test_proxy_from_the_environment_is_honoured(server: _TCPServer, proxy: _ForwardProxy,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = url(server, "/hello")
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)  # upper case: libcurl alone ignores it
    with HttpClient(HttpOptions(proxies=Proxies.from_environment())) as client:
        assert client.fetch("GET", target).body == b"via proxy"
        with client.stream("GET", target) as stream:
            assert stream.read() == b"via proxy"
    assert proxy.log == [f"GET {target} HTTP/1.1"] * 2 and server.log == []
    for no_proxy in ("127.0.0.1", "127.0.0.0/8", "example.com, 127.0.0.1", "*"):
        monkeypatch.setenv("NO_PROXY", no_proxy)
        with HttpClient(HttpOptions(proxies=Proxies.from_environment())) as client:
            assert client.fetch("GET", target).body == b"hello", no_proxy
    monkeypatch.setenv("NO_PROXY", "example.com")
    with HttpClient(HttpOptions(proxies=Proxies.from_environment())) as client:
        assert client.fetch("GET", target).body == b"via proxy"
    # DIRECT means direct, whatever the environment says (libcurl would read http_proxy)
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.delenv("NO_PROXY")
    with HttpClient(HttpOptions(proxies=DIRECT)) as client:
        assert client.fetch("GET", target).body == b"hello"
    assert len(proxy.log) == 3


# -- TLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A test CA and a server certificate for 127.0.0.1 it signed (openssl CLI)."""
    openssl = require_program("openssl", "openssl")
    d = tmp_path_factory.mktemp("pki")
    files = {n: str(d / f"{n}.pem")
             for n in ("ca", "ca-key", "cert", "key", "csr", "other-ca", "other-ca-key")}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "1", "-subj", "/CN=hookd test CA", "-keyout", files["ca-key"],
        "-out", files["ca"])
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "1", "-subj", "/CN=another CA", "-keyout", files["other-ca-key"],
        "-out", files["other-ca"])
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=127.0.0.1", "-keyout", files["key"], "-out", files["csr"])
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", files["csr"], "-CA", files["ca"], "-CAkey", files["ca-key"],
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", files["cert"])
    return files


@pytest.fixture
def tls_server(pki: dict[str, str]) -> Iterator[_TCPServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])
    srv = _TCPServer(context)
    yield from (srv for _ in _serve(srv))


def test_tls_verification(tls_server: _TCPServer, pki: dict[str, str], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = url(tls_server, "/hello", "https")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with HttpClient() as client, pytest.raises(TLSVerifyFailed) as untrusted:
        client.fetch("GET", target)
    assert isinstance(untrusted.value, PermanentError)
    with HttpClient(HttpOptions(verify=pki["ca"])) as client:
        assert client.fetch("GET", target).body == b"hello"
        with client.stream("GET", target) as stream:
            assert stream.read() == b"hello"
    with HttpClient(HttpOptions(verify=False)) as client:
        assert client.fetch("GET", target).body == b"hello"
    # a bundle is the only trust: another CA's bundle does not verify the server
    with HttpClient(HttpOptions(verify=pki["other-ca"])) as client, \
            pytest.raises(TLSVerifyFailed):
        client.fetch("GET", target)
    with HttpClient(HttpOptions(verify=str(tmp_path / "absent.pem"))) as client, \
            pytest.raises(CABundleUnreadable):
        client.fetch("GET", target)
    # the system store as Python's ssl finds it: SSL_CERT_FILE applies (libcurl ignores it)
    monkeypatch.setenv("SSL_CERT_FILE", pki["ca"])
    with HttpClient() as client:
        assert client.fetch("GET", target).body == b"hello"
    # the name must match: "localhost" is not in the certificate
    with HttpClient(HttpOptions(verify=pki["ca"])) as client, pytest.raises(TLSVerifyFailed):
        client.fetch("GET", target.replace("127.0.0.1", "localhost"))


def test_tls_against_plain_http_and_back(server: _TCPServer, tls_server: _TCPServer) -> None:
    with HttpClient(HttpOptions(verify=False, deadline=3)) as client:
        with pytest.raises(NotTLS) as not_tls:
            client.fetch("GET", url(server, "/hello", "https"))
        assert isinstance(not_tls.value, TransientError)
        with pytest.raises((BrokenResponse, ConnectFailed)):
            client.fetch("GET", url(tls_server, "/hello", "http"))


def test_https_through_a_proxy_tunnel(tls_server: _TCPServer, proxy: _ForwardProxy,
                                      pki: dict[str, str]) -> None:
    target = url(tls_server, "/hello", "https")
    options = HttpOptions(verify=pki["ca"], proxies=Proxies(https=proxy.url))
    with HttpClient(options) as client:
        answer = client.fetch("GET", target)
        assert answer.body == b"hello" and "X-Proxy" not in answer.headers
        with client.stream("GET", target) as stream:
            assert stream.status == 200 and "X-Proxy" not in stream.headers
            assert stream.read() == b"hello"
    port = tls_server.server_address[1]
    assert proxy.log == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"] * 2
