"""``hookd plan`` and the log name a START_SCRIPT_BASE64 by what it carries, decoded: its
size and sha256 (issue 13, item 3), next to what they showed before."""

from __future__ import annotations

import base64
import hashlib

from handlers.plan import Change, ImagePlan, TemplateEdit, TemplateOutcome, render_plan
from handlers.start_script import OciProcess, build_start_script

SCRIPT = build_start_script(OciProcess(argv=("nginx", "-g", "daemon off;")))
ENCODED = base64.b64encode(SCRIPT.encode()).decode()
SUMMARY = (f"START_SCRIPT of {len(SCRIPT.encode())} bytes, "
           f"sha256:{hashlib.sha256(SCRIPT.encode()).hexdigest()}")


def test_log_entry() -> None:
    change = Change("CONTEXT/START_SCRIPT_BASE64", "ZWNobyBoaQ==", ENCODED)
    entry = change.as_dict()
    assert entry["before"] == "ZWNobyBoaQ=="
    assert entry["after"] is not None and entry["after"].startswith(f"<{len(ENCODED)} characters")
    assert entry["before_script"] == (
        "START_SCRIPT of 7 bytes, sha256:" + hashlib.sha256(b"echo hi").hexdigest())
    assert entry["after_script"] == SUMMARY
    unset = Change("CONTEXT/START_SCRIPT_BASE64", None, "not base64!").as_dict()
    assert (unset["before_script"], unset["after_script"]) == (None, None)
    assert "after_script" not in Change("OS/ROOT", "sda", "vda").as_dict()


def test_plan_shows_the_decoded_script() -> None:
    changes = (Change("CONTEXT/START_SCRIPT_BASE64", None, ENCODED),
               Change("OS/ROOT", None, "vda"))
    edit = TemplateEdit(7, (), changes)
    plan = ImagePlan(3, "applied", "", templates=(
        TemplateOutcome(7, "nginx", "applied", "", "kvm", edit),))
    text = render_plan(plan)
    assert f"      + {SUMMARY} ({len(ENCODED)} characters of base64)\n" in text
    assert ENCODED[:50] not in text
    assert "    OS/ROOT:\n      - (unset)\n      + vda" in text
