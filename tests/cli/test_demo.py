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
        # 7.x: the KVM-only import is re-targeted and applied, LXC needs nothing, and a
        # person's template on the mixed cluster gets the preferred hypervisor.
        stories = out.split("\n== ")[1:]
        assert len(stories) == 4 and all("HOOKD_STATUS=applied" in s for s in stories)
        kvm_only, lxc_only, mixed_export, mixed_person = stories
        assert "re-targeted to kvm" in kvm_only and "DEV_PREFIX=vd" in kvm_only
        assert "HYPERVISOR                       lxc" in kvm_only
        assert "-> HYPERVISOR=kvm & ARCH=x86_64" in kvm_only
        assert "nothing to change" in lxc_only and "nothing to change" in mixed_export
        assert "chose kvm among kvm, lxc" in mixed_person
        assert '-> HYPERVISOR="kvm"' in mixed_person and "-> vda" in mixed_person
        assert "waiting" not in out
    # The history the demo prints comes from hookd's own log.
    history = out.split("What hookd changed", 1)[1]
    assert "TIME (UTC)" in history and "status - -> " in history
