"""Firecracker (OpenNebula 6.0 - 6.8): an uncompressed kernel and its command line.

The driver passes ``OS/KERNEL_CMD`` verbatim as ``boot_args`` and the kernel from
``KERNEL_DS`` as ``kernel_image_path`` (src/vmm_mad/remotes/lib/firecracker/opennebula_vm.rb);
Firecracker itself appends ``root=/dev/vda rw`` for the root drive, so hookd never adds
``root=``. OS/ROOT is not read by this driver, and INITRD is ignored (OpenNebula issue #5382).
The root drive is the first DISK or the disk named first in OS/BOOT.
"""

from __future__ import annotations

from handlers import cmdline
from handlers.base import (
    OS_KERNEL_CMD,
    HandlerInput,
    boot_want,
    kernel_want,
    usable_kernel,
)
from handlers.model import HandlerResult, Want


def handle(inp: HandlerInput) -> HandlerResult:
    kernel = usable_kernel("firecracker", inp.world)
    if isinstance(kernel, str):
        return HandlerResult("waiting", kernel)
    notes: list[str] = list(kernel.warnings)
    wants: list[Want] = [kernel_want(kernel)]
    current_cmd = inp.current(OS_KERNEL_CMD)
    wants.append(Want(OS_KERNEL_CMD,
                      cmdline.merge(current_cmd, inp.settings.firecracker_cmdline), "merge"))
    if cmdline.has_key(current_cmd, "root"):
        notes.append("KERNEL_CMD holds root=, but Firecracker appends root=/dev/vda itself")
    if inp.world.initrds.get("firecracker") is not None:
        notes.append("an initrd is configured for firecracker, but OpenNebula ignores INITRD "
                     "for Firecracker (issue #5382): the kernel needs its drivers built in")
    wants.extend(boot_want(inp))
    return HandlerResult("applied", "", tuple(wants), tuple(notes))
