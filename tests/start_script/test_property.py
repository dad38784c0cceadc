"""Property: any argv/env either reaches the app byte for byte, or is refused with a
StartScriptError — injected shell code never runs (a canary file never appears)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handlers.start_script import (
    StartScriptError,
    StartScriptOptions,
    build_start_script,
    parse_oci_config,
)

from .harness import DEBIAN_TOOLS, SHELLS, Root, docker_env

pytestmark = [pytest.mark.integration, pytest.mark.requires_system("chroot")]

PAYLOADS = [
    "$(touch /canary)", "`touch /canary`", "'; touch /canary; '", "\"; touch /canary; \"",
    "\ntouch /canary\n", "\nHOOKD_LAUNCHER_EOF\ntouch /canary\n", "${x:=$(touch /canary)}",
    "$((1+1))", "*", "?", "[!a]", "~", "\\", "'", '"', "\t", " ", "-", "--", "=", "%s", "\x1b",
]  # fmt: skip
# Shell-special characters, a few Unicode ranges, and the odd surrogate or NUL that must be
# refused rather than mangled.
CHARS = st.one_of(
    st.sampled_from(list("$`'\"\\;&|<>(){}[]*?!~#=%\n\t -_.:/,+@^")),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1F6FF),
    st.sampled_from(["\x00", "\ud800", "\x01", "\x7f"]),
)
TEXT = st.one_of(st.text(CHARS, max_size=40), st.sampled_from(PAYLOADS))
NAMES = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
    st.text(CHARS, min_size=0, max_size=12),
)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,  # the same examples in CI as on a laptop
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shell=st.sampled_from(SHELLS),
    args=st.lists(TEXT, max_size=5),
    env=st.lists(st.tuples(NAMES, TEXT), max_size=5),
    workdir=st.one_of(st.just(""), TEXT.map(lambda text: "/w/" + text)),
)
def test_arbitrary_values_arrive_exactly_or_are_refused(
    root: Root,
    shell: str,
    args: list[str],
    env: list[tuple[str, str]],
    workdir: str,
) -> None:
    root.reset()  # hypothesis runs every example on the same root
    root.set_shell(shell)
    if not root.exists("/usr/bin/app"):
        root.use_tools(*DEBIAN_TOOLS)
        root.place_stub("/usr/bin/app")
    image_env = [f"{name}={value}" for name, value in env]
    config = {"config": {"Cmd": ["app", *args], "Env": image_env, "WorkingDir": workdir}}
    try:
        script = build_start_script(
            parse_oci_config(config), options=StartScriptOptions(max_script_bytes=None)
        )
    except StartScriptError:
        event("refused")
        texts = [*args, *image_env, workdir]
        assert any("\x00" in t or "\ud800" in t for t in texts) or any(
            name == "" or "=" in name for name, _ in env
        )
        return
    event("executed")
    result = root.run_script(script)
    assert result.returncode == 0, result
    [record] = root.wait_records(1)
    assert record.argv == [b"app", *(arg.encode() for arg in args)]
    # Later duplicates replace earlier values in place (Docker); model it on the image side.
    assert record.env == docker_env(image_env, "/root")
    # getcwd() gives the normalised path, as it would under Docker.
    assert record.cwd == os.path.normpath(workdir or "/").encode()
    assert not root.exists("/canary")
