"""The lighter START_SCRIPT, executed: the packed code unpacks in every shell with busybox's
or GNU's base64 and gzip, lands in the guest as the readable text, and the readable form
runs the same way; the launcher writes the unit and init script from its settings; the
fallback (packed whole) under systemd, OpenRC and with busybox alone, and its hand-over to
an image's START_SCRIPT."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from handlers.start_script import (
    OciProcess,
    StartScriptOptions,
    build_fallback_script,
    build_start_script,
    parse_oci_config,
    readable_fallback_script,
    readable_script,
)

from .harness import DEBIAN_TOOLS, SHELLS, Root, docker_env, unavailable
from .test_exec_modes import (
    NGINX,
    SYSTEMD_ENV,
    assert_nginx,
    exec_start,
    nginx_root,
    systemctl_calls,
)
from .test_shellcheck import heredoc_bodies, installed_launcher

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("chroot")]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("tools", ["busybox", "gnu"])
def test_packed_code_unpacks(root: Root, shell: str, tools: str) -> None:
    script = nginx_root(root, shell, debian=False)
    if tools == "gnu":
        root.use_tools("base64", "gzip", "cmp", "setsid")
    root.linger()
    result = root.run_script(script)
    assert result.returncode == 0, result
    assert result.seconds < 5
    [record] = root.wait_records(1)
    assert_nginx(record.argv, record.env, record.cwd)
    # The guest gets the launcher as text, exactly what `hookd start-script` shows.
    readable = readable_script(parse_oci_config(NGINX))
    assert root.read("/run/hookd/hookd-app.launch") == installed_launcher(readable)
    again = root.run_script(script)
    assert f"already running (pid {record.pid})" in again.stderr


def test_readable_form_runs_the_same(root: Root) -> None:
    packed = nginx_root(root, "dash")
    root.linger()
    readable = readable_script(parse_oci_config(NGINX))
    assert root.run_script(readable).returncode == 0
    [record] = root.wait_records(1)
    assert_nginx(record.argv, record.env, record.cwd)
    launcher = root.read("/run/hookd/hookd-app.launch")
    # The packed script installs the same file: nothing changed, nothing restarted.
    result = root.run_script(packed)
    assert f"already running (pid {record.pid})" in result.stderr
    assert root.read("/run/hookd/hookd-app.launch") == launcher


def test_without_gzip_nothing_starts(root: Root) -> None:
    """(busybox ash would run its own gzip applet even without the link: use dash.)"""
    script = nginx_root(root, "dash")
    for name in ("bin/gzip", "bin/zcat"):
        (root.path / name).unlink()
    root.fake_systemd()
    result = root.run_script(script)
    assert result.returncode != 0
    assert "gzip" in result.stderr
    assert not root.exists("/run/hookd/hookd-app.launch")
    assert systemctl_calls(root) == []


def test_unit_and_init_script_written(root: Root) -> None:
    root.set_shell("dash")
    process = OciProcess(argv=("app",), stop_signal="SIGRTMIN+3")
    script = build_start_script(
        process, options=StartScriptOptions(name="web", log_file="/var/log/web.log")
    )
    root.fake_systemd()
    assert root.run_script(script).returncode == 0
    unit = root.read("/run/systemd/system/web.service").splitlines()
    for line in ("ExecStart=/bin/sh /run/hookd/web.launch run", "KillSignal=SIGRTMIN+3",
                 "SyslogIdentifier=web", "Description=hookd: app of the container image (web)"):
        assert line in unit
    assert systemctl_calls(root) == ["--no-block restart web.service"]

    shutil.rmtree(root.path / "run/systemd")
    (root.path / "usr/bin/systemctl").unlink()
    root.fake_openrc()
    assert root.run_script(script).returncode == 0
    init = root.read("/etc/init.d/web")
    assert init.startswith("#!/sbin/openrc-run\n")
    for line in ('command_args="/run/hookd/web.launch run"', 'retry="-37/10/KILL/5"',
                 "output_log=/var/log/web.log", "error_log=/var/log/web.log"):
        assert line in init.splitlines()
    assert root.read("/hookd-test/rc-service.log").splitlines() == ["web restart"]


# --------------------------------------------------------------------------------------
# The fallback
# --------------------------------------------------------------------------------------


def fallback_root(root: Root, shell: str) -> None:
    root.set_shell(shell)
    root.place_stub("/one_entrypoint.sh")


def assert_one_entrypoint(root: Root) -> int:
    [record] = root.wait_records(1)
    assert record.argv == [b"/one_entrypoint.sh"]
    assert record.env == docker_env([], "/root")
    assert (record.ruid, record.rgid, record.cwd, record.umask) == (0, 0, b"/", 0o022)
    return record.pid


def test_fallback_is_the_readable_script_packed() -> None:
    stub = build_fallback_script()
    assert stub.count("\n") == 2 and stub.startswith("#!/bin/sh\neval \"$(echo ")
    launcher = heredoc_bodies(readable_fallback_script())["EOF"]
    assert "/one_entrypoint.sh" in launcher


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_systemd(root: Root, shell: str) -> None:
    fallback_root(root, shell)
    root.fake_systemd()
    script = build_fallback_script()
    result = root.run_script(script)
    assert result.returncode == 0, result
    assert root.processes() == []
    assert systemctl_calls(root) == ["daemon-reload", "--no-block restart hookd-app"]
    unit_path = root.path / "run/systemd/system/hookd-app.service"
    unit = unit_path.read_text()
    assert (unit_path.stat().st_mode & 0o777, "[Install]" in unit) == (0o644, False)
    for line in ("ExecStart=/bin/sh /run/hookd/hookd-app.launch", "Restart=on-failure",
                 "KillMode=mixed", "TimeoutStopSec=10"):  # fmt: skip
        assert line in unit.splitlines()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is missing (Debian package systemd)")
    verify = subprocess.run([analyze, "verify", "--man=no", "--generators=no", str(unit_path)],
                            capture_output=True, text=True, check=False)
    assert (verify.returncode, verify.stderr) == (0, ""), verify

    run = root.run_in_root(exec_start(unit), env=SYSTEMD_ENV, stdout=root.path / "journal",
                           session=True)
    assert run.returncode == 0, root.read("/journal")
    assert_one_entrypoint(root)

    assert root.run_script(script).returncode == 0
    assert systemctl_calls(root)[-1] == "--no-block start hookd-app"


def test_fallback_openrc(root: Root) -> None:
    fallback_root(root, "busybox")
    root.fake_openrc()
    script = build_fallback_script()
    assert root.run_script(script).returncode == 0
    init = root.path / "etc/init.d/hookd-app"
    assert init.stat().st_mode & 0o777 == 0o755
    names = ("supervisor", "command", "command_args", "output_log", "retry")
    probe = ". /etc/init.d/hookd-app && printf '%s\\0' " + " ".join(f'"${n}"' for n in names)
    out = root.run_in_root(["/bin/sh", "-c", probe])
    settings = dict(zip(names, out.stdout.decode().split("\0")[:-1], strict=True))
    assert settings["supervisor"] == "supervise-daemon"
    assert settings["output_log"] == "/var/log/hookd-app.log"
    assert settings["retry"] == "TERM/10/KILL/5"
    log = root.path / "var/log/hookd-app.log"
    command = [settings["command"], *settings["command_args"].split()]
    run = root.run_in_root(command, env={"RC_SVCNAME": "hookd-app"}, stdout=log, session=True)
    assert run.returncode == 0, log.read_text()
    assert_one_entrypoint(root)
    assert root.run_script(script).returncode == 0
    assert root.read("/hookd-test/rc-service.log").splitlines() == [
        "hookd-app restart", "hookd-app start"]


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_with_busybox_alone(root: Root, shell: str) -> None:
    """No util-linux setsid: busybox start-stop-daemon detaches it, default signals."""
    fallback_root(root, shell)
    root.linger()
    script = build_fallback_script()
    assert root.run_script(script).returncode == 0
    [record] = root.wait_records(1)
    pid = assert_one_entrypoint(root)
    assert record.sid == record.pgid != os.getsid(0)
    assert (record.sigign, record.stdin, record.fds) == ([], "devnull", [0, 1, 2])
    assert record.fd1 == "/var/log/hookd-app.log"
    assert (root.path / "var/log/hookd-app.log").stat().st_mode & 0o777 == 0o600
    assert f"already running (pid {pid})" in root.run_script(script).stderr
    assert root.processes() == [pid]


def test_image_script_replaces_the_fallback(root: Root) -> None:
    """Once hookd can read the image config, its START_SCRIPT stops the fallback's app (the
    same pidfile) and starts the image's."""
    fallback_root(root, "dash")
    root.use_tools(*DEBIAN_TOOLS)
    root.place_stub("/usr/bin/app")
    root.linger()
    assert root.run_script(build_fallback_script()).returncode == 0
    old = assert_one_entrypoint(root)
    result = root.run_script(build_start_script(OciProcess(argv=("app",))))
    assert result.returncode == 0, result
    assert f"stopping pid {old} (SIGTERM)" in result.stderr
    assert root.signal_of(old) == 15
    [new] = [record for record in root.wait_records(2) if record.pid != old]
    assert new.argv == [b"app"]
    assert root.processes() == [new.pid]
