"""Per-hypervisor handlers: pure functions from facts to wanted template values.

Each handler takes a :class:`handlers.base.HandlerInput` and returns a
:class:`handlers.model.HandlerResult`; no I/O, no clock, no logging. The registry maps the
VM_MAD name OpenNebula uses to the handler.
"""

from __future__ import annotations

from collections.abc import Callable

from handlers import firecracker, kvm, lxc, vcenter
from handlers.base import HandlerInput
from handlers.model import HandlerResult

Handler = Callable[[HandlerInput], HandlerResult]

REGISTRY: dict[str, Handler] = {
    "kvm": kvm.handle,
    "qemu": kvm.handle,
    "firecracker": firecracker.handle,
    "lxc": lxc.handle,
    "lxd": lxc.handle,
    "vcenter": vcenter.handle,
}


def handler_for(hypervisor: str) -> Handler:
    return REGISTRY.get(hypervisor.lower(), vcenter.unknown)


__all__ = ["REGISTRY", "Handler", "HandlerInput", "HandlerResult", "handler_for"]
