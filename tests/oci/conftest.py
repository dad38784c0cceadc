"""Fixtures for the registry client tests: fake registries, clients, a fake clock, TLS files,
and Debian's docker-registry on loopback (session-scoped)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from hookd.http import DIRECT
from hookd.oci import RegistryClient, RegistrySettings
from hookd.testing.registry import DOCKER_REGISTRY, FakeRegistry, RealRegistry
from tests._require import require


class FakeClock:
    """A monotonic clock the test moves by hand (token lifetimes, tag memo)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def loopback_session() -> requests.Session:
    """A requests session (for tests that talk to a fake registry directly) that ignores
    proxy variables and ~/.netrc: tests only talk to loopback."""
    session = requests.Session()
    session.trust_env = False
    return session


ClientFactory = Callable[..., RegistryClient]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with FakeRegistry() as registry:
        yield registry


@pytest.fixture
def make_client(clock: FakeClock) -> Iterator[ClientFactory]:
    """``make_client(*plain_http_hosts, **RegistrySettings fields)``; clients closed after."""
    clients: list[RegistryClient] = []

    def factory(*plain_http: str, **fields: Any) -> RegistryClient:
        settings = RegistrySettings(plain_http_registries=frozenset(plain_http), **fields)
        client = RegistryClient(settings, proxies=DIRECT, clock=clock)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl CLI) and its key."""
    openssl = shutil.which("openssl")
    require(openssl is not None, "the openssl command is not installed (Debian package openssl)")
    assert openssl is not None
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


@pytest.fixture(scope="session")
def real_registry() -> Iterator[RealRegistry]:
    """Debian's docker-registry on 127.0.0.1:<free port>, for the whole session.

    ``HOOKD_TEST_DOCKER_REGISTRY`` names another binary (default /usr/bin/docker-registry).
    """
    binary = os.environ.get("HOOKD_TEST_DOCKER_REGISTRY", DOCKER_REGISTRY)
    reason = RealRegistry.missing_reason(binary)
    require(reason is None, f"cannot run the real registry: {reason}")
    started = time.monotonic()
    registry = RealRegistry(binary).start()
    print(f"docker-registry ready at {registry.url} in {time.monotonic() - started:.2f} s")
    try:
        yield registry
    finally:
        registry.stop()
