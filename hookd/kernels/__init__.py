"""Kernel inspection: is this file a kernel that boots OpenNebula VMs on KVM or Firecracker?

A wrong kernel makes every VM fail at boot, and kernel files are untrusted input (operators
upload them), so hookd inspects a kernel before attaching it (``OS/KERNEL_DS``):

>>> report = inspect_kernel("/boot/vmlinux-6.1.0-56-cloud-amd64")     # doctest: +SKIP
>>> verdict = check_kernel(report, "kvm")                              # doctest: +SKIP
>>> verdict.usable, verdict.reason, verdict.warnings                   # doctest: +SKIP

``verify_kernel(path, hypervisor)`` does both, with inspection errors folded into the verdict;
``extract_vmlinux(bzimage_path, out_path)`` writes the vmlinux inside a bzImage.

The module does no logging and no I/O besides reading the files it is given (and, for
``extract_vmlinux``, writing its output and running ``lz4``/``zstd``/``lzop`` when needed).
"""

from __future__ import annotations

from hookd.kernels.extract import extract_vmlinux
from hookd.kernels.inspection import inspect_kernel
from hookd.kernels.model import (
    CHECKED_OPTIONS,
    KernelExtractionError,
    KernelInspectionError,
    KernelReport,
    KernelVerdict,
)
from hookd.kernels.verify import check_kernel, verify_kernel

__all__ = [
    "CHECKED_OPTIONS",
    "KernelExtractionError",
    "KernelInspectionError",
    "KernelReport",
    "KernelVerdict",
    "check_kernel",
    "extract_vmlinux",
    "inspect_kernel",
    "verify_kernel",
]
