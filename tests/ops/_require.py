"""Required system tests: skip on a workstation, **fail** in CI.

Some ops tests need a program from the system (``systemd-analyze`` from the ``systemd``
package, ``logrotate``). Locally a missing program skips the test with the reason and the
Debian package to install. With ``CI=true`` (``.ci/run`` exports it, as do GitHub Actions and
GitLab CI) the same situation is a failure: a CI machine that lost a package must not turn
required checks into silent skips.

How it works: ``require(available, what)`` returns when ``available`` is true; otherwise it
calls ``pytest.fail(...)`` if ``ci_enforced()`` (``CI`` is ``true``, case-insensitive, spaces
ignored) and ``pytest.skip(what)`` if not. ``require_program`` wraps it around
``shutil.which``. ``environ`` lets the rule itself be tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

import pytest


def ci_enforced(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``CI=true``: a required test that cannot run is a failure."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() == "true"


def require(available: bool, what: str, *, environ: Mapping[str, str] | None = None) -> None:
    """Return if ``available``; else skip, or fail when :func:`ci_enforced`."""
    if available:
        return
    if ci_enforced(environ):
        pytest.fail(f"{what} — required in CI (CI=true): failing instead of skipping",
                    pytrace=False)
    pytest.skip(what)


def require_program(
    program: str, debian_package: str, *, environ: Mapping[str, str] | None = None
) -> str:
    """The absolute path of ``program``; skip (fail in CI) naming the package if missing."""
    path = shutil.which(program, path=None if environ is None else environ.get("PATH", ""))
    require(path is not None,
            f"{program} not found (install the Debian package {debian_package})",
            environ=environ)
    assert path is not None
    return path
