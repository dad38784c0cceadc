"""Registries for tests and the demo: an in-process fake, a pusher, and the real one on loopback.

This module is part of the testing world: it imports nothing from the rest of hookd (only the
standard library, and ``requests`` for :func:`push_image`), so it cannot share hookd's bugs.
Media types and digests are computed here independently on purpose.

* :class:`FakeRegistry` serves enough of the registry API v2 (``/v2/``, manifests by tag and
  digest, blobs, uploads, tags list, ``HEAD``) on a loopback port, with ``none``, ``bearer``
  (its own token endpoint) or ``basic`` auth, misbehaviour switches (:class:`Faults`,
  :meth:`FakeRegistry.fail_next`) and a request log.
* :func:`build_image` makes the blobs and manifests of a small image (one empty gzip layer, a
  config per platform) as an OCI index, Docker manifest list, OCI manifest or Docker v2
  manifest; :meth:`FakeRegistry.add_image` stores it and :func:`push_image` uploads it to any
  v2 registry with the blob upload protocol.
* :class:`RealRegistry` runs Debian's ``docker-registry`` (distribution 2.8) on
  ``127.0.0.1:<free port>`` with a throwaway config and storage, unprivileged when started as
  root, and stops it cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

from hookd.testing.processes import stop_process

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

ImageKind = Literal["oci-index", "docker-list", "oci-manifest", "docker-v2"]
AuthMode = Literal["none", "bearer", "basic"]

_EMPTY_TAR = b"\0" * 1024  # two zero blocks: an empty tar archive
EMPTY_LAYER = gzip.compress(_EMPTY_TAR, mtime=0)
EMPTY_LAYER_DIFF_ID = "sha256:" + hashlib.sha256(_EMPTY_TAR).hexdigest()
_MAX_REQUEST_BODY = 64 * 1024 * 1024
_NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


def _tamper(data: bytes) -> bytes:
    """Same length, different content (the last byte changed)."""
    return data[:-1] + (b"\n" if data[-1:] == b" " else b" ")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(document: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, compact), so equal inputs give equal digests."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _split_platform(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {platform!r} is not os/architecture[/variant]")
    result = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        result["variant"] = parts[2]
    return result


def image_config(
    platform: str,
    *,
    cmd: list[str] | None = None,
    entrypoint: list[str] | None = None,
    env: list[str] | None = None,
    working_dir: str | None = None,
    user: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A realistic config blob object for ``platform`` (``os/arch[/variant]``)."""
    section: dict[str, Any] = {}
    for key, value in (
        ("Cmd", cmd),
        ("Entrypoint", entrypoint),
        ("Env", env),
        ("WorkingDir", working_dir),
        ("User", user),
        ("Labels", dict(labels) if labels is not None else None),
    ):
        if value is not None:
            section[key] = value
    return {
        **_split_platform(platform),
        "created": "2024-01-01T00:00:00Z",
        "config": section,
        "rootfs": {"type": "layers", "diff_ids": [EMPTY_LAYER_DIFF_ID]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "hookd.testing"}],
    }


@dataclass(frozen=True)
class BuiltImage:
    """Everything to store or push, children before parents."""

    blobs: Mapping[str, bytes]
    manifests: tuple[tuple[str, str, bytes], ...]  # (digest, media type, body), by digest
    top_media_type: str
    top: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.top)


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


def _image_manifest(config: bytes, docker: bool) -> bytes:
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": _descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
            "layers": [_descriptor(DOCKER_LAYER if docker else OCI_LAYER, EMPTY_LAYER)],
        }
    )


def build_image(
    configs: Mapping[str, Mapping[str, Any]],
    kind: ImageKind = "oci-index",
    *,
    attestation: bool = False,
) -> BuiltImage:
    """Blobs and manifests for ``configs`` (platform → config blob object, stored verbatim).

    ``oci-index``/``docker-list`` take any number of platforms, the single-manifest kinds
    exactly one. ``attestation`` adds a BuildKit-style attestation manifest (platform
    ``unknown/unknown``) to an OCI index.
    """
    if not configs:
        raise ValueError("an image needs at least one platform config")
    docker = kind in ("docker-list", "docker-v2")
    blobs: dict[str, bytes] = {sha256_digest(EMPTY_LAYER): EMPTY_LAYER}
    manifests: list[tuple[str, str, bytes]] = []
    entries: list[dict[str, Any]] = []
    for platform, config in configs.items():
        config_bytes = canonical_json(config)
        blobs[sha256_digest(config_bytes)] = config_bytes
        body = _image_manifest(config_bytes, docker)
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifests.append((sha256_digest(body), media_type, body))
        entries.append(_descriptor(media_type, body, platform=_split_platform(platform)))
    if kind in ("oci-manifest", "docker-v2"):
        if len(configs) != 1 or attestation:
            raise ValueError(f"a {kind} image has exactly one platform and no attestation")
        _, media_type, body = manifests.pop()
        return BuiltImage(blobs, (), media_type, body)
    if attestation:
        if kind != "oci-index":
            raise ValueError("attestation manifests only go into an OCI index")
        statement = canonical_json({"_type": "https://in-toto.io/Statement/v0.1"})
        att_config = canonical_json(
            {
                "architecture": "unknown",
                "os": "unknown",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(statement)]},
            }
        )
        blobs[sha256_digest(statement)] = statement
        blobs[sha256_digest(att_config)] = att_config
        att_manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(OCI_CONFIG, att_config),
                "layers": [
                    _descriptor(
                        IN_TOTO,
                        statement,
                        annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"},
                    )
                ],
            }
        )
        manifests.append((sha256_digest(att_manifest), OCI_MANIFEST, att_manifest))
        entries.append(
            _descriptor(
                OCI_MANIFEST,
                att_manifest,
                platform={"architecture": "unknown", "os": "unknown"},
                annotations={
                    "vnd.docker.reference.digest": entries[0]["digest"],
                    "vnd.docker.reference.type": "attestation-manifest",
                },
            )
        )
    top_type = DOCKER_LIST if docker else OCI_INDEX
    top = canonical_json({"schemaVersion": 2, "mediaType": top_type, "manifests": entries})
    return BuiltImage(blobs, tuple(manifests), top_type, top)


# --------------------------------------------------------------------------------------------
# FakeRegistry


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # with the query string
    headers: Mapping[str, str]  # keys lower-cased


@dataclass
class Faults:
    """Misbehaviour switches; change them at any time, they apply to the next request."""

    manifest_digest_header: Literal["correct", "wrong", "absent"] = "correct"
    tamper_manifests: bool = False  # serve a manifest body of the same size, other digest
    tamper_blobs: bool = False  # serve a blob body of the same size, other digest
    oversize_blob_bytes: int = 0  # serve this many bytes (valid JSON) instead of any blob
    oversize_with_length: bool = False  # ... with Content-Length (default: chunked, no length)
    redirect_loop: bool = False  # blobs: /loop/1 → /loop/2 → /loop/1 …
    redirect_blobs_to: str | None = None  # blobs: 307 to <base URL>/v2/<name>/blobs/<digest>
    drip_interval: float | None = None  # blobs: one body byte per interval
    drip_headers: bool = False  # ... and the status line and headers too
    manifest_content_type: str | None = None  # override Content-Type; "" omits it
    head_not_allowed: bool = False  # HEAD on manifests answers 405
    latency: float = 0.0  # seconds every request waits before it is answered (a slow registry)


@dataclass
class _Repository:
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest → (type, body)
    tags: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    registry: FakeRegistry

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (deadline tests) are expected; nothing to report


class _Server6(_Server):
    address_family = socket.AF_INET6


class FakeRegistry:
    """An in-process registry on loopback. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        auth: AuthMode = "none",
        username: str = "hookd",
        password: str = "s3cret-password",  # noqa: S107 - a throwaway test credential
        anonymous_tokens: bool = True,
        token_ttl: int | None = 300,
        token_field: Literal["token", "access_token", "both"] = "both",  # noqa: S107
        challenge_actions: str = "pull",
        realm: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("FakeRegistry only listens on a loopback address")
        self.auth = auth
        self.username = username
        self.password = password
        self.anonymous_tokens = anonymous_tokens
        self.token_ttl = token_ttl
        self.token_field = token_field
        self.challenge_actions = challenge_actions
        self.realm_override = realm
        self.faults = Faults()
        self.tls = tls  # (certificate file, key file): serve https
        self._bind = (host, port)
        self._lock = threading.Lock()
        self._repos: dict[str, _Repository] = {}
        self._tokens: dict[str, frozenset[str]] = {}
        self._log: list[LoggedRequest] = []
        self._fail_status = 0
        self._fail_remaining = 0
        self._fail_retry_after: str | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeRegistry:
        if self._server is not None:
            return self
        server_class = _Server6 if ":" in self._bind[0] else _Server
        server = server_class(self._bind, _Handler)
        server.registry = self
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            # The handshake happens in the handler thread, not in accept().
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        # Keep the port: after down() the registry comes back where clients expect it.
        self._bind = (self._bind[0], server.server_address[1])
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def down(self) -> None:
        """An outage: nothing listens any more (connections are refused) until :meth:`up`,
        which serves the same content on the same port; hookd may restart meanwhile."""
        self.stop()

    def up(self) -> FakeRegistry:
        return self.start()

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """``host:port`` as a registry host (IPv6 in brackets); also while it is down()."""
        if self._server is None:
            if not self._bind[1]:
                raise RuntimeError("FakeRegistry is not started")
            address: object = self._bind[0]
            port: object = self._bind[1]
        else:
            address, port = self._server.server_address[:2]
        text = str(address)
        return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def realm(self) -> str:
        return self.realm_override or f"{self.url}/token"

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    # -- content --------------------------------------------------------------------------

    def _repo(self, name: str) -> _Repository:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"invalid repository name {name!r}")
        return self._repos.setdefault(name, _Repository())

    def add_blob(self, repository: str, data: bytes) -> str:
        digest = sha256_digest(data)
        with self._lock:
            self._repo(repository).blobs[digest] = bytes(data)
        return digest

    def add_manifest(
        self, repository: str, reference: str | None, body: bytes, media_type: str
    ) -> str:
        """Store raw manifest bytes (any bytes: bad JSON is allowed) by digest and optional tag."""
        digest = sha256_digest(body)
        with self._lock:
            repo = self._repo(repository)
            repo.manifests[digest] = (media_type, bytes(body))
            if reference is not None and not reference.startswith("sha256:"):
                repo.tags[reference] = digest
        return digest

    def add_image(
        self,
        repository: str,
        tag: str,
        configs: Mapping[str, Mapping[str, Any]],
        kind: ImageKind = "oci-index",
        attestation: bool = False,
    ) -> str:
        """Store an image built by :func:`build_image`; returns the top-level digest."""
        built = build_image(configs, kind, attestation=attestation)
        for data in built.blobs.values():
            self.add_blob(repository, data)
        for _, media_type, body in built.manifests:
            self.add_manifest(repository, None, body, media_type)
        return self.add_manifest(repository, tag, built.top, built.top_media_type)

    def blob(self, repository: str, digest: str) -> bytes:
        with self._lock:
            return self._repo(repository).blobs[digest]

    # -- switches and log -----------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests (any path) with ``status``."""
        with self._lock:
            self._fail_status, self._fail_remaining = status, count
            self._fail_retry_after = retry_after

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def paths(self, method: str | None = None) -> list[str]:
        """Paths requested (without query), optionally only for ``method``."""
        return [
            urlsplit(r.path).path for r in self.requests if method is None or r.method == method
        ]

    # -- used by the handler --------------------------------------------------------------

    def _record(self, request: LoggedRequest) -> None:
        with self._lock:
            self._log.append(request)

    def _take_failure(self) -> tuple[int, str | None] | None:
        with self._lock:
            if self._fail_remaining <= 0:
                return None
            self._fail_remaining -= 1
            return self._fail_status, self._fail_retry_after

    def _issue_token(self, scopes: frozenset[str]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = scopes
        return token

    def _token_allows(self, token: str, name: str | None, action: str) -> bool:
        with self._lock:
            scopes = self._tokens.get(token)
        if scopes is None:
            return False
        if name is None:
            return True
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind == "repository" and repo == name and action in actions.split(","):
                return True
        return False


_MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
_UPLOAD_START = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$")
_UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[0-9a-f-]{36})$")
_TAGS_PATH = re.compile(r"^/v2/(?P<name>.+)/tags/list$")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeRegistry/1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    timeout = 30
    server: _Server

    # -- plumbing -------------------------------------------------------------------------

    @property
    def registry(self) -> FakeRegistry:
        return self.server.registry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        merged = {"Content-Length": str(len(body)), **(headers or {})}
        for key, value in merged.items():
            self.send_header(key, value)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        body = canonical_json({"errors": [{"code": code, "message": message, "detail": None}]})
        self._send(
            status,
            body,
            {"Content-Type": "application/json", **(headers or {})},
            head=self.command == "HEAD",
        )

    def _dispatch(self) -> None:
        registry = self.registry
        registry._record(
            LoggedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        if registry.faults.latency > 0:
            registry.stopping.wait(registry.faults.latency)
        failure = registry._take_failure()
        if failure is not None:
            status, retry_after = failure
            code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
            extra = {"Retry-After": retry_after} if retry_after else {}
            self._body()
            self._error(status, code, "injected failure", extra)
            return
        path = urlsplit(self.path).path
        try:
            self._route(path)
        except (ValueError, KeyError) as exc:
            self._error(400, "UNSUPPORTED", f"bad request: {exc}")

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

    # -- auth -----------------------------------------------------------------------------

    def _authorized(self, name: str | None) -> bool:
        registry = self.registry
        header = self.headers.get("Authorization", "")
        write = self.command in ("PUT", "POST", "PATCH", "DELETE")
        if registry.auth == "none":
            return True
        if registry.auth == "basic":
            expected = base64.b64encode(
                f"{registry.username}:{registry.password}".encode()
            ).decode()
            if header == f"Basic {expected}":
                return True
            self._error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                {"WWW-Authenticate": 'Basic realm="fake-registry"'},
            )
            return False
        scheme, _, token = header.partition(" ")
        if scheme == "Bearer" and registry._token_allows(token, name, "push" if write else "pull"):
            return True
        challenge = f'Bearer realm="{registry.realm}",service="fake-registry"'
        if name is not None:
            actions = "pull,push" if write else registry.challenge_actions
            challenge += f',scope="repository:{name}:{actions}"'
        self._error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})
        return False

    def _token(self) -> None:
        registry = self.registry
        if registry.auth != "bearer":
            self._error(404, "NOT_FOUND", "no token endpoint")
            return
        query = parse_qs(urlsplit(self.path).query)
        header = self.headers.get("Authorization", "")
        if header:
            expected = base64.b64encode(
                f"{registry.username}:{registry.password}".encode()
            ).decode()
            if header != f"Basic {expected}":
                self._error(401, "UNAUTHORIZED", "bad credentials")
                return
        elif not registry.anonymous_tokens:
            self._error(401, "UNAUTHORIZED", "login required")
            return
        token = registry._issue_token(frozenset(query.get("scope", [])))
        document: dict[str, Any] = {"issued_at": "2024-01-01T00:00:00Z"}
        if registry.token_field in ("token", "both"):
            document["token"] = token
        if registry.token_field in ("access_token", "both"):
            document["access_token"] = token
        if registry.token_ttl is not None:
            document["expires_in"] = registry.token_ttl
        self._send(200, canonical_json(document), {"Content-Type": "application/json"})

    # -- routes ---------------------------------------------------------------------------

    def _route(self, path: str) -> None:
        registry = self.registry
        if path == "/token" and self.command == "GET":
            self._token()
            return
        if path.startswith("/loop/"):
            target = "/loop/2" if path == "/loop/1" else "/loop/1"
            self._send(307, b"", {"Location": target})
            return
        if path in ("/v2", "/v2/"):
            if self._authorized(None):
                self._send(
                    200, b"{}", {"Content-Type": "application/json"}, head=self.command == "HEAD"
                )
            return
        for pattern, handler in (
            (_UPLOAD_START, self._upload_start),
            (_UPLOAD_PATH, self._upload),
            (_TAGS_PATH, self._tags),
            (_MANIFEST_PATH, self._manifest),
            (_BLOB_PATH, self._blob),
        ):
            match = pattern.match(path)
            if match is not None:
                name = match.group("name")
                if not _NAME_RE.fullmatch(name):
                    self._error(400, "NAME_INVALID", "invalid repository name")
                    return
                if self._authorized(name):
                    with registry._lock:
                        repo = registry._repo(name)
                    handler(repo, match)
                return
        self._error(404, "NOT_FOUND", "no such endpoint")

    def _tags(self, repo: _Repository, match: re.Match[str]) -> None:
        with self.registry._lock:
            tags = sorted(repo.tags)
        document = {"name": match.group("name"), "tags": tags}
        self._send(200, canonical_json(document), {"Content-Type": "application/json"})

    def _manifest(self, repo: _Repository, match: re.Match[str]) -> None:
        if self.command == "PUT":
            self._put_manifest(repo, match)
            return
        if self.command not in ("GET", "HEAD"):
            self._error(405, "UNSUPPORTED", "method not allowed")
            return
        faults = self.registry.faults
        if self.command == "HEAD" and faults.head_not_allowed:
            self._send(405, b"", head=True)
            return
        reference = match.group("ref")
        with self.registry._lock:
            digest = reference if reference.startswith("sha256:") else repo.tags.get(reference)
            stored = repo.manifests.get(digest) if digest else None
        if digest is None or stored is None:
            self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return
        media_type, body = stored
        accepted = {
            part.split(";", 1)[0].strip() for part in self.headers.get("Accept", "").split(",")
        }
        if media_type not in accepted:  # like distribution 2.8
            if media_type in (OCI_INDEX, OCI_MANIFEST):
                self._error(404, "MANIFEST_UNKNOWN", "OCI manifest found, but not accepted")
            else:
                self._error(400, "MANIFEST_INVALID", "manifest invalid")
            return
        if faults.tamper_manifests:
            body = _tamper(body)
        headers = {"Content-Type": media_type}
        if faults.manifest_content_type is not None:
            headers.pop("Content-Type")
            if faults.manifest_content_type:
                headers["Content-Type"] = faults.manifest_content_type
        if faults.manifest_digest_header == "correct":
            headers["Docker-Content-Digest"] = digest
        elif faults.manifest_digest_header == "wrong":
            headers["Docker-Content-Digest"] = sha256_digest(b"not this manifest")
        self._send(200, body, headers, head=self.command == "HEAD")

    def _put_manifest(self, repo: _Repository, match: re.Match[str]) -> None:
        body = self._body()
        media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip()
        digest = sha256_digest(body)
        reference = match.group("ref")
        if reference.startswith("sha256:") and reference != digest:
            self._error(400, "DIGEST_INVALID", "digest does not match")
            return
        try:
            document = json.loads(body)
            if media_type in (OCI_INDEX, DOCKER_LIST):
                needed = [(m["digest"], "manifest") for m in document["manifests"]]
            else:
                needed = [(document["config"]["digest"], "blob")] + [
                    (layer["digest"], "blob") for layer in document["layers"]
                ]
        except (ValueError, KeyError, TypeError):
            self._error(400, "MANIFEST_INVALID", "manifest invalid")
            return
        with self.registry._lock:
            missing = [
                d
                for d, kind in needed
                if d not in (repo.manifests if kind == "manifest" else repo.blobs)
            ]
            if not missing:
                repo.manifests[digest] = (media_type, body)
                if not reference.startswith("sha256:"):
                    repo.tags[reference] = digest
        if missing:
            self._error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry")
            return
        location = f"/v2/{match.group('name')}/manifests/{digest}"
        self._send(201, b"", {"Location": location, "Docker-Content-Digest": digest})

    def _upload_start(self, repo: _Repository, match: re.Match[str]) -> None:
        if self.command != "POST":
            self._error(405, "UNSUPPORTED", "method not allowed")
            return
        query = parse_qs(urlsplit(self.path).query)
        body = self._body()
        name = match.group("name")
        if "digest" in query:  # monolithic upload in one POST
            self._finish_upload(repo, name, bytearray(body), query["digest"][0])
            return
        upload_id = str(uuid.uuid4())
        with self.registry._lock:
            repo.uploads[upload_id] = bytearray(body)
        self._send(
            202,
            b"",
            {
                "Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state={upload_id}",
                "Docker-Upload-UUID": upload_id,
                "Range": "0-0",
            },
        )

    def _upload(self, repo: _Repository, match: re.Match[str]) -> None:
        upload_id = match.group("id")
        body = self._body()
        with self.registry._lock:
            buffer = repo.uploads.get(upload_id)
            if buffer is not None:
                buffer += body
        if buffer is None:
            self._error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown")
            return
        name = match.group("name")
        if self.command == "PATCH":
            self._send(
                202,
                b"",
                {
                    "Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state={upload_id}",
                    "Range": f"0-{max(len(buffer) - 1, 0)}",
                },
            )
            return
        if self.command != "PUT":
            self._error(405, "UNSUPPORTED", "method not allowed")
            return
        digest = parse_qs(urlsplit(self.path).query).get("digest", [""])[0]
        with self.registry._lock:
            repo.uploads.pop(upload_id, None)
        self._finish_upload(repo, name, buffer, digest)

    def _finish_upload(self, repo: _Repository, name: str, data: bytearray, digest: str) -> None:
        if sha256_digest(bytes(data)) != digest:
            self._error(400, "DIGEST_INVALID", "digest does not match")
            return
        with self.registry._lock:
            repo.blobs[digest] = bytes(data)
        self._send(
            201,
            b"",
            {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
        )

    def _blob(self, repo: _Repository, match: re.Match[str]) -> None:
        if self.command not in ("GET", "HEAD"):
            self._error(405, "UNSUPPORTED", "method not allowed")
            return
        faults = self.registry.faults
        name, digest = match.group("name"), match.group("digest")
        if faults.redirect_loop:
            self._send(307, b"", {"Location": "/loop/1"})
            return
        if faults.redirect_blobs_to:
            target = f"{faults.redirect_blobs_to.rstrip('/')}/v2/{name}/blobs/{digest}"
            self._send(307, b"", {"Location": target})
            return
        if faults.oversize_blob_bytes:
            self._oversized(faults.oversize_blob_bytes, faults.oversize_with_length)
            return
        with self.registry._lock:
            data = repo.blobs.get(digest)
        if data is None:
            self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return
        if faults.tamper_blobs:
            data = _tamper(data)
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
        }
        if faults.drip_interval is not None and self.command == "GET":
            self._drip(data, headers, faults.drip_interval, faults.drip_headers)
            return
        self._send(200, data, headers, head=self.command == "HEAD")

    def _oversized(self, size: int, with_length: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if with_length:
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "GET":
                self._write_json_padding(size, chunked=False)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "GET":
            self._write_json_padding(size, chunked=True)
            self.wfile.write(b"0\r\n\r\n")

    def _write_json_padding(self, size: int, *, chunked: bool) -> None:
        """``{`` + spaces + ``}``: valid JSON of ``size`` bytes, written in 64 KiB chunks."""
        sent = 0
        stopping = self.registry.stopping
        with contextlib.suppress(OSError):
            while sent < size and not stopping.is_set():
                n = min(65536, size - sent)
                chunk = bytearray(b" " * n)
                if sent == 0:
                    chunk[0:1] = b"{"
                if sent + n == size:
                    chunk[-1:] = b"}"
                if chunked:
                    self.wfile.write(f"{n:x}\r\n".encode() + bytes(chunk) + b"\r\n")
                else:
                    self.wfile.write(bytes(chunk))
                sent += n

    def _drip(
        self, data: bytes, headers: Mapping[str, str], interval: float, all_of_it: bool
    ) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode()
        self.close_connection = True
        stopping = self.registry.stopping
        payload = head + data if all_of_it else data
        with contextlib.suppress(OSError):
            if not all_of_it:
                self.wfile.write(head)
                self.wfile.flush()
            for i in range(len(payload)):
                if stopping.wait(interval):
                    return
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()


# --------------------------------------------------------------------------------------------
# push_image


def push_image(
    base_url: str,
    repository: str,
    tag: str,
    configs: Mapping[str, Mapping[str, Any]],
    kind: ImageKind = "oci-index",
    *,
    attestation: bool = False,
    timeout: float = 10.0,
) -> str:
    """Push an image to any v2 registry without auth; return the top-level digest.

    Blobs go through ``POST /v2/<name>/blobs/uploads/`` then ``PUT <Location>&digest=…``;
    child manifests are put by digest, the index/list (or the single manifest) by tag.
    """
    import requests  # the only third-party import of the testing world, and only here

    built = build_image(configs, kind, attestation=attestation)
    base = base_url.rstrip("/")
    with requests.Session() as session:
        session.trust_env = False  # never send loopback traffic to an environment proxy
        for digest, data in built.blobs.items():
            start_url = f"{base}/v2/{repository}/blobs/uploads/"
            started = session.post(start_url, timeout=timeout)
            if started.status_code != 202 or "Location" not in started.headers:
                raise RuntimeError(f"upload start for {digest} answered {started.status_code}")
            location = urljoin(start_url, started.headers["Location"])
            separator = "&" if "?" in location else "?"
            finished = session.put(
                f"{location}{separator}{urlencode({'digest': digest})}",
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=timeout,
            )
            if finished.status_code != 201:
                raise RuntimeError(
                    f"upload of {digest} answered {finished.status_code}: {finished.text[:200]}"
                )
        for reference, media_type, body in (
            *built.manifests,
            (tag, built.top_media_type, built.top),
        ):
            answer = session.put(
                f"{base}/v2/{repository}/manifests/{reference}",
                data=body,
                headers={"Content-Type": media_type},
                timeout=timeout,
            )
            if answer.status_code != 201:
                raise RuntimeError(
                    f"manifest {reference} answered {answer.status_code}: {answer.text[:300]}"
                )
            echoed = answer.headers.get("Docker-Content-Digest")
            if echoed is not None and echoed != sha256_digest(body):
                raise RuntimeError(f"registry stored manifest {reference} as {echoed}")
    return built.digest


# --------------------------------------------------------------------------------------------
# RealRegistry


DOCKER_REGISTRY = "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _no_proxy_get(url: str, timeout: float) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


class RealRegistry:
    """Debian's ``docker-registry`` (CNCF distribution 2.8) on ``127.0.0.1:<free port>``.

    No auth, throwaway config and storage under a temporary directory. When started as root it
    runs as ``run_as``/``run_group`` (default nobody/nogroup) through ``setpriv``, which
    ``exec``s so the child PID is the registry's and stopping it leaves no zombie. Environment
    variables ``REGISTRY_*`` (which would override the config) are not passed on.
    """

    def __init__(
        self,
        binary: str = DOCKER_REGISTRY,
        *,
        run_as: str = "nobody",
        run_group: str = "nogroup",
        startup_timeout: float = 15.0,
    ) -> None:
        self.binary = binary
        self.run_as = run_as
        self.run_group = run_group
        self.startup_timeout = startup_timeout
        self.port = 0
        self._tmp: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @staticmethod
    def missing_reason(binary: str = DOCKER_REGISTRY) -> str | None:
        """Why the registry cannot run here (None when it can)."""
        if not os.access(binary, os.X_OK):
            return f"{binary} is not installed (Debian package docker-registry)"
        if os.geteuid() == 0 and shutil.which("setpriv") is None:
            return "setpriv (util-linux) is needed to drop root privileges"
        return None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_text(self) -> str:
        if self._tmp is None:
            return ""
        try:
            return (self._tmp / "registry.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> RealRegistry:
        reason = self.missing_reason(self.binary)
        if reason is not None:
            raise RuntimeError(reason)
        self._tmp = Path(tempfile.mkdtemp(prefix="hookd-registry-"))
        try:
            for _attempt in range(3):
                if self._launch():
                    return self
            raise RuntimeError(f"docker-registry did not start: {self.log_text}")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        """One start on a fresh port; False if the port was taken under our feet."""
        if self._tmp is None:
            raise RuntimeError("RealRegistry.start() creates the work directory first")
        self._terminate()
        storage = self._tmp / "storage"
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(mode=0o700)
        self.port = _free_port()
        config = self._tmp / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(str(storage))}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: {secrets.token_hex(16)}\n"
        )
        command = [self.binary, "serve", str(config)]
        if os.geteuid() == 0:
            import grp
            import pwd

            uid = pwd.getpwnam(self.run_as).pw_uid
            gid = grp.getgrnam(self.run_group).gr_gid
            for path in (self._tmp, storage, config):  # owner-only modes stay as they are
                os.chown(path, uid, gid)
            setpriv = shutil.which("setpriv") or "setpriv"
            command = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self._tmp)}
        self._log = open(self._tmp / "registry.log", "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._tmp,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                if "address already in use" in self.log_text:
                    return False
                raise RuntimeError(
                    f"docker-registry exited with {self._process.returncode}: {self.log_text}"
                )
            with contextlib.suppress(OSError):
                if _no_proxy_get(f"{self.url}/v2/", timeout=1.0) == 200:
                    return True
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer /v2/ in time: {self.log_text}")

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, 5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._terminate()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> RealRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Image configs of the simulator's seeded Docker Hub apps (tests/daemon and the benchmarks
# serve these), trimmed to what a START_SCRIPT uses, with the values the real images carry.
SEEDED_DOCKER_CONFIGS: dict[str, dict[str, Any]] = {
    "nginx": {"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
              "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
              "StopSignal": "SIGQUIT"},
    "alpine": {"Cmd": ["/bin/sh"],
               "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    "redis": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["redis-server"],
              "WorkingDir": "/data"},
    "postgres": {"Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["postgres"],
                 "Env": ["PGDATA=/var/lib/postgresql/data"], "StopSignal": "SIGINT"},
    "httpd": {"Cmd": ["httpd-foreground"], "WorkingDir": "/usr/local/apache2",
              "StopSignal": "SIGWINCH"},
}


def seeded_registry() -> FakeRegistry:
    """A started fake registry serving :data:`SEEDED_DOCKER_CONFIGS` as ``library/NAME:latest``
    for linux/amd64."""
    registry = FakeRegistry().start()
    for name, cfg in SEEDED_DOCKER_CONFIGS.items():
        registry.add_image(f"library/{name}", "latest",
                           {"linux/amd64": {**image_config("linux/amd64"), "config": cfg}})
    return registry
