"""The local Docker Engine source, against a small fake engine on a unix socket."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from handlers.errors import PermanentError, TransientError
from hookd.oci import (
    EngineClient,
    ImageNotFound,
    ImageReference,
    InvalidResponse,
    NoMatchingPlatform,
    Platform,
    RegistryUnavailable,
    ResponseTooLarge,
)
from hookd.oci.docker_engine import engine_name
from hookd.testing.registry import FakeRegistry

from .conftest import ClientFactory

IMAGE_ID = "sha256:" + "1f" * 32
REPO_DIGEST = "sha256:" + "2e" * 32
INSPECT: dict[str, Any] = {
    "Id": IMAGE_ID,
    "RepoTags": ["nginx:1.25"],
    "RepoDigests": [f"nginx@{REPO_DIGEST}"],
    "Os": "linux",
    "Architecture": "amd64",
    "Config": {
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Env": ["PATH=/usr/bin"],
        "WorkingDir": "",
        "User": "",
    },
}


class _EngineHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    images: ClassVar[dict[str, bytes]] = {}
    paths: ClassVar[list[str]] = []
    mode: ClassVar[str] = "normal"

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        if self.mode == "silent":
            time.sleep(5)
            return
        body = self.images.get(self.path)
        status = 200 if body is not None else 404
        if body is None:
            body = b'{"message":"No such image"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.mode == "drip":
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(len(body)):
                time.sleep(0.05)
                try:
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "docker.sock")
    _EngineHandler.images = {"/images/nginx:1.25/json": json.dumps(INSPECT).encode()}
    _EngineHandler.paths = []
    _EngineHandler.mode = "normal"
    server = _UnixServer(path, _EngineHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


AMD64 = Platform.parse("linux/amd64")
NGINX = ImageReference.parse("nginx:1.25")


def test_engine_config(engine: str) -> None:
    fetched = EngineClient(engine).fetch_config(NGINX, AMD64)
    assert fetched.config["config"] == INSPECT["Config"]
    assert fetched.config["os"] == "linux" and fetched.config["architecture"] == "amd64"
    assert fetched.config_digest == IMAGE_ID
    assert fetched.manifest_digest == REPO_DIGEST
    assert fetched.source == f"engine:{engine}"
    assert _EngineHandler.paths == ["/images/nginx:1.25/json"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nginx:1.25", "nginx:1.25"),
        ("bitnami/redis", "bitnami/redis:latest"),
        ("registry.example:5000/team/app:v1", "registry.example:5000/team/app:v1"),
        ("alpine@sha256:" + "ab" * 32, "alpine@sha256:" + "ab" * 32),
    ],
)
def test_engine_names(name: str, expected: str) -> None:
    assert engine_name(ImageReference.parse(name)) == expected


def test_engine_missing_image_is_permanent(engine: str) -> None:
    with pytest.raises(ImageNotFound) as caught:
        EngineClient(engine).fetch_config(ImageReference.parse("redis:7"), AMD64)
    assert isinstance(caught.value, PermanentError)


def test_engine_platform_mismatch(engine: str) -> None:
    with pytest.raises(NoMatchingPlatform):
        EngineClient(engine).fetch_config(NGINX, Platform.parse("linux/arm64"))


@pytest.mark.parametrize(
    "inspect",
    [
        {**INSPECT, "Id": "not-a-digest"},
        {**INSPECT, "Config": {"Cmd": "nginx"}},
        {**INSPECT, "Config": ["x"]},
    ],
)
def test_engine_bad_answers_are_permanent(engine: str, inspect: dict[str, Any]) -> None:
    _EngineHandler.images["/images/nginx:1.25/json"] = json.dumps(inspect).encode()
    with pytest.raises(InvalidResponse):
        EngineClient(engine).fetch_config(NGINX, AMD64)


def test_engine_answer_is_bounded(engine: str) -> None:
    _EngineHandler.images["/images/nginx:1.25/json"] = json.dumps(
        {**INSPECT, "Comment": "x" * 100_000}
    ).encode()
    with pytest.raises(ResponseTooLarge):
        EngineClient(engine, max_bytes=10_000).fetch_config(NGINX, AMD64)


@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_engine_timeouts_are_transient(engine: str, mode: str) -> None:
    _EngineHandler.mode = mode
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as caught:
        EngineClient(engine, timeout=0.5, deadline=1.0).fetch_config(NGINX, AMD64)
    assert isinstance(caught.value, TransientError)
    assert time.monotonic() - started < 4


def test_engine_socket_missing_is_transient(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnavailable):
        EngineClient(str(tmp_path / "absent.sock")).fetch_config(NGINX, AMD64)


def test_client_falls_back_to_the_engine(engine: str, make_client: ClientFactory) -> None:
    with FakeRegistry() as fake:
        ref = ImageReference.parse(f"{fake.host}/nginx:1.25")
        key = f"/images/{fake.host}/nginx:1.25/json"
        _EngineHandler.images[key] = json.dumps(INSPECT).encode()
        fake.fail_next(503, count=5)
        fetched = make_client(fake.host, engine_socket=engine).fetch_config(ref)
        assert fetched.source == f"engine:{engine}"
        assert fetched.config["config"]["Cmd"] == INSPECT["Config"]["Cmd"]
        del _EngineHandler.images[key]
        fake.fail_next(503, count=5)
        with pytest.raises(RegistryUnavailable) as caught:  # engine failed too: origin's error
            make_client(fake.host, engine_socket=engine).fetch_config(ref)
        assert caught.value.code == 503
