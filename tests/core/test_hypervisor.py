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
    r = resolve(template_hypervisor="LXC", requirements='HYPERVISOR="kvm"',
                host_hypervisors=["kvm", "lxc"], override=None)
    assert r.candidates == ("lxc",) and not r.needs_pin  # HYPERVISOR beats requirements
    r = resolve(template_hypervisor="lxc", requirements=None, host_hypervisors=["kvm"],
                override=None)
    assert r.candidates == () and r.allowed == ("lxc",)  # but only where the image is
    r = resolve(template_hypervisor=None, requirements='HYPERVISOR="lx*"',
                host_hypervisors=["kvm", "lxc"], override=None, known=KNOWN)
    assert r.candidates == ("lxc",) and not r.needs_pin
    r = resolve(template_hypervisor=None, requirements=None,
                host_hypervisors=["lxc", "kvm", "kvm"], override=None)
    assert r.candidates == ("kvm", "lxc") and r.needs_pin


def test_pin_keeps_existing_requirements() -> None:
    assert pin_requirements(None, "kvm") == 'HYPERVISOR="kvm"'
    assert pin_requirements("ARCH=x86_64", "kvm") == '(ARCH=x86_64) & HYPERVISOR="kvm"'
    filt = requirement_filter(pin_requirements('HYPERVISOR="lx*" | CPU>1', "lxc"))
    assert [hv for hv in KNOWN if filt.allows(hv)] == ["lxc"]
