"""Shared helpers for the simulator conformance tests."""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import selectors
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq

from hookd.testing import xmltree
from tests.shared_data import require_recorded, require_xsd

XSD_NAMESPACE = "http://opennebula.org/XMLSchema"
# Probe events synchronise subscribers: a failing one.template.unlock(-1) publishes
# "EVENT API one.template.unlock 0", a call no test otherwise makes.
PROBE_PREFIX = b"EVENT API one.template.unlock 0"
SUBSCRIBER_SCRIPT = Path(__file__).with_name("sub_recorder.py")


def recorded_dir() -> Path:
    """``<repo>/../shared/opennebula-recorded`` or skip."""
    return require_recorded()


def recorded_xmlrpc(name: str) -> Path:
    return recorded_dir() / "xmlrpc" / name


def recorded_inner(name: str) -> str:
    return recorded_xmlrpc(f"{name}.inner.xml").read_text(encoding="utf-8")


def xsd_dir() -> Path:
    """``<repo>/../shared/opennebula-xsd/7.4.0`` or skip."""
    return require_xsd()


def lxml_etree() -> Any:
    """lxml.etree, typed as Any (lxml ships no stubs)."""
    return importlib.import_module("lxml.etree")


def validate(document: str, schema_file: str) -> list[str]:
    """Validate ``document`` (no namespace, as oned emits it) against a 7.4.0 XSD."""
    etree = lxml_etree()
    schema = etree.XMLSchema(etree.parse(str(xsd_dir() / schema_file)))
    root = etree.fromstring(document.encode("utf-8"))
    for element in root.iter():
        if isinstance(element.tag, str) and not element.tag.startswith("{"):
            element.tag = f"{{{XSD_NAMESPACE}}}{element.tag}"
    if schema.validate(root):
        return []
    return [str(e) for e in schema.error_log]


def rpc(url: str, method: str, *params: Any) -> Any:
    """One raw XML-RPC call (no session added)."""
    return getattr(xmlrpc.client.ServerProxy(url), method)(*params)


def probe(url: str, session: str) -> None:
    """Publish one probe event."""
    rpc(url, "one.template.unlock", session, -1)


def replay_call(url: str, name: str, request: bytes, entry: dict[str, Any]) -> bytes:
    """POST a recorded request as it was sent; check the HTTP status, the header names in
    order and the values oned's xmlrpc-c fixes (Content-type, Connection, Server) against
    the recording's index ``entry`` (``name`` in the messages); return the body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    connection.request("POST", parts.path, request, {"Content-Type": "text/xml"})
    response = connection.getresponse()
    body = response.read()
    headers = response.getheaders()
    connection.close()
    assert response.status == entry["http_status"], name
    assert [h for h, _ in headers] == [h for h, _ in entry["http_headers"]], name
    recorded_headers = dict(entry["http_headers"])
    for header, value in headers:
        if header in ("Content-type", "Connection", "Server"):
            assert value == recorded_headers[header], (name, header)
    return body


# ---------------------------------------------------------------------------------------
# Document structure
# ---------------------------------------------------------------------------------------


def value_kind(element: xmltree.Element) -> str:
    """``cdata``, ``int``, ``text``, ``empty`` or ``element`` for a node's content."""
    if any(isinstance(c, xmltree.Element) for c in element.children):
        return "element"
    if not element.children:
        return "empty"
    if len(element.children) == 1 and isinstance(element.children[0], xmltree.CData):
        return "cdata"
    text = element.text()
    if text.lstrip("-").isdigit():
        return "int"
    return "text"


def shape(element: xmltree.Element, *, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Element names and value kinds of the children, in order (one level)."""
    return [(c.name, value_kind(c)) for c in element.elements() if c.name not in skip]


def deep_shape(element: xmltree.Element, path: str = "") -> list[tuple[str, str]]:
    """All element paths with value kinds, depth first, in document order."""
    here = f"{path}/{element.name}"
    out = [(here, value_kind(element))]
    for child in element.elements():
        out.extend(deep_shape(child, here))
    return out


def collapse_repeats(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop consecutive duplicates (``<ID>`` lists, several ``<PCI>``...)."""
    out: list[tuple[str, str]] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------
# Event stream
# ---------------------------------------------------------------------------------------


@dataclass
class Event:
    key: bytes
    content: bytes
    frames: int = 2

    @property
    def xml(self) -> str:
        return base64.b64decode(self.content).decode("utf-8")


class EventTap:
    """An in-process SUB socket, synchronised with a probe before use."""

    def __init__(self, zmq_url: str, rpc_url: str, session: str, prefixes: list[bytes]) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        for prefix in [*prefixes, PROBE_PREFIX]:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self.socket.connect(zmq_url)
        self.rpc_url = rpc_url
        self.session = session
        self.prefixes = prefixes
        self.sync()

    def sync(self, timeout: float = 10.0) -> None:
        """Publish probe events until one arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe(self.rpc_url, self.session)
            if self.socket.poll(100):
                self.drain(0.2)
                return
        raise AssertionError("subscriber never received the probe event")

    def drain(self, quiet: float = 0.2) -> list[Event]:
        """Read until nothing arrives for ``quiet`` seconds; drop probe events."""
        events: list[Event] = []
        while self.socket.poll(int(quiet * 1000)):
            key, content = self.socket.recv_multipart()
            if key.startswith(PROBE_PREFIX):
                continue
            events.append(Event(key, content))
        return events

    def wait_for(self, key_prefix: bytes, timeout: float = 10.0) -> list[Event]:
        """Collect events until one whose key starts with ``key_prefix`` arrived."""
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.socket.poll(50):
                continue
            key, content = self.socket.recv_multipart()
            if key.startswith(PROBE_PREFIX):
                continue
            events.append(Event(key, content))
            if key.startswith(key_prefix):
                return events
        raise AssertionError(f"no event {key_prefix!r} within {timeout}s; got {events}")

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


@contextmanager
def event_tap(sim_zmq: str, rpc_url: str, session: str,
              prefixes: list[bytes]) -> Iterator[EventTap]:
    tap = EventTap(sim_zmq, rpc_url, session, prefixes)
    try:
        yield tap
    finally:
        tap.close()


class SubscriberProcess:
    """A SUB socket in another process (``sub_recorder.py``) writing JSON lines."""

    def __init__(self, zmq_url: str, prefixes: list[bytes]) -> None:
        args = [sys.executable, str(SUBSCRIBER_SCRIPT), "--endpoint", zmq_url,
                "--probe", PROBE_PREFIX.hex()]
        for prefix in prefixes:
            args += ["--subscribe", prefix.hex()]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.PIPE)

    def wait_ready(self, rpc_url: str, session: str, timeout: float = 15.0) -> None:
        """Emit probes until the subprocess reports it received one."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe(rpc_url, session)
            line = self._readline(0.2)
            if line == "PROBE":
                return
        raise AssertionError("subscriber process never saw the probe")

    def _readline(self, timeout: float) -> str | None:
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
        selector.close()
        if not ready:
            return None
        return self.process.stdout.readline().decode().strip()

    def stop(self) -> list[Event]:
        """Stop the subscriber and return the events it recorded (probes excluded)."""
        out, _ = self.process.communicate(input=b"stop\n", timeout=15)
        events: list[Event] = []
        for line in out.decode().splitlines():
            if not line.startswith("{"):
                continue
            data = json.loads(line)
            events.append(Event(bytes.fromhex(data["key"]), data["content"].encode(),
                                data["frames"]))
        return events
