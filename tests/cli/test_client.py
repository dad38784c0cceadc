"""hookd's XML-RPC client: real timeouts, typed errors, TLS options (against real sockets)."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.errors import PermanentError, TransientError
from hookd.client import (
    AuthenticationError,
    ClientOptions,
    LockedError,
    NotFound,
    OneClient,
    _loads,
)
from hookd.testing.simulator import Simulator

pytestmark = [pytest.mark.integration]


def client(sim: Simulator, session: str | None = None, read: float = 1.0) -> OneClient:
    return OneClient(sim.xmlrpc_url, session or sim.session,
                     ClientOptions(connect_timeout=1.0, read_timeout=read))


def test_success_and_typed_oned_errors(simulator: Simulator) -> None:
    c = client(simulator)
    assert c.version() == "6.8.3"
    with pytest.raises(NotFound) as missing:
        c.image(99999)
    assert missing.value.code == 0x400
    with pytest.raises(AuthenticationError):
        client(simulator, "oneadmin:wrong").version()
    simulator.controls.lock("image", simulator.seed_info.images["kernel-kvm"])
    with pytest.raises(LockedError):
        c.update_image(simulator.seed_info.images["kernel-kvm"], "<TEMPLATE><A>1</A></TEMPLATE>")
    with pytest.raises(PermanentError):  # oned's template parser refuses it (0x2000)
        c.call("template.update", 0, "A=[B=1", 1)


def test_a_hung_oned_times_out_instead_of_blocking(simulator: Simulator) -> None:
    simulator.controls.fail_next("one.system.version", "timeout", 1, seconds=3.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"did not answer one\.system\.version within 0\.5 s"):
        client(simulator, read=0.5).version()
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("mode", ["http500", "close"])
def test_server_failures_are_transient(simulator: Simulator, mode: str) -> None:
    simulator.controls.fail_next("one.system.version", mode, 2)
    with pytest.raises(TransientError):
        client(simulator).version()


def test_nothing_listening_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OneClient(f"http://127.0.0.1:{port}/RPC2", "a:b", ClientOptions(connect_timeout=0.5))
    with pytest.raises(TransientError, match="cannot reach oned"):
        c.version()


def test_wrong_path_is_permanent(simulator: Simulator) -> None:
    c = OneClient(simulator.xmlrpc_url.replace("/RPC2", "/nope"), simulator.session)
    with pytest.raises(PermanentError, match="HTTP 404"):
        c.version()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = (b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
                    b"<value><boolean>1</boolean></value><value><string>6.8.3</string></value>"
                    b"<value><i4>0</i4></value></data></array></value></param></params>"
                    b"</methodResponse>")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/RPC2", cert
    server.shutdown()
    server.server_close()


def test_tls_is_verified_and_can_use_a_ca_bundle(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    with pytest.raises(PermanentError, match="TLS verification"):
        OneClient(url, "a:b").version()
    assert OneClient(url, "a:b", ClientOptions(tls_verify=str(cert))).version() == "6.8.3"
    assert OneClient(url, "a:b", ClientOptions(tls_verify=False)).version() == "6.8.3"


@pytest.mark.parametrize("page_size", [2, 3, 2000])
def test_pools_are_read_page_by_page_as_a_stream(simulator: Simulator, page_size: int) -> None:
    c = OneClient(simulator.xmlrpc_url, simulator.session, ClientOptions(page_size=page_size))
    made = [int(c.call("template.allocate", f'NAME="t{i}"\nCPU="1"\nMEMORY="64"'))
            for i in range(5)]
    whole = c._xml("imagepool.info", -2, -1, -1)
    expected = [int(e.findtext("ID") or -1) for e in whole.iter("IMAGE")]
    assert [image.id for image in c.iter_images()] == expected
    templates = [int(e.findtext("ID") or -1) for e in c.iter_template_elements()]
    assert len(templates) == len(set(templates)) and set(made) <= set(templates)


def test_a_failed_pool_read_is_a_typed_error(simulator: Simulator) -> None:
    with pytest.raises(AuthenticationError):
        list(client(simulator, "oneadmin:wrong").iter_images())
    simulator.controls.fail_next("one.templatepool.info", "http500", 1)
    with pytest.raises(TransientError, match="HTTP 500"):
        list(client(simulator).iter_template_elements())
    simulator.controls.fail_next("one.imagepool.info", "timeout", 1, seconds=3.0)
    with pytest.raises(TransientError, match=r"did not answer one\.imagepool\.info"):
        list(client(simulator, read=0.5).iter_images())


@pytest.fixture
def dripping_oned() -> Iterator[str]:
    """An XML-RPC endpoint that sends its answer one byte every 50 ms: never silent for long,
    never done."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(400):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/RPC2"
    server.shutdown()
    server.server_close()


def test_a_dripping_oned_is_cut_at_the_timeout(dripping_oned: str) -> None:
    """``timeout`` bounds the whole call, not each read: a byte every 50 ms does not keep a
    call (nor a pool page) alive."""
    c = OneClient(dripping_oned, "a:b", ClientOptions(connect_timeout=1.0, read_timeout=1.0))
    for call in (c.version, lambda: list(c.iter_images())):
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"did not answer one\.\w+\.\w+ within 1 s"):
            call()
        assert time.monotonic() - started < 3


# -- answers are read exactly as xmlrpc.client.loads reads them ------------------------------
_XMLRPC_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**31, 2**31 - 1)
    | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=200)
    | st.builds(lambda n: "<T><A><![CDATA[" + "&<>" * n + "]]></A></T>", st.integers(0, 500)),
    lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(_XMLRPC_VALUES)
def test_answers_parse_as_the_standard_library_parses_them(value: Any) -> None:
    body = xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()
    assert _loads(body) == xmlrpc.client.loads(body)[0][0]


def test_a_fault_and_a_truncated_answer_fail_as_with_the_standard_library() -> None:
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(1, "nope"), methodresponse=True).encode()
    with pytest.raises(xmlrpc.client.Fault):
        _loads(fault)
    body = xmlrpc.client.dumps(([True, "x" * 100, 0],), methodresponse=True).encode()
    with pytest.raises(ExpatError):
        _loads(body[:-30])
