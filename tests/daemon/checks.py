"""What "every container image fixed exactly once and nothing else changed" means, checked."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Protocol

from hookd.testing.daemon_config import wait_for
from tests.daemon.harness import template_attrs


class Sim(Protocol):
    def export_app(self, app_id: int, datastore_id: int, name: str | None = None,
                   vmtemplate_name: str | None = None,
                   tag: str | None = None) -> tuple[int, int | None]: ...

    def image_xml(self, image_id: int) -> str: ...

    def template_xml(self, template_id: int) -> str: ...


@dataclass(frozen=True)
class Export:
    image_id: int
    template_id: int
    hypervisor: str  # "kvm", "firecracker" or "lxc"


DOCKERHUB = ("nginx", "alpine", "redis", "postgres", "httpd")
TARGETS = (("kvm-images", "kvm"), ("fc-images", "firecracker"))


def burst(sim: Sim, seed: dict[str, dict[str, int]], count: int, prefix: str) -> list[Export]:
    """Export ``count`` Docker Hub apps, alternating KVM and Firecracker datastores."""
    out = []
    for i in range(count):
        app = DOCKERHUB[i % len(DOCKERHUB)]
        ds_name, hv = TARGETS[i % len(TARGETS)]
        image_id, template_id = sim.export_app(seed["apps"][f"dockerhub/{app}"],
                                               seed["datastores"][ds_name], name=f"{prefix}-{i}")
        assert template_id is not None
        out.append(Export(image_id, template_id, hv))
    return out


def image_attr(sim: Sim, image_id: int, name: str) -> str | None:
    value = template_attrs(sim.image_xml(image_id)).get(name)
    return value if isinstance(value, str) else None


def is_fixed(sim: Sim, export: Export) -> bool:
    if image_attr(sim, export.image_id, "HOOKD_STATUS") != "applied":
        return False
    attrs = template_attrs(sim.template_xml(export.template_id))
    os_vec, ctx = attrs.get("OS") or {}, attrs.get("CONTEXT") or {}
    if not isinstance(os_vec, dict) or not isinstance(ctx, dict):
        return False
    if not os_vec.get("KERNEL_DS", "").startswith("$FILE[IMAGE_ID="):
        return False
    if export.hypervisor == "kvm" and os_vec.get("ROOT") != "vda":
        return False
    script = ctx.get("START_SCRIPT_BASE64", "")
    return bool(script) and base64.b64decode(script).startswith(b"#!/bin/sh")


def wait_all_fixed(sim: Sim, exports: list[Export], timeout: float) -> None:
    wait_for(lambda: all(is_fixed(sim, e) for e in exports), timeout,
             f"{len(exports)} images to be fixed", interval=0.2)


def assert_fixed_exactly_once(changes: dict[int, int], exports: list[Export],
                              allowed_other: set[int] | None = None) -> None:
    """Each exported template's content changed exactly once after export (hookd's fix);
    no other template changed at all."""
    expected = {e.template_id for e in exports}
    wrong = {tid: n for tid, n in changes.items() if tid in expected and n != 1}
    assert not wrong, f"templates changed more than once: {wrong}"
    missing = expected - set(changes)
    assert not missing, f"templates never changed by hookd: {sorted(missing)}"
    others = set(changes) - expected - (allowed_other or set())
    assert not others, f"templates hookd had no business changing: {sorted(others)}"
