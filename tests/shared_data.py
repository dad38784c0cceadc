"""Access to the team's recorded OpenNebula data in ../shared (optional).

The project must install and pass without it: tests that need it skip with a clear reason.
In CI (CI=true) the shared folder is present, so a skip there is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOOKD_SHARED_DIR", REPO.parent / "shared"))
RECORDED = SHARED / "opennebula-recorded"


def require_recorded() -> Path:
    if not RECORDED.is_dir():
        reason = f"recorded oned data not found at {RECORDED} (set HOOKD_SHARED_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"required test skipped in CI: {reason}")
        pytest.skip(reason)
    return RECORDED


def recorded_events(name: str) -> list[dict[str, Any]]:
    path = require_recorded() / "events" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
