"""The skip-or-fail rule for tests that need the system (root, busybox-static, gcc)."""

from __future__ import annotations

import pytest

from .harness import in_ci, unavailable


@pytest.mark.parametrize("value", ["true", "TRUE", " true "])
def test_ci_turns_a_skip_into_a_failure(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="required test cannot run in CI"):
        unavailable("no busybox")


@pytest.mark.parametrize("value", [None, "", "false", "1"])
def test_elsewhere_it_is_a_skip(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="no busybox"):
        unavailable("no busybox")
