"""Fixtures for the operations-plumbing tests: clean logging state, notify sockets."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from hookd.logs import clear_secrets, reset_logging


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    """Every test starts and ends with structlog defaults, no root handlers, no secrets."""
    reset_logging()
    clear_secrets()
    structlog.contextvars.clear_contextvars()
    yield
    reset_logging()
    clear_secrets()
    structlog.contextvars.clear_contextvars()


@dataclass
class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    sock: socket.socket
    env_value: str  # what NOTIFY_SOCKET is set to

    def receive(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def nothing_within(self, seconds: float) -> bool:
        """True when no datagram arrives for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        return False


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """A bound notify socket (filesystem path, then abstract name); NOTIFY_SOCKET is set."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
        env_value = address
    else:
        name = f"hookd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        env_value = "@" + name
    monkeypatch.setenv("NOTIFY_SOCKET", env_value)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield NotifySocket(sock, env_value)
    finally:
        sock.close()


@pytest.fixture
def no_systemd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                 "NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    assert "NOTIFY_SOCKET" not in os.environ
