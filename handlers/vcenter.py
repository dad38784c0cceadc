"""vCenter cannot run container images; hookd says so and changes nothing.

"Container images are not supported for vCenter hypervisor." (OpenNebula docs,
container_images_usage.rst, 6.0 - 6.8; vCenter was removed in 7.0.)
"""

from __future__ import annotations

from handlers.base import HandlerInput
from handlers.model import HandlerResult


def handle(inp: HandlerInput) -> HandlerResult:
    return HandlerResult(
        "unsupported",
        "vCenter cannot run container images (OpenNebula supports them on KVM, Firecracker "
        "and LXC only)",
    )


def unknown(inp: HandlerInput) -> HandlerResult:
    return HandlerResult(
        "unsupported",
        f"no hookd handler for hypervisor {inp.hypervisor!r} (VM_MAD); hookd knows kvm, qemu, "
        f"firecracker, lxc, lxd and vcenter",
    )
