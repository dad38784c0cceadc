"""build_start_script / build_fallback_script / compose_with_user_script as text."""

from __future__ import annotations

import base64
import re
import subprocess

import pytest

from handlers.start_script import (
    MAX_START_SCRIPT_BYTES,
    OciProcess,
    StartScriptError,
    StartScriptOptions,
    build_fallback_script,
    build_start_script,
    compose_with_user_script,
    parse_oci_config,
    readable_fallback_script,
    readable_script,
    readable_start_script,
)

BASH_OR_SH = 'if command -v bash >/dev/null 2>&1; then bash "$d/user"; else sh "$d/user"; fi'
NGINX = OciProcess(
    argv=("/docker-entrypoint.sh", "nginx", "-g", "daemon off;"),
    env=(("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
         ("NGINX_VERSION", "1.27.4")),
    user="nginx",
    stop_signal="SIGQUIT",
)  # fmt: skip


def test_deterministic() -> None:
    first = build_start_script(NGINX)
    again = build_start_script(
        parse_oci_config({"config": {"Entrypoint": ["/docker-entrypoint.sh"],
                                     "Cmd": ["nginx", "-g", "daemon off;"],
                                     "Env": [f"{k}={v}" for k, v in NGINX.env],
                                     "User": "nginx", "StopSignal": "QUIT"}})
    )  # fmt: skip
    assert first == again
    assert first != build_start_script(NGINX, options=StartScriptOptions(name="web"))
    assert first != build_start_script(NGINX, options=StartScriptOptions(context_env=True))


@pytest.mark.parametrize("shell", ["sh", "dash", "bash", "busybox sh"])
def test_every_shell_parses_it(shell: str) -> None:
    for script in (build_start_script(NGINX), build_fallback_script()):
        check = subprocess.run([*shell.split(), "-n"], input=script.encode(), check=False)
        assert check.returncode == 0


def test_values_are_single_quoted_and_never_evaluated() -> None:
    nasty = OciProcess(argv=("app", "it's $(x) `y`"), env=(("K", "a'b"),))
    script = build_start_script(nasty)
    assert "\t\t'it'\\''s $(x) `y`'" in script
    assert "\t\t'K=a'\\''b' \\" in script
    # The only eval reads one-context's variables by (validated) name, never image values.
    # (The launcher's code is packed in the script: read its readable form.)
    assert readable_start_script(script) == readable_script(nasty)
    assert re.findall(r"^\s*eval .*$", readable_script(nasty), re.M) == []
    with_context = readable_script(nasty, StartScriptOptions(context_env=True))
    evals = re.findall(r"^\s*eval .*$", with_context, re.M)
    assert evals == ['eval "[ -n \\"\\${$n+set}\\" ] && v=\\${$n}" || continue']


def test_heredoc_delimiter_never_collides() -> None:
    evil = OciProcess(argv=("app", "x\nHOOKD_LAUNCHER_EOF\nHOOKD_LAUNCHER_EOF_1\ny"))
    script = build_start_script(evil)
    assert "<<'HOOKD_LAUNCHER_EOF_2'" in script
    assert script.count("\nHOOKD_LAUNCHER_EOF_2\n") == 1


def test_unit_and_init_script_contents() -> None:
    """The launcher writes the unit and the init script from its settings (the files it
    writes are checked in test_packing.py::test_unit_and_init_script_written)."""
    process = OciProcess(argv=("app",), stop_signal="SIGRTMIN+3")
    options = StartScriptOptions(name="web", log_file="/var/log/web.log")
    script = build_start_script(process, options=options)
    code = readable_script(process, options)
    unit = code[code.index("[Unit]") : code.index("\nEOF\n", code.index("[Unit]")) + 1]
    assert "ExecStart=/bin/sh $base.launch run\n" in unit
    assert "KillSignal=$stopname\n" in unit
    assert "SyslogIdentifier=$svc\n" in unit
    assert 'retry="$rcsig/10/KILL/5"' in code
    assert "output_log=$logfile\n" in code
    for setting in ("svc='web'", "logfile='/var/log/web.log'", "stopsig=37",
                    "stopname='SIGRTMIN+3'", "rcsig='-37'", "base=/run/hookd/$svc"):  # fmt: skip
        assert f"\n{setting}\n" in script


def test_context_env_flag() -> None:
    overlay = ". /var/run/one-context/one_env\n"
    assert overlay not in readable_script(NGINX)
    assert overlay in readable_script(NGINX, StartScriptOptions(context_env=True))
    assert build_start_script(NGINX) != build_start_script(
        NGINX, options=StartScriptOptions(context_env=True)
    )


def test_size_limit() -> None:
    big = OciProcess(argv=("app", "x" * 100_000))
    with pytest.raises(StartScriptError, match="START_SCRIPT_BASE64") as caught:
        build_start_script(big)
    assert "\n" not in caught.value.reason
    unlimited = build_start_script(big, options=StartScriptOptions(max_script_bytes=None))
    assert len(unlimited) > 100_000
    # The limit is exactly what fits one-context's exported variable in MAX_ARG_STRLEN.
    fits = "START_SCRIPT_BASE64=" + base64.b64encode(b"x" * MAX_START_SCRIPT_BYTES).decode()
    assert len(fits) + 1 <= 131072
    over = "START_SCRIPT_BASE64=" + base64.b64encode(b"x" * (MAX_START_SCRIPT_BYTES + 1)).decode()
    assert len(over) + 1 > 131072


def test_fallback_script() -> None:
    script = build_fallback_script()
    readable = readable_start_script(script)
    assert readable == readable_fallback_script()
    assert "[ -f /one_entrypoint.sh ] || {\n" in readable
    assert 'HOME="$h" /one_entrypoint.sh\n' in readable
    assert build_fallback_script() == script
    web = StartScriptOptions(name="web")
    assert "\nsvc='web'\nlogfile='/var/log/hookd-app.log'\nbase=/run/hookd/$svc\n" in (
        readable_start_script(build_fallback_script(web))
    )


@pytest.mark.parametrize(
    "shebang",
    ["#!/usr/bin/python3\n", "#!/usr/bin/env python3\n", "#!/usr/bin/perl -w\n",
     "#!/usr/bin/env -S bash -e\n", "#!bash\n", "#!/bin/bash\r\n", "#!\n",
     "#!/bin/busybox httpd\n"],
)  # fmt: skip
def test_compose_refuses_non_shell_scripts(shebang: str) -> None:
    with pytest.raises(StartScriptError, match="not a shell") as caught:
        compose_with_user_script(shebang + "print('hi')\n", build_start_script(NGINX))
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("user_script", "runner"),
    [
        ("echo hi\n", BASH_OR_SH),
        ("#!/bin/sh\necho hi\n", "'/bin/sh' \"$d/user\""),
        ("#! /bin/bash -e\necho hi\n", "'/bin/bash' '-e' \"$d/user\""),
        ("#!/usr/bin/env bash\necho hi\n", "'/usr/bin/env' 'bash' \"$d/user\""),
        ("#!/bin/busybox sh\necho hi\n", "'/bin/busybox' 'sh' \"$d/user\""),
        ("#!/bin/ash\necho hi\n", "'/bin/ash' \"$d/user\""),
    ],
)  # fmt: skip
def test_compose_runs_the_user_script_with_its_shell(user_script: str, runner: str) -> None:
    composed = compose_with_user_script(user_script, build_start_script(NGINX))
    assert f"\n{runner} || rc=$?\n" in composed
    assert composed.startswith("#!/bin/sh\n")


def test_compose_edge_cases() -> None:
    ours = build_start_script(NGINX)
    assert compose_with_user_script("", ours) == ours
    assert compose_with_user_script(" \n\t\n", ours) == ours
    with pytest.raises(StartScriptError, match="NUL"):
        compose_with_user_script("echo \x00", ours)
    # The user's script may contain our delimiters and heredocs of its own.
    tricky = "cat <<'HOOKD_SCRIPT_EOF'\nHOOKD_USER_SCRIPT_EOF\nHOOKD_SCRIPT_EOF\n"
    composed = compose_with_user_script(tricky, ours)
    assert re.search(r"<<'HOOKD_USER_SCRIPT_EOF_\d+'", composed)
    with pytest.raises(StartScriptError, match="bytes"):
        compose_with_user_script("#" * MAX_START_SCRIPT_BYTES, ours)
    assert compose_with_user_script("#" * MAX_START_SCRIPT_BYTES, ours, max_bytes=None)


def test_rejects_wrong_argument_types() -> None:
    with pytest.raises(StartScriptError):
        build_start_script("nginx")  # type: ignore[arg-type]
    with pytest.raises(StartScriptError):
        build_start_script(NGINX, options={"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(StartScriptError):
        build_fallback_script("x")  # type: ignore[arg-type]


def test_readable_form_of_composed_scripts() -> None:
    for ours, readable in ((build_start_script(NGINX), readable_script(NGINX)),
                           (build_fallback_script(), readable_fallback_script())):
        composed = compose_with_user_script("echo hi\n", ours)
        assert readable_start_script(ours) == readable
        assert readable_start_script(composed) == compose_with_user_script("echo hi\n", readable)
    assert readable_start_script("echo hi\n") == "echo hi\n"
    broken = 'eval "$(echo AAAA|base64 -d|gzip -dc)"\n'
    assert readable_start_script(broken) == broken
