"""Issue 13, item 1: what a START_SCRIPT weighs in a template.

oned copies ``CONTEXT/START_SCRIPT_BASE64`` into every VM, its context.sh and every API event
about the template, and one-context exports it to every context script. The limits: at most
8,000 characters for the image configs of real Docker Hub images (the ones the execution
tests run, among them nginx, redis, postgres and a Java service with a long Entrypoint), at
most 2,000 for the fallback. Before hookd packed the launcher's code and stripped comments,
both were about 26,000 (README, "The START_SCRIPT").
"""

from __future__ import annotations

import base64
import re

import pytest

from handlers.start_script import (
    StartScriptOptions,
    build_fallback_script,
    build_start_script,
    parse_oci_config,
    readable_script,
    shell_source,
)

from .images import IMAGES, Image

MAX_IMAGE_BASE64 = 8_000
MAX_FALLBACK_BASE64 = 2_000


def encoded_size(script: str) -> int:
    """len(START_SCRIPT_BASE64), as hookd's planner writes it."""
    return len(base64.b64encode(script.encode("utf-8")))


@pytest.mark.parametrize("image", IMAGES, ids=[image.name for image in IMAGES])
def test_image_start_script_weight(image: Image) -> None:
    script = build_start_script(parse_oci_config(image.config))
    assert encoded_size(script) <= MAX_IMAGE_BASE64, encoded_size(script)


def test_real_world_set_is_covered() -> None:
    names = {image.name for image in IMAGES}
    assert {"nginx", "redis", "postgres", "spring-boot-app"} <= names
    java = next(image for image in IMAGES if image.name == "spring-boot-app")
    assert java.argv[0] == "java" and len(" ".join(java.argv)) > 500  # a long Entrypoint


def test_fallback_weight() -> None:
    assert encoded_size(build_fallback_script()) <= MAX_FALLBACK_BASE64


def test_templates_carry_no_comments() -> None:
    """Comments stay in the package's shell files; the rendered script has none."""
    for name in ("start_script.sh", "launcher.sh", "fallback.sh"):
        assert shell_source(name).count("\n#") > 10  # the sources are commented
    nginx = next(image for image in IMAGES if image.name == "nginx")
    for options in (StartScriptOptions(), StartScriptOptions(context_env=True)):
        readable = readable_script(parse_oci_config(nginx.config), options)
        lines = readable.splitlines()
        assert lines[0] == "#!/bin/sh"
        comments = [line for line in lines[1:] if line.lstrip().startswith("#")]
        assert comments == ["#!/bin/sh", "#!/sbin/openrc-run"]  # the launcher's, the init script's
        # No indentation but the value lists' (and nothing at all in here-documents).
        indented = [line for line in lines if re.match(r"[ \t]", line)]
        assert all(line.startswith("\t\t") for line in indented), indented
