"""parse_oci_config / load_oci_config / OciProcess: Docker semantics and hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers.errors import PermanentError
from handlers.start_script import (
    MAX_ARG_BYTES,
    MAX_CONFIG_DOCUMENT_BYTES,
    OciProcess,
    StartScriptError,
    StartScriptOptions,
    load_oci_config,
    parse_oci_config,
)


def cfg(**config: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": config}


def test_docker_semantics() -> None:
    process = parse_oci_config(
        cfg(
            Entrypoint=["/docker-entrypoint.sh"],
            Cmd=["nginx", "-g", "daemon off;"],
            Env=["PATH=/bin", "A=1", "B=x=y", "A=2", "EMPTY="],
            WorkingDir="/srv",
            User="nginx:web",
            StopSignal="SIGQUIT",
            ExposedPorts={"80/tcp": {}},
            Labels={"x": "y"},
        )
    )
    assert process == OciProcess(
        argv=("/docker-entrypoint.sh", "nginx", "-g", "daemon off;"),
        # Split at the first '='; a later duplicate replaces the value but keeps the place.
        env=(("PATH", "/bin"), ("A", "2"), ("B", "x=y"), ("EMPTY", "")),
        workdir="/srv",
        user="nginx:web",
        stop_signal="SIGQUIT",
    )


def test_defaults() -> None:
    process = parse_oci_config({"config": {"Cmd": ["app"]}})
    assert process == OciProcess(argv=("app",), env=(), workdir="/", user="", stop_signal="SIGTERM")
    nulls = parse_oci_config(
        cfg(Entrypoint=None, Cmd=["app"], Env=None, WorkingDir=None, User=None, StopSignal=None)
    )
    assert nulls == process
    assert parse_oci_config(cfg(Cmd=["app"], WorkingDir="", StopSignal="")) == process


def test_docker_engine_forms() -> None:
    engine = {"Config": {"Cmd": ["app"], "User": "1000"}, "Os": "linux"}
    assert parse_oci_config(engine).user == "1000"
    assert parse_oci_config([engine]).argv == ("app",)  # `docker image inspect` output


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "argv"),
    [
        (["/e"], None, ("/e",)),
        (None, ["/c", "x"], ("/c", "x")),
        ([], ["c"], ("c",)),
        (["e"], [], ("e",)),
        (["/bin/sh", "-c", "echo $0"], ["arg0"], ("/bin/sh", "-c", "echo $0", "arg0")),
        (["sh"], None, ("sh",)),
        (["e", ""], [""], ("e", "", "")),
    ],
)
def test_argv_is_entrypoint_plus_cmd(
    entrypoint: list[str] | None, cmd: list[str] | None, argv: tuple[str, ...]
) -> None:
    assert parse_oci_config(cfg(Entrypoint=entrypoint, Cmd=cmd)).argv == argv


@pytest.mark.parametrize(
    ("signal", "canonical"),
    [
        ("SIGTERM", "SIGTERM"), ("TERM", "SIGTERM"), ("sigquit", "SIGQUIT"), ("Int", "SIGINT"),
        ("9", "SIGKILL"), ("15", "SIGTERM"), ("SIGIOT", "SIGABRT"), ("CLD", "SIGCHLD"),
        ("SIGPOLL", "SIGIO"), ("SIGRTMIN", "SIGRTMIN"), ("SIGRTMIN+3", "SIGRTMIN+3"),
        ("rtmax-2", "SIGRTMAX-2"), ("34", "SIGRTMIN"), ("50", "SIGRTMAX-14"),
        ("64", "SIGRTMAX"), ("SIGWINCH", "SIGWINCH"), ("SIGSTKFLT", "SIGSTKFLT"),
    ],
)  # fmt: skip
def test_stop_signal(signal: str, canonical: str) -> None:
    assert parse_oci_config(cfg(Cmd=["a"], StopSignal=signal)).stop_signal == canonical


@pytest.mark.parametrize(
    "signal",
    ["SIGFOO", "0", "32", "33", "65", "-1", "+9", " SIGTERM", "SIGRTMIN+16", "SIGRTMIN+0",
     "RTMAX-15", "SIG", "٩", "SIGTERM\n", "x" * 40],
)  # fmt: skip
def test_bad_stop_signal(signal: str) -> None:
    with pytest.raises(StartScriptError, match="StopSignal"):
        parse_oci_config(cfg(Cmd=["a"], StopSignal=signal))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not an object", "must be a JSON object, not a string"),
        (None, "not null"),
        ([], "list of 0 items"),
        ([{}, {}], "list of 2 items"),
        ({"config": {}, "Config": {}}, "both 'config' and 'Config'"),
        ({"config": []}, "'config' must be a JSON object, not a list"),
        ({"config": {}}, "neither Entrypoint nor Cmd"),
        ({}, "neither Entrypoint nor Cmd"),
        (cfg(Entrypoint=[], Cmd=[]), "neither Entrypoint nor Cmd"),
        (cfg(Entrypoint=None, Cmd=None), "neither Entrypoint nor Cmd"),
        (cfg(Cmd="nginx -g 'daemon off;'"), "'Cmd' must be a list of strings, not a string"),
        (cfg(Entrypoint={"a": 1}), "'Entrypoint' must be a list of strings, not an object"),
        (cfg(Cmd=["a", 1]), r"'Cmd'\[1\] must be a string, not a number"),
        (cfg(Cmd=["a", None]), r"'Cmd'\[1\] must be a string, not null"),
        (cfg(Cmd=["a", True]), r"'Cmd'\[1\] must be a string, not a boolean"),
        (cfg(Cmd=["a", ["b"]]), r"'Cmd'\[1\] must be a string, not a list"),
        (cfg(Cmd=["a\x00b"]), "NUL"),
        (cfg(Cmd=["a", "\ud800"]), "surrogate"),
        (cfg(Cmd=[""]), r"argv\[0\] \(the program to run\) is empty"),
        (cfg(Cmd=["A=B", "x"]), "contains '='"),
        (cfg(Cmd=["a"], Env="A=1"), "'Env' must be a list of strings, not a string"),
        (cfg(Cmd=["a"], Env=["A=1", 2]), r"'Env'\[1\] must be a string"),
        (cfg(Cmd=["a"], Env=["NOVALUE"]), r"'Env'\[0\] 'NOVALUE' has no '='"),
        (cfg(Cmd=["a"], Env=["=value"]), "empty variable name"),
        (cfg(Cmd=["a"], Env=["A=\x00"]), "NUL"),
        (cfg(Cmd=["a"], WorkingDir=7), "'WorkingDir' must be a string, not a number"),
        (cfg(Cmd=["a"], WorkingDir="relative/dir"), "not an absolute path"),
        (cfg(Cmd=["a"], WorkingDir="/a\x00b"), "NUL"),
        (cfg(Cmd=["a"], User=1000), "'User' must be a string, not a number"),
        (cfg(Cmd=["a"], User="a:b:c"), "more than one ':'"),
        (cfg(Cmd=["a"], User=":grp"), "empty user part"),
        (cfg(Cmd=["a"], User="usr:"), "empty group"),
        (cfg(Cmd=["a"], User="2147483648"), "outside 0..2147483647"),
        (cfg(Cmd=["a"], User="1:-1"), "outside 0..2147483647"),
        (cfg(Cmd=["a"], User="bad\nname"), "newline"),
        (cfg(Cmd=["a"], StopSignal=15), "'StopSignal' must be a string, not a number"),
        ({"os": "windows", "config": {"Cmd": ["a"]}}, "built for 'windows'"),
        ({"os": 1, "config": {"Cmd": ["a"]}}, "'os' must be a string"),
    ],
)
def test_rejected(doc: object, message: str) -> None:
    with pytest.raises(StartScriptError, match=message) as caught:
        parse_oci_config(doc)
    assert isinstance(caught.value, PermanentError)
    assert "\n" not in caught.value.reason and caught.value.reason.endswith(".")


def test_size_caps() -> None:
    at_cap = "x" * MAX_ARG_BYTES
    assert parse_oci_config(cfg(Cmd=["a", at_cap])).argv[1] == at_cap
    with pytest.raises(StartScriptError, match=r"131072 bytes, more than 131071"):
        parse_oci_config(cfg(Cmd=["a", at_cap + "x"]))
    with pytest.raises(StartScriptError, match="131072 bytes"):  # multi-byte characters
        parse_oci_config(cfg(Cmd=["a", "é" * 65536]))
    with pytest.raises(StartScriptError, match=r"'Env'\[0\] is"):
        parse_oci_config(cfg(Cmd=["a"], Env=["A=" + at_cap]))
    with pytest.raises(StartScriptError, match="more than 4096"):
        parse_oci_config(cfg(Cmd=["a"] * 4097))
    with pytest.raises(StartScriptError, match="more than 4096"):
        parse_oci_config(cfg(Entrypoint=["a"] * 2100, Cmd=["b"] * 2100))
    with pytest.raises(StartScriptError, match="more than 4096"):
        parse_oci_config(cfg(Cmd=["a"], Env=[f"V{i}=1" for i in range(4097)]))
    with pytest.raises(StartScriptError, match="add up to"):
        parse_oci_config(cfg(Cmd=["a"] + ["y" * 100_000] * 11))
    with pytest.raises(StartScriptError, match="WorkingDir"):
        parse_oci_config(cfg(Cmd=["a"], WorkingDir="/" + "d" * 4095))
    with pytest.raises(StartScriptError, match="User"):
        parse_oci_config(cfg(Cmd=["a"], User="u" * 257))


def test_load_oci_config() -> None:
    assert load_oci_config(json.dumps(cfg(Cmd=["a"])).encode()).argv == ("a",)
    assert load_oci_config(json.dumps(cfg(Cmd=["a"]))).argv == ("a",)
    with pytest.raises(StartScriptError, match="not valid JSON"):
        load_oci_config(b"{")
    with pytest.raises(StartScriptError, match="not UTF-8"):
        load_oci_config(b'{"config": {"Cmd": ["\xff"]}}')
    with pytest.raises(StartScriptError, match="nested too deeply"):
        load_oci_config(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(StartScriptError, match="not valid JSON"):
        load_oci_config(b'{"config": {"Cmd": ["a"]}, "n": ' + b"9" * 5000 + b"}")
    with pytest.raises(StartScriptError, match=f"more than {MAX_CONFIG_DOCUMENT_BYTES}"):
        load_oci_config(b" " * (MAX_CONFIG_DOCUMENT_BYTES + 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"argv": ()}, "neither Entrypoint nor Cmd"),
        ({"argv": ["a"]}, "tuple of strings"),
        ({"argv": ("a",), "env": (("A", "1"), ("A", "2"))}, "appears twice"),
        ({"argv": ("a",), "env": (("A=B", "1"),)}, "contains '='"),
        ({"argv": ("a",), "env": [("A", "1")]}, "tuple of"),
        ({"argv": ("a",), "env": (("A",),)}, "pairs"),
        ({"argv": ("a",), "workdir": "x"}, "absolute"),
        ({"argv": ("a",), "user": "a:b:c"}, "more than one"),
        ({"argv": ("a",), "stop_signal": "TERM"}, "signal name"),
        ({"argv": ("a",), "stop_signal": "SIGNOPE"}, "signal name"),
    ],
)
def test_oci_process_validates(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(StartScriptError, match=message):
        OciProcess(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""}, {"name": "-x"}, {"name": "a b"}, {"name": "a/b"}, {"name": "a@b"},
        {"name": "x" * 64}, {"name": "ünï"}, {"log_file": "relative.log"},
        {"log_file": "/var/log/a b.log"}, {"log_file": "/var/log/"},
        {"log_file": "/var/../etc/passwd"}, {"log_file": "/var//log"},
        {"log_file": "/var/log/$(x)"}, {"max_script_bytes": 0}, {"context_env": "yes"},
    ],
)  # fmt: skip
def test_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(StartScriptError):
        StartScriptOptions(**kwargs)


def test_good_options() -> None:
    options = StartScriptOptions(name="web.app_2-x", log_file="/var/log/web/app.log")
    assert options.name == "web.app_2-x"
    assert StartScriptOptions(max_script_bytes=None).max_script_bytes is None
