"""``hookd demo`` is the README's first command: it must work with nothing but the package."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("version", ["6.8", "7.4"])
def test_demo_shows_the_fixes_and_exits_0(version: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "hookd", "demo", "--one-version", version],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "hookd is running" in out
    if version == "6.8":
        assert out.count("HOOKD_STATUS=applied") == 5
        for attribute in ("OS/KERNEL_DS", "OS/ROOT", "OS/KERNEL_CMD",
                          "CONTEXT/START_SCRIPT_BASE64", "SCHED_REQUIREMENTS"):
            assert attribute in out
        assert "-> vda" in out
        assert 'HYPERVISOR="kvm"' in out  # the mixed cluster: kvm preferred, then pinned
    else:
        assert "HOOKD_STATUS=waiting" in out and "HOOKD_STATUS=applied" in out
    # The history the demo prints comes from hookd's own log.
    history = out.split("What hookd changed", 1)[1]
    assert "TIME (UTC)" in history and "status - -> " in history
