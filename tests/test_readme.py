"""The README is part of the product: its configuration reference and commands stay true."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hookd.cli import build_parser
from hookd.config import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _yaml_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_every_configuration_key_is_documented_with_its_default() -> None:
    documented = yaml.safe_load(_yaml_block_after("## Configuration"))
    assert set(documented) == set(SECTIONS)
    for section, dataclass in SECTIONS.items():
        # the section's keys and defaults, as the file would spell them
        expected = {key: list(value) if isinstance(value, tuple) else value
                    for key, value in vars(dataclass()).items()}
        assert set(documented[section]) == set(expected), section
        for key, default in expected.items():
            assert documented[section][key] == default, f"{section}.{key}"


def test_quick_start_is_two_commands_and_ci_runs_the_same_tests() -> None:
    quick = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in quick.splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].endswith("hookd demo")
    assert commands[1] == ".venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npython -m pytest\n" in ci


def test_documented_commands_exist() -> None:
    import argparse

    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    subcommands = set(actions[0].choices)
    for name in re.findall(r"hookd (\w[\w-]*)", README):
        if name in ("demo", "check", "run", "reconcile", "plan", "history", "kernel",
                    "start-script"):
            assert name in subcommands
    assert {"demo", "check", "run", "reconcile", "plan", "history", "kernel",
            "start-script"} <= subcommands


def test_the_unit_file_the_readme_installs_exists() -> None:
    for path in re.findall(r"/path/to/hookd/(systemd/[\w.]+)", README):
        assert (ROOT / path).is_file(), path
