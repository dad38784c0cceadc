from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hookd.testing.client import SimulatorClient
from hookd.testing.pytest_plugin import StandaloneSimulator
from hookd.testing.registry import FakeRegistry
from tests.daemon.harness import PASSWORD, Hookd


@pytest.fixture
def sim_process() -> Iterator[Callable[..., SimulatorClient]]:
    """Start standalone simulators (own process) with chosen options; stopped afterwards."""
    started: list[StandaloneSimulator] = []

    def start(*extra: str, ready_delay: float = 0.1) -> SimulatorClient:
        standalone = StandaloneSimulator([
            "--xmlrpc", "127.0.0.1:0", "--zmq", "tcp://127.0.0.1:0",
            "--auth", f"oneadmin:{PASSWORD}", "--ready-delay", str(ready_delay), *extra])
        started.append(standalone)
        return SimulatorClient(standalone.xmlrpc_url)

    try:
        yield start
    finally:
        for standalone in started:
            standalone.terminate()


@pytest.fixture
def hookd_factory(tmp_path: Path) -> Iterator[Callable[..., Hookd]]:
    made: list[Hookd] = []

    def make(xmlrpc: str, zmq: str, registry: FakeRegistry | None,
             settings: dict[str, Any] | None = None, name: str = "hookd") -> Hookd:
        daemon = Hookd(tmp_path / name, xmlrpc=xmlrpc, zmq=zmq, registry=registry,
                       settings=settings)
        made.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            daemon.close()
