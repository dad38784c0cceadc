"""The rule for required tests that need the system: skip on a laptop, fail in CI.

A test that cannot run because something outside the repository is missing (apt, the Debian
mirror, the ``lz4`` program, …) calls ``unavailable(reason)``:

- normally it is skipped with that reason (``pytest -ra`` lists it);
- when the environment variable ``CI`` is ``true`` (case-insensitive; CI runs ``.ci/run`` with
  ``CI=true``), it fails instead, so a CI machine that lost a package or the mirror cannot turn
  required tests into silent skips. (The rule is ``tests/_require.py``'s; the messages here
  are this directory's.)
"""

from __future__ import annotations

import shutil
from typing import NoReturn

import pytest

from tests._require import ci_enforced


def in_ci() -> bool:
    return ci_enforced()


def unavailable(reason: str) -> NoReturn:
    """Skip the current test, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"required test cannot run in CI (CI=true): {reason}", pytrace=False)
    pytest.skip(reason)


def require_program(program: str, debian_package: str) -> str:
    """The path of ``program``, or ``unavailable`` naming the Debian package that provides it."""
    path = shutil.which(program)
    if path is None:
        unavailable(f"{program} is not installed (Debian package {debian_package})")
    return path
