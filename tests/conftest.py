from __future__ import annotations

from collections.abc import Iterator

import pytest

from hookd.logs import reset_logging

pytest_plugins = ["hookd.testing.pytest_plugin"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that run hookd in-process configure its logging; the next test starts clean."""
    yield
    reset_logging()
