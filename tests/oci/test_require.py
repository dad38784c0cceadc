"""The CI rule: a missing system component skips locally and fails when CI=true."""

from __future__ import annotations

import pytest

from tests._require import ci_enforced, require


@pytest.mark.parametrize(
    ("environ", "enforced"),
    [({}, False), ({"CI": "true"}, True), ({"CI": "TRUE"}, True), ({"CI": "1"}, False)],
)
def test_ci_enforced(environ: dict[str, str], enforced: bool) -> None:
    assert ci_enforced(environ) is enforced


def test_missing_component_skips_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="docker-registry is missing"):
        require(False, "docker-registry is missing", environ={})


def test_missing_component_fails_in_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        require(False, "docker-registry is missing", environ={"CI": "true"})


def test_present_component_passes_everywhere() -> None:
    require(True, "unused", environ={"CI": "true"})
    require(True, "unused", environ={})
