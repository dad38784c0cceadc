"""LXC (and 6.x's LXD): the host kernel runs the container; nothing to attach.

"As container images are just filesystem images when using LXC no extra configuration is
required" (OpenNebula docs, container_images_usage.rst, 6.x). The LXC driver roots the first
DISK or the disk named first in OS/BOOT (src/vmm_mad/remotes/lib/opennebula_vm.rb); a Docker
image's START_SCRIPT is added by the planner for every hypervisor that can run the image.
"""

from __future__ import annotations

from handlers.base import HandlerInput, boot_want
from handlers.model import HandlerResult


def handle(inp: HandlerInput) -> HandlerResult:
    wants = tuple(boot_want(inp))
    return HandlerResult("applied", "" if wants else "nothing to change for lxc", wants)
