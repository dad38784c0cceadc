"""The benchmark runner at tiny sizes: it runs, and writes JSON and markdown with every
scenario in them. Nothing here is about speed: no figure is compared with anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import TARGETS, render_markdown
from benchmarks.runner import SCENARIOS, parse_args, percentile

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_run_writes_every_scenario(tmp_path: Path) -> None:
    out, md = tmp_path / "result.json", tmp_path / "result.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--size", "smoke", "--idle-seconds", "2",
         "--out", str(out), "--markdown", str(md), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["errors"] == {}
    assert set(document["scenarios"]) >= set(SCENARIOS)
    assert set(document["scenarios"]["idle"]) == {"main_pool", "scale_pool"}
    assert document["meta"]["sizes"]["burst_images"] == 20
    # Every target row is evaluated (met or not: a smoke run proves nothing about speed).
    assert len(document["targets"]) == len(TARGETS)
    assert all(row["met"] in (True, False) for row in document["targets"])
    # What the scenarios did, not how fast: hookd fixed everything it was given.
    scenarios = document["scenarios"]
    assert scenarios["burst"]["verified"]["applied"] == 20
    assert scenarios["limit"]["verified"]["applied"] == 20
    assert scenarios["baseline"]["same_fix_as_hookd"] is True
    assert scenarios["scale"]["startup"]["already_fixed_templates_changed"] == 0
    text = md.read_text()
    assert text == render_markdown(document)
    assert text.startswith("# hookd benchmark results")
    assert "| Scenario | Figure | Measured | Target | Met |" in text
    for scenario in SCENARIOS:
        assert f"| {scenario} |" in text, scenario


def test_scenarios_can_be_picked_and_sizes_overridden() -> None:
    args = parse_args(["--scenarios", "latency,idle", "--size", "smoke",
                       "--latency-imports", "7"])
    assert args.scenarios == ["latency", "idle"]
    assert args.latency_imports == 7
    assert args.burst_images == 20
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "latency,nope"])


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_engine_per_event_measures_all_three_rounds(tmp_path: Path) -> None:
    from benchmarks.engine_per_event import measure

    result = measure(pool=40, imports=5, warmup=1, workdir=tmp_path)
    assert result["empty_pool"]["imports"] == 5
    assert result["pool_present"]["indexed_templates"] > result["empty_pool"]["indexed_templates"]
    assert result["cpu_ratio_p50"] > 0 and result["wall_ratio_p50"] > 0
