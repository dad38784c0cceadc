"""Access to the team's reference data in ``../shared`` (optional).

The project installs and passes without it: tests that need it skip with a clear reason.
The folder is found at ``$HOOKD_SHARED_DIR`` or beside the repository (``<repo>/../shared``).
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
RECORDED_74 = RECORDED / "7.4.0"
XSD_74 = SHARED / "opennebula-xsd" / "7.4.0"


def require(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path}: shared reference data is optional "
                    f"(set HOOKD_SHARED_DIR to use it)")
    return path


def require_recorded() -> Path:
    return require(RECORDED, "oned 6.8.3 recordings")


def require_recorded_74() -> Path:
    return require(RECORDED_74, "oned 7.4.0 recordings")


def require_xsd() -> Path:
    return require(XSD_74, "OpenNebula 7.4.0 XSDs")


def recorded_events(name: str) -> list[dict[str, Any]]:
    path = require_recorded() / "events" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
