"""The three ways the START_SCRIPT starts the app (systemd, OpenRC, plain), idempotency,
replacement after a configuration change, the one-context overlay, the fallback script and
the composition with a VM owner's own START_SCRIPT — all executed in a throwaway root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from handlers.start_script import (
    OciProcess,
    StartScriptOptions,
    build_fallback_script,
    build_start_script,
    compose_with_user_script,
    parse_oci_config,
)

from .harness import DEBIAN_GROUP, DEBIAN_PASSWD, DEBIAN_TOOLS, SHELLS, Root, docker_env

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("chroot")]

NGINX = {
    "config": {
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "NGINX_VERSION=1.27.4"],
        "StopSignal": "SIGQUIT",
        "User": "nginx",
        "WorkingDir": "/usr/share/nginx/html",
    }
}  # fmt: skip
NGINX_PASSWD = DEBIAN_PASSWD + "nginx:x:101:101:nginx user:/nonexistent:/bin/false\n"
NGINX_GROUP = DEBIAN_GROUP + "nginx:x:101:\n"
SYSTEMD_ENV = {  # what systemd gives a system service, plus noise that must not leak
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
    "LANG": "C.UTF-8",
    "INVOCATION_ID": "0123456789abcdef0123456789abcdef",
    "JOURNAL_STREAM": "8:12345",
    "SYSTEMD_EXEC_PID": "4242",
}


def nginx_root(root: Root, shell: str = "dash", *, debian: bool = True) -> str:
    root.set_shell(shell)
    if debian:
        root.use_tools(*DEBIAN_TOOLS)
    root.accounts(NGINX_PASSWD, NGINX_GROUP)
    root.place_stub("/docker-entrypoint.sh")
    return build_start_script(parse_oci_config(NGINX))


def assert_nginx(record_argv: list[bytes], env: list[bytes], cwd: bytes) -> None:
    assert record_argv == [b"/docker-entrypoint.sh", b"nginx", b"-g", b"daemon off;"]
    assert env == docker_env(NGINX["config"]["Env"], "/nonexistent")
    assert cwd == b"/usr/share/nginx/html"


# --------------------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------------------


def systemctl_calls(root: Root) -> list[str]:
    if not root.exists("/hookd-test/systemctl.log"):
        return []
    return root.read("/hookd-test/systemctl.log").splitlines()


def exec_start(unit: str) -> list[str]:
    [line] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


@pytest.mark.parametrize("shell", SHELLS)
def test_systemd_unit(root: Root, shell: str) -> None:
    script = nginx_root(root, shell)
    root.fake_systemd()
    result = root.run_script(script)
    assert result.returncode == 0, result
    assert result.seconds < 5
    assert systemctl_calls(root) == ["--no-block restart hookd-app.service"]
    assert root.processes() == [], "with systemd the script must not start anything itself"

    unit_path = root.path / "run/systemd/system/hookd-app.service"
    assert unit_path.stat().st_mode & 0o777 == 0o644
    unit = unit_path.read_text()
    for line in ("Restart=on-failure", "KillSignal=SIGQUIT", "KillMode=mixed",
                 "StandardOutput=journal", "StandardInput=null", "TimeoutStopSec=10",
                 "RestartPreventExitStatus=78"):  # fmt: skip
        assert line in unit.splitlines()
    assert "[Install]" not in unit  # started by the script, never enabled

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        from .harness import unavailable

        unavailable("systemd-analyze is missing (Debian package systemd)")
    verify = subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no", str(unit_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify
    assert verify.stderr == "", verify.stderr

    # Run ExecStart as systemd would: environment of its own, cwd /, stdin /dev/null, own
    # session, output to the journal (a file here).
    journal = root.path / "journal"
    run = root.run_in_root(exec_start(unit), env=SYSTEMD_ENV, stdout=journal, session=True)
    assert run.returncode == 0, journal.read_text()
    [record] = root.wait_records(1)
    assert_nginx(record.argv, record.env, record.cwd)
    assert (record.ruid, record.rgid, record.groups) == (101, 101, [101])
    assert record.sigign == []


def test_systemd_rerun_is_idempotent(root: Root) -> None:
    script = nginx_root(root)
    root.fake_systemd()
    assert root.run_script(script).returncode == 0
    assert root.run_script(script).returncode == 0
    # The second run changes nothing: a plain start (a no-op for a running unit), no reload.
    assert systemctl_calls(root) == [
        "--no-block restart hookd-app.service",
        "--no-block start hookd-app.service",
    ]
    # A new image config: the unit is the same, the launcher changed, so restart.
    changed = build_start_script(
        parse_oci_config({"config": {**NGINX["config"], "Cmd": ["nginx", "-T"]}})
    )
    assert root.run_script(changed).returncode == 0
    assert systemctl_calls(root)[-1] == "--no-block restart hookd-app.service"
    # A different StopSignal changes the unit file itself: reload, then restart.
    other_signal = build_start_script(
        parse_oci_config({"config": {**NGINX["config"], "StopSignal": "SIGTERM"}})
    )
    assert root.run_script(other_signal).returncode == 0
    assert systemctl_calls(root)[-2:] == [
        "daemon-reload",
        "--no-block restart hookd-app.service",
    ]


@pytest.mark.parametrize("signal", ["SIGRTMIN+3", "SIGRTMAX-1", "9", "stkflt", "SIGPWR"])
def test_systemd_accepts_every_kind_of_stop_signal(root: Root, signal: str) -> None:
    root.set_shell("dash")
    root.fake_systemd()
    config = {"config": {"Cmd": ["app"], "StopSignal": signal}}
    assert root.run_script(build_start_script(parse_oci_config(config))).returncode == 0
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        from .harness import unavailable

        unavailable("systemd-analyze is missing (Debian package systemd)")
    unit_path = root.path / "run/systemd/system/hookd-app.service"
    verify = subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no", str(unit_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (verify.returncode, verify.stderr) == (0, ""), verify


# --------------------------------------------------------------------------------------
# OpenRC
# --------------------------------------------------------------------------------------


def openrc_settings(root: Root) -> dict[str, str]:
    """Source the init script like openrc-run does and read its settings."""
    names = ("supervisor", "command", "command_args", "output_log", "error_log", "retry",
             "respawn_delay", "respawn_max", "respawn_period")  # fmt: skip
    probe = ". /etc/init.d/hookd-app && printf '%s\\0' " + " ".join(f'"${n}"' for n in names)
    out = root.run_in_root(["/bin/sh", "-c", probe])
    assert out.returncode == 0, out
    return dict(zip(names, out.stdout.decode().split("\0")[:-1], strict=True))


@pytest.mark.parametrize("shell", SHELLS)
def test_openrc_service(root: Root, shell: str) -> None:
    script = nginx_root(root, shell, debian=False)
    root.fake_openrc()
    result = root.run_script(script)
    assert result.returncode == 0, result
    assert root.read("/hookd-test/rc-service.log").splitlines() == ["hookd-app restart"]
    assert root.processes() == []

    init = root.path / "etc/init.d/hookd-app"
    assert init.stat().st_mode & 0o777 == 0o755
    assert init.read_text().startswith("#!/sbin/openrc-run\n")
    syntax = root.run_in_root(["/bin/sh", "-n", "/etc/init.d/hookd-app"])
    assert syntax.returncode == 0, syntax
    settings = openrc_settings(root)
    assert settings["supervisor"] == "supervise-daemon"
    assert settings["output_log"] == settings["error_log"] == "/var/log/hookd-app.log"
    assert settings["retry"] == "QUIT/10/KILL/5"

    # supervise-daemon runs `eval ... $command -- $command_args` in a new session, with
    # stdin /dev/null and output to output_log.
    log = root.path / "var/log/hookd-app.log"
    command = [settings["command"], *settings["command_args"].split()]
    run = root.run_in_root(command, env={"RC_SVCNAME": "hookd-app"}, stdout=log, session=True)
    assert run.returncode == 0, log.read_text()
    [record] = root.wait_records(1)
    assert_nginx(record.argv, record.env, record.cwd)
    assert (record.ruid, record.rgid, record.groups) == (101, 101, [101])  # via busybox su

    # Unchanged on the next run: `start`, which OpenRC ignores for a started service.
    assert root.run_script(script).returncode == 0
    assert root.read("/hookd-test/rc-service.log").splitlines()[-1] == "hookd-app start"


def test_openrc_retry_uses_numbers_for_signals_openrc_does_not_name(root: Root) -> None:
    root.set_shell("busybox")
    root.fake_openrc()
    config = {"config": {"Cmd": ["app"], "StopSignal": "SIGRTMIN+2"}}
    assert root.run_script(build_start_script(parse_oci_config(config))).returncode == 0
    assert openrc_settings(root)["retry"] == "-36/10/KILL/5"


# --------------------------------------------------------------------------------------
# Plain mode: detached, pidfile, idempotent
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("spawner", ["util-linux-setsid", "busybox-start-stop-daemon"])
def test_plain_mode_runs_exactly_one_copy(root: Root, shell: str, spawner: str) -> None:
    script = nginx_root(root, shell, debian=False)
    if spawner == "util-linux-setsid":
        root.use_tools("setsid")
    root.linger()
    first = root.run_script(script)
    assert first.returncode == 0, first
    assert first.seconds < 5
    [record] = root.wait_records(1)
    assert_nginx(record.argv, record.env, record.cwd)
    assert record.sid == record.pgid != os.getsid(0)
    assert record.stdin == "devnull" and record.fds == [0, 1, 2]
    assert record.sigign == []

    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert root.read("/run/hookd/hookd-app.pid").split()[:2] == [boot_id, str(record.pid)]
    assert oct((root.path / "run/hookd").stat().st_mode & 0o777) == "0o700"
    assert (root.path / "var/log/hookd-app.log").stat().st_mode & 0o777 == 0o600
    assert (root.path / "run/hookd/hookd-app.launch").stat().st_mode & 0o777 == 0o600

    for _ in range(2):
        again = root.run_script(script)
        assert again.returncode == 0, again
        assert f"already running (pid {record.pid})" in again.stderr
    time.sleep(0.2)
    assert [r.pid for r in root.records()] == [record.pid]
    assert root.processes() == [record.pid]

    # Once the app has died, the next run starts it again.
    os.kill(record.pid, 15)
    assert root.signal_of(record.pid) == 15
    time.sleep(0.1)
    assert root.run_script(script).returncode == 0
    records = root.wait_records(2)
    assert len(records) == 2
    assert root.processes() == [records[1].pid]


def test_plain_mode_ignores_a_recycled_pid(root: Root) -> None:
    """A pidfile naming a live process that is not ours (same pid, other start time, or
    another boot) must not be taken for the app."""
    script = nginx_root(root)
    root.linger()
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        with open(f"/proc/{bystander.pid}/stat") as stat:
            start = stat.read().rsplit(")", 1)[1].split()[19]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        for content in (
            f"{boot} {bystander.pid} {int(start) + 1}\n",  # same pid, later start: recycled
            f"not-this-boot {bystander.pid} {start}\n",  # a pidfile from an earlier boot
        ):
            root.reset()
            (root.path / "run/hookd").mkdir(mode=0o700)
            root.write("/run/hookd/hookd-app.pid", content)
            result = root.run_script(script)
            assert result.returncode == 0, result
            assert "already running" not in result.stderr
            [record] = root.wait_records(1)
            assert record.pid != bystander.pid
        assert bystander.poll() is None, "the bystander must not have been signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_plain_mode_replaces_the_app_when_the_config_changes(root: Root) -> None:
    old_script = nginx_root(root)
    root.linger()
    assert root.run_script(old_script).returncode == 0
    [old] = root.wait_records(1)

    new_config = {
        "config": {**NGINX["config"], "Cmd": ["nginx", "-g", "daemon off; worker_processes 2;"]}
    }
    new_script = build_start_script(parse_oci_config(new_config))
    result = root.run_script(new_script)
    assert result.returncode == 0, result
    assert result.seconds < 5
    assert f"stopping pid {old.pid} (SIGQUIT)" in result.stderr
    assert root.signal_of(old.pid) == 3  # StopSignal, like docker stop
    records = root.wait_records(2)
    assert len(records) == 2
    new = records[1]
    assert new.argv[-1] == b"daemon off; worker_processes 2;"
    time.sleep(0.1)
    assert root.processes() == [new.pid]


@pytest.mark.slow
def test_plain_mode_kills_an_app_that_ignores_its_stop_signal(root: Root) -> None:
    """docker stop: StopSignal, then SIGKILL after 10 s. The stub dies on any catchable
    signal, so make it uncatchable-by-design: stop it with SIGSTOP first."""
    old_script = nginx_root(root)
    root.linger()
    assert root.run_script(old_script).returncode == 0
    [old] = root.wait_records(1)
    os.kill(old.pid, 19)  # SIGSTOP: SIGQUIT stays pending, SIGKILL still works
    new_config = {"config": {**NGINX["config"], "Cmd": ["nginx", "-V"]}}
    started = time.monotonic()
    assert root.run_script(build_start_script(parse_oci_config(new_config))).returncode == 0
    records = root.wait_records(2, timeout=20)
    assert len(records) == 2
    assert 9 <= time.monotonic() - started < 20
    assert not root.alive(old.pid)


def test_plain_mode_lock_from_a_dead_run_is_taken_over(root: Root) -> None:
    script = nginx_root(root)
    (root.path / "run/hookd/hookd-app.pid.lock").mkdir(parents=True)
    root.write("/run/hookd/hookd-app.pid.lock/owner", "none 999999 1\n")
    result = root.run_script(script)
    assert result.returncode == 0, result
    assert len(root.wait_records(1)) == 1
    assert not root.exists("/run/hookd/hookd-app.pid.lock")


def test_plain_mode_without_a_daemonizer_still_detaches(root: Root) -> None:
    """No util-linux setsid --fork and no busybox start-stop-daemon: the last resort
    starts from the shell and says that SIGINT/SIGQUIT are then ignored."""
    script = nginx_root(root, "dash")
    root.hide_busybox()
    # busybox's setsid instead of util-linux's, which has --fork
    (root.path / "usr/bin/setsid").unlink()
    (root.path / "usr/bin/setsid").symlink_to("/opt/bb/busybox")
    root.linger()
    result = root.run_script(script)
    assert result.returncode == 0, result
    assert "the app ignores SIGINT and SIGQUIT" in result.stderr
    [record] = root.wait_records(1)
    assert_nginx(record.argv, record.env, record.cwd)
    assert record.sigign == [2, 3]
    assert record.sid == record.pid
    assert "no setsid either" not in result.stderr


# --------------------------------------------------------------------------------------
# one-context variables (context_env)
# --------------------------------------------------------------------------------------


def test_context_env_overlays_one_context_variables(root: Root) -> None:
    root.set_shell("dash")
    root.use_tools("setpriv", "setsid")
    root.place_stub("/usr/bin/app")
    root.write(
        "/var/run/one-context/one_env",
        'export TOKENTXT="tok"\nexport VMID="42"\nexport ONEGATE_ENDPOINT=""\n'
        'export NGINX_VERSION="from context"\nexport ETH0_IP="10.0.0.2"\n'
        # Names of the launcher's own variables cannot change how the app is started.
        'export user="root"\nexport workdir="/tmp"\nexport uid="0"\n',
        0o400,
    )
    config = {"config": {"Cmd": ["app"], "Env": ["NGINX_VERSION=1.27.4", "A=1"],
                         "User": "nobody"}}  # fmt: skip
    process = parse_oci_config(config)
    with_context = build_start_script(process, options=StartScriptOptions(context_env=True))
    assert root.run_script(with_context).returncode == 0
    [record] = root.wait_records(1)
    # env(1) applies its operands in order: a context variable replaces the image's value
    # in place, new ones come last.
    image_env = docker_env(["NGINX_VERSION=1.27.4", "A=1"], "/nonexistent")
    image_env[image_env.index(b"NGINX_VERSION=1.27.4")] = b"NGINX_VERSION=from context"
    assert record.env == [
        *image_env,
        b"TOKENTXT=tok",
        b"VMID=42",
        b"ONEGATE_ENDPOINT=",
        b"ETH0_IP=10.0.0.2",
        b"user=root",
        b"workdir=/tmp",
        b"uid=0",
    ]
    assert record.ruid == 65534  # still dropped after reading the root-only file
    assert record.cwd == b"/"

    root.reset()
    assert root.run_script(build_start_script(process)).returncode == 0
    [plain] = root.wait_records(1)
    assert plain.env == docker_env(["NGINX_VERSION=1.27.4", "A=1"], "/nonexistent")


# --------------------------------------------------------------------------------------
# Fallback: /one_entrypoint.sh
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_starts_one_entrypoint(root: Root, shell: str) -> None:
    root.set_shell(shell)
    root.use_tools("setpriv", "setsid")
    root.place_stub("/one_entrypoint.sh")
    root.linger()
    script = build_fallback_script()
    first = root.run_script(script)
    assert first.returncode == 0, first
    [record] = root.wait_records(1)
    assert record.argv == [b"/one_entrypoint.sh"]
    assert record.env == docker_env([], "/root")
    assert (record.ruid, record.cwd) == (0, b"/")
    assert record.sid == record.pgid != os.getsid(0)
    assert "already running" in root.run_script(script).stderr
    assert root.processes() == [record.pid]


def test_fallback_without_one_entrypoint_says_so(root: Root) -> None:
    root.set_shell("dash")
    root.fake_systemd()
    result = root.run_script(build_fallback_script())
    assert result.returncode == 1
    assert "/one_entrypoint.sh not found" in result.stderr
    assert systemctl_calls(root) == []
    assert not root.exists("/run/systemd/system/hookd-app.service")


# --------------------------------------------------------------------------------------
# Composition with the VM owner's START_SCRIPT
# --------------------------------------------------------------------------------------

USER_SCRIPTS = {
    "exit": "echo user part >/tmp/user-ran\nexit 3\n",
    "set-e": "set -e\necho user part >/tmp/user-ran\nfalse\necho never >/tmp/never\n",
    "bash": (
        '#!/bin/bash\nset -euo pipefail\nnames=(user part)\necho "${names[*]}" >/tmp/user-ran\n'
    ),
    "env-sh": "#!/usr/bin/env sh\necho user part >/tmp/user-ran\nexit 0\n",
    "no-newline": "echo user part >/tmp/user-ran",
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("kind", sorted(USER_SCRIPTS))
def test_compose_runs_both_parts(root: Root, shell: str, kind: str) -> None:
    root.set_shell(shell)
    root.use_tools("setpriv", "setsid")
    os.link(root.path / "opt/shells/bash", root.path / "bin/bash")
    root.place_stub("/usr/bin/app")
    ours = build_start_script(OciProcess(argv=("app",)))
    composed = compose_with_user_script(USER_SCRIPTS[kind], ours)
    result = root.run_script(composed)
    assert result.returncode == (3 if kind == "exit" else 1 if kind == "set-e" else 0), result
    assert root.read("/tmp/user-ran") == "user part\n"
    assert not root.exists("/tmp/never")
    assert len(root.wait_records(1)) == 1, "hookd's part must run whatever the user's did"
    assert list((root.path / "tmp").glob("hookd-start.*")) == [], "temporary files removed"


def test_compose_hookd_failure_does_not_hide_user_part(root: Root) -> None:
    root.set_shell("dash")
    failing_ours = "#!/bin/sh\nexit 5\n"
    result = root.run_script(compose_with_user_script("echo ok >/tmp/user-ran\n", failing_ours))
    assert result.returncode == 5
    assert root.read("/tmp/user-ran") == "ok\n"


def test_generated_script_reads_well(root: Root) -> None:
    """Operators review the script: the launcher is inline, values are visible."""
    script = nginx_root(root)
    assert re.search(r"^\t\t'NGINX_VERSION=1\.27\.4' \\$", script, re.M)
    assert re.search(r"^\t\t'daemon off;'$", script, re.M)
    assert script.count("\n") < 600
