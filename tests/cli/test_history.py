from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hookd.history import HistoryError, entries, parse_since, run_history

LINES = [
    '<6>{"event": "template.fixed", "image_id": 7, "template_id": 3, "hypervisor": "kvm", '
    '"action": "update", "changes": [{"attribute": "OS/ROOT", "before": null, '
    '"after": "vda"}], "reason": "", "timestamp": "2026-11-27T10:00:00Z", "level": "info"}',
    '{"event": "image.status", "image_id": 7, "status": "applied", "reason": "", '
    '"changes": [{"attribute": "HOOKD_STATUS", "before": null, "after": "applied"}], '
    '"timestamp": "2026-11-27T10:00:01Z"}',
    '{"event": "template.fixed", "image_id": 9, "template_id": 4, "hypervisor": "lxc", '
    '"changes": [{"attribute": "SCHED_REQUIREMENTS", "before": null, "after": '
    '"HYPERVISOR=\\"lxc\\""}], "timestamp": "2026-11-28T09:00:00Z"}',
    "not json at all",
    '{"event": "sweep.done", "timestamp": "2026-11-28T09:00:00Z"}',
    '{"event": "template.fixed", "image_id": "x", "timestamp": "2026-11-28T09:00:00Z"}',
]


def test_entries_keep_only_hookds_changes() -> None:
    rows = list(entries(LINES))
    assert [(r.kind, r.image_id, r.template_id) for r in rows] == [
        ("template", 7, 3), ("status", 7, None), ("template", 9, 4)]


def test_table_and_filters(tmp_path: Path) -> None:
    log = tmp_path / "hookd.log"
    log.write_text("\n".join(LINES) + "\n")
    out = io.StringIO()
    assert run_history(None, log_file=str(log), out=out) == 0
    table = out.getvalue().splitlines()
    assert table[0].split() == ["TIME", "(UTC)", "IMAGE", "TEMPLATE", "HYPERVISOR", "CHANGES"]
    assert "OS/ROOT (unset) -> vda" in table[1] and "kvm" in table[1]
    assert "status - -> applied" in table[2]
    out = io.StringIO()
    assert run_history(None, log_file=str(log), image=9, as_json=True, out=out) == 0
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert docs == [{"time": "2026-11-28T09:00:00Z", "kind": "template", "image_id": 9,
                     "template_id": 4, "hypervisor": "lxc", "status": None,
                     "changes": [{"attribute": "SCHED_REQUIREMENTS", "before": None,
                                  "after": 'HYPERVISOR="lxc"'}], "reason": ""}]
    out = io.StringIO()
    run_history(None, log_file=str(log), since="2026-11-28", out=out)
    assert "OS/ROOT" not in out.getvalue() and "SCHED_REQUIREMENTS" in out.getvalue()


def test_parse_since() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("3 days ago", now) == now - timedelta(days=3)
    assert parse_since("2026-11-27 10:30", now) == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    assert parse_since("today", now) == datetime(2026, 11, 28, tzinfo=UTC)
    with pytest.raises(HistoryError):
        parse_since("last tuesday", now)
    # Further back than datetime goes: everything, not a traceback.
    assert parse_since("99999999d", now) == datetime.min.replace(tzinfo=UTC)
    assert parse_since("99999999999999999999w", now) == datetime.min.replace(tzinfo=UTC)


def test_a_huge_since_reads_the_whole_log(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "hookd.log"
    log.write_text("")
    assert run_history(None, log_file=str(log), since="99999999d") == 0
    assert "Traceback" not in capsys.readouterr().err


def test_missing_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_history(None, log_file=str(tmp_path / "nope.log")) == 1
    assert "cannot read" in capsys.readouterr().err
