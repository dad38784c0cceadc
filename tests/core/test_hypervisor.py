from __future__ import annotations

import pytest

from handlers.hypervisor import pin_requirements, requirement_filter, resolve

KNOWN = ("kvm", "qemu", "lxc", "lxd", "firecracker", "vcenter")


@pytest.mark.parametrize(("text", "allowed"), [
    ('HYPERVISOR="lx*"', {"lxc", "lxd"}),  # TurnKey / 6.x Linux Containers template
    ("HYPERVISOR=lxc & ARCH=x86_64", {"lxc"}),  # 7.x Linux Containers template
    ('HYPERVISOR="kvm" | HYPERVISOR="firecracker"', {"kvm", "firecracker"}),
    ('!(HYPERVISOR="vcenter")', set(KNOWN) - {"vcenter"}),
    ("HYPERVISOR!=kvm", set(KNOWN) - {"kvm"}),
    ("CPUSPEED > 1000", set(KNOWN)),  # says nothing about hypervisors
    ("ARCH=x86_64 | HYPERVISOR=kvm", set(KNOWN)),  # unknown | x: cannot exclude anyone
])
def test_requirements(text: str, allowed: set[str]) -> None:
    filt = requirement_filter(text)
    assert {hv for hv in KNOWN if filt.allows(hv)} == allowed


def test_unparseable_requirements_do_not_exclude() -> None:
    filt = requirement_filter("HYPERVISOR = (")
    assert filt.error
    assert all(filt.allows(hv) for hv in KNOWN)


def test_resolution_order() -> None:
    assert resolve(template_hypervisor=None, requirements=None, host_hypervisors=["kvm"],
                   override="lxc").candidates == ("lxc",)
    # The scheduler reads SCHED_REQUIREMENTS, never the template's HYPERVISOR (no scheduler
    # code of 6.8.3 or 7.4.0 does): requirements that name hypervisors decide.
    r = resolve(template_hypervisor="LXC", requirements='HYPERVISOR="kvm"',
                host_hypervisors=["kvm", "lxc"], override=None, known=KNOWN)
    assert r.candidates == ("kvm",) and r.conflict == "lxc" and r.needs_pin
    r = resolve(template_hypervisor="kvm", requirements='HYPERVISOR="kvm" | HYPERVISOR="lxc"',
                host_hypervisors=["kvm", "lxc"], override=None, known=KNOWN)
    assert r.candidates == ("kvm",) and not r.conflict and r.needs_pin
    r = resolve(template_hypervisor="lxc", requirements=None, host_hypervisors=["kvm"],
                override=None)
    assert r.candidates == () and r.allowed == ("lxc",)  # but only where the image is
    # HYPERVISOR alone pins nothing: with kvm and lxc hosts the choice must be pinned.
    r = resolve(template_hypervisor="kvm", requirements=None, host_hypervisors=["kvm", "lxc"],
                override=None)
    assert r.candidates == ("kvm",) and r.needs_pin
    r = resolve(template_hypervisor="kvm", requirements=None, host_hypervisors=["kvm"],
                override=None)
    assert r.candidates == ("kvm",) and not r.needs_pin
    r = resolve(template_hypervisor=None, requirements='HYPERVISOR="lx*"',
                host_hypervisors=["kvm", "lxc"], override=None, known=KNOWN)
    assert r.candidates == ("lxc",) and r.needs_pin
    assert pin_requirements('HYPERVISOR="lx*"', "lxc", ["kvm", "lxc"]) == 'HYPERVISOR="lx*"'
    r = resolve(template_hypervisor=None, requirements=None, host_hypervisors=["kvm", "lxc"],
                override="kvm")
    assert r.candidates == ("kvm",) and r.needs_pin  # an override is pinned too
    r = resolve(template_hypervisor=None, requirements=None,
                host_hypervisors=["lxc", "kvm", "kvm"], override=None)
    assert r.candidates == ("kvm", "lxc") and r.needs_pin


def test_pin_keeps_existing_requirements() -> None:
    assert pin_requirements(None, "kvm", KNOWN) == 'HYPERVISOR="kvm"'
    assert pin_requirements("ARCH=x86_64", "kvm", KNOWN) == '(ARCH=x86_64) & HYPERVISOR="kvm"'
    filt = requirement_filter(pin_requirements('HYPERVISOR="lx*" | CPU>1', "lxc", KNOWN))
    assert [hv for hv in KNOWN if filt.allows(hv)] == ["lxc"]


def test_pin_is_idempotent() -> None:
    for current in (None, "ARCH=x86_64", 'HYPERVISOR="lx*" | CPU>1', 'HYPERVISOR!="vcenter"'):
        for hv in ("kvm", "lxc", "firecracker"):
            once = pin_requirements(current, hv, KNOWN)
            assert pin_requirements(once, hv, KNOWN) == once
    # qemu boots what kvm boots: a pin to kvm need not exclude it.
    assert pin_requirements('HYPERVISOR="kvm" | HYPERVISOR="qemu"', "kvm",
                            ["kvm", "qemu", "lxc"]) == 'HYPERVISOR="kvm" | HYPERVISOR="qemu"'
