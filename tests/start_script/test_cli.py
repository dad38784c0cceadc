"""`hookd start-script`: hookd.start_script_cli.add_parser / run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from handlers.start_script import (
    build_start_script,
    parse_oci_config,
    readable_script,
    readable_start_script,
)
from hookd import start_script_cli

CONFIG = {"config": {"Cmd": ["redis-server"], "Env": ["A=1"], "User": "redis"}}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hookd")
    start_script_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def write(tmp_path: Path, content: object | bytes) -> str:
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return str(path)


def test_prints_the_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["start-script", "--oci-config", write(tmp_path, CONFIG)])
    assert args.func is start_script_cli.run
    assert start_script_cli.run(args) == 0
    out, err = capsys.readouterr()
    # Readable: the launcher's code as text, where templates carry it packed.
    assert out == readable_script(parse_oci_config(CONFIG))
    assert out == readable_start_script(build_start_script(parse_oci_config(CONFIG)))
    assert err == ""


def test_name_and_context_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["start-script", "--oci-config", write(tmp_path, CONFIG),
                  "--name", "cache", "--context-env"])  # fmt: skip
    assert start_script_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "svc='cache'" in out and ". /var/run/one-context/one_env\n" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        ({"config": {}}, "neither Entrypoint nor Cmd"),
        ({"config": {"Cmd": ["a"], "User": "a:b:c"}}, "more than one ':'"),
        (b"\xff\xfe", "not UTF-8"),
        ({"config": {"Cmd": ["a", "x" * 100_000]}}, "START_SCRIPT_BASE64"),
    ],
)
def test_rejected_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, message: str
) -> None:
    args = parse(["start-script", "--oci-config", write(tmp_path, content)])
    assert start_script_cli.run(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hookd start-script: ") and message in err
    assert err.count("\n") == 1


def test_bad_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["start-script", "--oci-config", write(tmp_path, CONFIG), "--name", "a b"])
    assert start_script_cli.run(args) == 1
    assert "Service name 'a b'" in capsys.readouterr().err


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (tmp_path / "missing.json", tmp_path):
        assert start_script_cli.run(parse(["start-script", "--oci-config", str(path)])) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"hookd start-script: cannot read '{path}': ")
        assert err.count("\n") == 1


def test_oci_config_is_required() -> None:
    with pytest.raises(SystemExit):
        parse(["start-script"])


def test_import_stays_light() -> None:
    """Registering the sub-command must not import the generator (hookd --help is fast)."""
    code = (
        "import sys, argparse; from hookd import start_script_cli; "
        "p = argparse.ArgumentParser(); start_script_cli.add_parser(p.add_subparsers()); "
        "print('handlers.start_script' in sys.modules, 'json' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"


def test_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    from handlers.start_script import StartScriptOptions, readable_fallback_script

    assert start_script_cli.run(parse(["start-script", "--fallback", "--name", "web"])) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (readable_fallback_script(StartScriptOptions(name="web")), "")


def test_one_source_at_a_time(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse(["start-script", "--fallback", "--oci-config", write(tmp_path, CONFIG)])
    with pytest.raises(SystemExit):
        parse(["start-script", "--template", "4", "--fallback"])
    with pytest.raises(SystemExit):
        parse(["start-script", "--template", "x"])
