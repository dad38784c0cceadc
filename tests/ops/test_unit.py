"""The systemd unit and the logrotate snippet: verified by the real tools, and by content."""

from __future__ import annotations

import difflib
import grp
import io
import json
import os
import pwd
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hookd.logs import configure_logging, get_logger
from tests._require import ci_enforced, require, require_program

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "hookd.service"
LOGROTATE = ROOT / "systemd" / "hookd.logrotate"
INSTALLED_EXEC_START = "ExecStart=/opt/hookd/bin/hookd run --config /etc/one/hookd.conf"


# -- the CI rule ------------------------------------------------------------------------------


def test_missing_component_skips_locally() -> None:
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_program("hookd-no-such-program", "nothing", environ={"PATH": "/nonexistent"})
    with pytest.raises(pytest.skip.Exception):
        require(False, "missing", environ={"CI": "false"})


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_missing_component_fails_in_ci(value: str) -> None:
    assert ci_enforced({"CI": value})
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        require_program("hookd-no-such-program", "nothing",
                        environ={"CI": value, "PATH": "/nonexistent"})


def test_present_component_passes() -> None:
    require(True, "present", environ={"CI": "true"})
    assert not ci_enforced({})
    assert not ci_enforced({"CI": "1"})  # only "true" enforces, as CI systems set it


# -- systemd-analyze verify -------------------------------------------------------------------


@dataclass
class Verified:
    returncode: int
    stdout: str
    stderr: str

    @property
    def clean(self) -> bool:
        """rc 0 is not enough: systemd-analyze reports unknown keys, bad values... as warnings
        on stderr and still exits 0."""
        return self.returncode == 0 and self.stderr == "" and self.stdout == ""


def _test_exec_path() -> Path:
    """An executable that exists here: the venv's hookd console script (or the interpreter)."""
    script = Path(sys.executable).with_name("hookd")
    return script if os.access(script, os.X_OK) else Path(sys.executable)


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """A byte-identical copy of the unit except ExecStart's program path.

    `verify` fails (rc 1) when ExecStart's program does not exist, and /opt/hookd is the
    production install path, so it is swapped for a program that exists here.
    """
    original = UNIT.read_bytes()
    assert original.count(INSTALLED_EXEC_START.encode()) == 1
    replacement = INSTALLED_EXEC_START.replace("/opt/hookd/bin/hookd", str(_test_exec_path()))
    copy = original.replace(INSTALLED_EXEC_START.encode(), replacement.encode())
    diff = [line for line in difflib.unified_diff(original.decode().splitlines(),
                                                  copy.decode().splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff == [f"-{INSTALLED_EXEC_START}", f"+{replacement}"]
    directory = tmp_path / "units"
    directory.mkdir()
    path = directory / "hookd.service"
    path.write_bytes(copy)
    return path


def _verify(unit: Path) -> Verified:
    analyze = require_program("systemd-analyze", "systemd")
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LANG": "C.UTF-8"}
    proc = subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no", str(unit)],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=unit.parent,
    )
    return Verified(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.requires_system("systemd-analyze")
def test_unit_passes_systemd_analyze_verify_without_any_warning(tmp_path: Path) -> None:
    result = _verify(_unit_for_this_machine(tmp_path))
    assert result.clean, result


@pytest.mark.requires_system("systemd-analyze")
def test_verify_check_catches_warnings_and_errors(tmp_path: Path) -> None:
    """The check above can fail: warnings (rc 0) and fatal problems (rc 1) are both caught."""
    good = _unit_for_this_machine(tmp_path)
    text = good.read_text()
    warned = good.with_name("warned.service")
    warned.write_text(text.replace("[Service]\n", "[Service]\nWatchdogUSec=5\n", 1))
    result = _verify(warned)
    assert result.returncode == 0 and "Unknown key" in result.stderr + result.stdout
    assert not result.clean
    if _systemd_version() < 253:  # Debian 12: notify-reload does not exist, only a warning
        old_type = good.with_name("oldtype.service")
        old_type.write_text(text.replace("Type=notify\n", "Type=notify-reload\n"))
        result = _verify(old_type)
        assert result.returncode == 0 and not result.clean
    missing = good.with_name("missing.service")
    missing.write_text(UNIT.read_text())  # /opt/hookd/bin/hookd does not exist here
    result = _verify(missing)
    assert result.returncode != 0
    assert "/opt/hookd/bin/hookd" in result.stderr + result.stdout


def _systemd_version() -> int:
    analyze = require_program("systemd-analyze", "systemd")
    first = subprocess.run([analyze, "--version"], capture_output=True, text=True, timeout=60,
                           check=True).stdout.split()
    assert first[0] == "systemd", first
    return int(first[1])


# -- the unit's content -----------------------------------------------------------------------


def _directives() -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (repeated keys accumulate), comments and blanks ignored."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, line
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def _seconds(value: str) -> float:
    units = {"min": 60.0, "ms": 0.001, "s": 1.0, "h": 3600.0}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_unit_declares_the_required_directives() -> None:
    d = _directives()
    unit, service, install = d["Unit"], d["Service"], d["Install"]
    assert "opennebula.service" in unit["After"][0].split()
    assert "network-online.target" in unit["After"][0].split()
    assert unit["Wants"] == ["network-online.target"]
    assert "Requires" not in unit  # hookd waits for oned by itself
    expected_single = {
        "Type": "notify", "NotifyAccess": "main",
        "ExecStart": INSTALLED_EXEC_START.split("=", 1)[1],
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "oneadmin", "Group": "oneadmin", "Restart": "on-failure",
        "StateDirectory": "hookd", "ReadWritePaths": "-/var/log/one",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
        "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "UMask": "0077",
    }
    for key, value in expected_single.items():
        assert service.get(key) == [value], key
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert install["WantedBy"] == ["multi-user.target"]
    # Timers: watchdog pinged every half; a bounded graceful stop above the drain timeout.
    watchdog = _seconds(service["WatchdogSec"][0])
    assert 10 <= watchdog <= 120
    assert _seconds(service["RestartSec"][0]) > 0
    assert _seconds(service["TimeoutStopSec"][0]) >= 20 + 15  # reconcile.shutdown_timeout
    # Nothing that systemd 252 would ignore or that would harm the shared oneadmin user.
    assert "RemoveIPC" not in service and "DynamicUser" not in service
    assert all(len(values) == 1 for key, values in service.items()
               if key not in ("SystemCallFilter", "Environment")), service


def test_every_unit_line_is_ascii_and_has_no_trailing_space() -> None:
    for number, line in enumerate(UNIT.read_text().splitlines(), 1):
        assert line.isascii(), (number, line)
        assert line == line.rstrip(), (number, line)


# -- logrotate --------------------------------------------------------------------------------


def _logrotate_for_this_machine(tmp_path: Path) -> tuple[Path, Path]:
    """The snippet with the log path and the oneadmin user/group swapped for local ones."""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    log_dir = tmp_path / "log"
    log_dir.mkdir(mode=0o750)
    log_file = log_dir / "hookd.log"
    text = LOGROTATE.read_text()
    stanza = "\n/var/log/one/hookd.log {\n"
    assert text.count(stanza) == 1
    assert text.count("oneadmin oneadmin") == 2  # create ... and su ...
    text = text.replace(stanza, f"\n{log_file} {{\n").replace(
        "oneadmin oneadmin", f"{user} {group}")
    config = tmp_path / "hookd.logrotate"
    config.write_text(text)
    config.chmod(0o644)
    return config, log_file


def test_logrotate_snippet_content() -> None:
    text = LOGROTATE.read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "/var/log/one/hookd.log {" and lines[-1] == "}"
    body = set(lines[1:-1])
    assert {"create 0600 oneadmin oneadmin", "su oneadmin oneadmin", "delaycompress",
            "missingok", "notifempty"} <= body
    assert "copytruncate" not in body  # the handler reopens; truncation would lose lines
    assert not any(line.startswith("dateext") for line in body)  # history reads hookd.log.1


@pytest.mark.requires_system("logrotate")
def test_logrotate_debug_run_accepts_the_snippet(tmp_path: Path) -> None:
    logrotate = require_program("logrotate", "logrotate")
    config, log_file = _logrotate_for_this_machine(tmp_path)
    log_file.write_text('{"event": "x"}\n')
    proc = subprocess.run([logrotate, "-d", "-s", str(tmp_path / "state"), str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "error" not in output.lower(), output
    assert f"considering log {log_file}" in output


@pytest.mark.requires_system("logrotate")
def test_logrotate_rotation_with_a_live_file_log(tmp_path: Path) -> None:
    """A real `logrotate -f` between two lines: the running handler moves to the new file."""
    logrotate = require_program("logrotate", "logrotate")
    config, log_file = _logrotate_for_this_machine(tmp_path)
    configure_logging(stream=io.StringIO(), file_path=log_file)
    log = get_logger("hookd.applier")
    log.info("template.fixed", image_id=1)
    proc = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"), str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rotated = log_file.with_name("hookd.log.1")
    assert rotated.exists(), sorted(p.name for p in log_file.parent.iterdir())
    assert log_file.exists() and log_file.stat().st_size == 0  # `create`d, empty
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    log.info("template.fixed", image_id=2)
    assert [json.loads(line)["image_id"] for line in rotated.read_text().splitlines()] == [1]
    assert [json.loads(line)["image_id"] for line in log_file.read_text().splitlines()] == [2]
