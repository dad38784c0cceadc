"""Skip a test whose system component is missing — except in CI, where that is a failure.

``require(available, what)`` does nothing when ``available`` is true. Otherwise it skips the
test with ``what`` as the reason, unless the environment variable ``CI`` is ``true``
(case-insensitive, as GitHub Actions, GitLab CI and most runners set it): then it fails the
test, because a CI run that silently skips its integration tests proves nothing.
``require_program(program, debian_package)`` wraps it around ``shutil.which`` and names the
package to install. Use them in fixtures (a session fixture that calls one errors every test
that needs it) or at the top of a test. Tests that need a component also carry
``@pytest.mark.requires_system(name)`` so ``-m`` can select or deselect them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

import pytest


def ci_enforced(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``CI=true``: missing system components fail instead of skipping."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() == "true"


def require(available: bool, what: str, *, environ: Mapping[str, str] | None = None) -> None:
    """Skip (or, with ``CI=true``, fail) unless ``available``; ``what`` says what is missing."""
    if available:
        return
    if ci_enforced(environ):
        pytest.fail(
            f"{what} — required in CI (CI=true), so this is a failure, not a skip",
            pytrace=False,
        )
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
