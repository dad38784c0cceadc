"""The HTTP front door: ``POST /RPC2`` with the headers and bodies oned's Abyss sends.

Recorded oned 6.8.3 responses (``shared/opennebula-recorded/xmlrpc/index.json``) carry
``HTTP/1.1 200 OK`` and the headers ``Content-type: text/xml; charset=utf-8``,
``Content-length``, ``Connection: close``, ``Date: <RFC 1123, "UTC">`` and
``Server: Xmlrpc-c_Abyss/1.33.14``, in that order; the connection is closed after each
answer. Faults are HTTP 200 too.

``one.*`` calls go to :class:`hookd.testing.oned.Oned` after the fault plan had its say
(latency, hang, HTTP 500, closed connection, injected failure arrays); ``sim.*`` calls go
to the control namespace. The server is multi-threaded and binds loopback only.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hookd.testing.faults import FaultPlan
from hookd.testing.netutil import loopback_host_port
from hookd.testing.oned import Oned
from hookd.testing.xmlrpc_protocol import (
    FAULT_INTERNAL,
    FAULT_NO_SUCH_METHOD,
    XmlRpcFault,
    encode_fault,
    encode_response,
    parse_call,
)

SERVER_HEADER = "Xmlrpc-c_Abyss/1.33.14"
LOG = logging.getLogger("hookd.testing")

SimMethod = Callable[..., Any]


def http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 front: RpcServer) -> None:
        self.front = front
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, reason: str, body: bytes) -> None:
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-type: text/xml; charset=utf-8\r\n"
            f"Content-length: {len(body)}\r\n"
            "Connection: close\r\n"
            f"Date: {http_date()}\r\n"
            f"Server: {SERVER_HEADER}\r\n\r\n"
        )
        try:
            self.wfile.write(head.encode("ascii") + body)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self._send(405, "Method Not Allowed", b"")

    def do_POST(self) -> None:
        front = self.server.front
        if self.path != "/RPC2":
            self._send(404, "Not Found", b"")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            method, params = parse_call(body)
        except XmlRpcFault as fault:
            self._send(200, "OK", encode_fault(fault.code, fault.message))
            return
        if method.startswith("sim."):
            self._send(200, "OK", front.run_sim(method, params))
            return
        faults = front.faults
        faults.count(method)
        delay = faults.latency_for(method)
        if delay > 0:
            time.sleep(delay)
        failure = faults.take_failure(method)
        if failure is not None:
            if failure.mode == "timeout":
                time.sleep(failure.seconds)
            elif failure.mode == "http500":
                self._send(500, "Internal Server Error", b"")
                return
            elif failure.mode == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        injected = failure if failure is not None and failure.mode in ("locked", "error") else None
        try:
            result = front.oned.execute(method, params, injected)
            payload = encode_response(result)
        except XmlRpcFault as fault:
            payload = encode_fault(fault.code, fault.message)
        except Exception as exc:  # xmlrpc-c answers -500 for a thrown error
            LOG.exception("simulator failed on %s", method)
            payload = encode_fault(FAULT_INTERNAL, f"Internal error: {exc}")
        self._send(200, "OK", payload)


class RpcServer:
    """Threaded XML-RPC server for ``one.*`` and ``sim.*`` on a loopback address."""

    def __init__(self, bind: str, oned: Oned, faults: FaultPlan) -> None:
        self._address = loopback_host_port(bind)
        self.oned = oned
        self.faults = faults
        self.sim_methods: dict[str, SimMethod] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}/RPC2"

    def start(self) -> None:
        self._server = _Server(self._address, _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="sim-xmlrpc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run_sim(self, method: str, params: list[Any]) -> bytes:
        handler = self.sim_methods.get(method)
        if handler is None:
            return encode_fault(FAULT_NO_SUCH_METHOD, f"Method '{method}' not defined")
        try:
            return encode_response(handler(*params))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            return encode_fault(FAULT_INTERNAL, f"{type(exc).__name__}: {exc}")
