from __future__ import annotations

from collections.abc import Iterator

import pytest

from hookd.logs import reset_logging
from hookd.testing.registry import FakeRegistry, seeded_registry

pytest_plugins = ["hookd.testing.pytest_plugin"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that run hookd in-process configure its logging; the next test starts clean."""
    yield
    reset_logging()


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    """A fake registry serving the image configs of the simulator's seeded Docker Hub apps
    (the mirror :func:`hookd.testing.daemon_config.simulator_config` points hookd at)."""
    reg = seeded_registry()
    try:
        yield reg
    finally:
        reg.stop()
