"""``hookd kernel …``: check a kernel image for a hypervisor, extract a vmlinux from a bzImage.

Wiring (the main CLI builds the parser; each sub-command stores its handler in ``func``)::

    from hookd import kernel_cli
    kernel_cli.add_parser(subparsers)
    args = parser.parse_args()
    sys.exit(args.func(args))

``python -m hookd.kernel_cli kernel check FILE --hypervisor kvm`` runs it standalone.

Only ``argparse`` is imported at module level: ``hookd.kernels`` is imported by the handlers, so
``hookd --help`` does not pay for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``kernel`` and its sub-commands on the main CLI's ``subparsers``."""
    kernel = subparsers.add_parser(
        "kernel",
        help="inspect, check and extract kernel images",
        description=(
            "Kernel images for Firecracker and KVM (PVH) direct kernel boot: check that one "
            "boots, or extract the uncompressed vmlinux from a bzImage."
        ),
    )
    commands = kernel.add_subparsers(dest="kernel_command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="check that a kernel image can boot guests of a hypervisor",
        description=(
            "Inspect FILE and print one line per finding, then 'OK: usable for <hypervisor>' "
            "(exit 0) or 'FAIL: <reason>' (exit 1)."
        ),
    )
    check.add_argument("file", metavar="FILE", help="the kernel image (vmlinux, bzImage, Image)")
    check.add_argument(
        "--hypervisor",
        required=True,
        choices=("kvm", "firecracker"),
        help="the hypervisor that will boot it",
    )
    check.add_argument(
        "--config",
        metavar="FILE",
        help="the kernel's .config (default: config-<release> beside FILE, else embedded IKCONFIG)",
    )
    check.add_argument(
        "--arch",
        choices=("x86_64", "aarch64"),
        default="x86_64",
        help="host architecture (default: x86_64)",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail, instead of warning, when the config shows the root disk cannot be mounted",
    )
    check.set_defaults(func=run_check)

    extract = commands.add_parser(
        "extract",
        help="extract the uncompressed ELF vmlinux from a bzImage",
        description=(
            "Decompress the vmlinux inside BZIMAGE (gzip, xz, bzip2, lzma, lz4, zstd, lzo "
            "payloads; lz4/zstd/lzop need their programs) and write it atomically to OUT."
        ),
    )
    extract.add_argument("bzimage", metavar="BZIMAGE", help="the compressed kernel (vmlinuz)")
    extract.add_argument("out", metavar="OUT", help="where to write the vmlinux")
    extract.set_defaults(func=run_extract)

    # `hookd kernel register` (upload a checked vmlinux as a KERNEL image into a FILE_DS) is
    # registered here by the lead: add `commands.add_parser("register", ...)` with
    # `set_defaults(func=...)`, and import the OpenNebula client inside its handler, not at
    # module level.


def run_check(args: argparse.Namespace) -> int:
    from hookd.kernels import KernelInspectionError, check_kernel, inspect_kernel

    try:
        report = inspect_kernel(args.file, config_path=args.config)
    except KernelInspectionError as error:
        print(f"FAIL: {error.reason}")
        return 1
    for line in report.findings():
        print(line)
    verdict = check_kernel(report, args.hypervisor, arch=args.arch, strict=args.strict)
    for warning in verdict.warnings:
        print(f"warning: {warning}")
    if verdict.usable:
        print(f"OK: usable for {args.hypervisor}")
        return 0
    print(f"FAIL: {verdict.reason}")
    return 1


def run_extract(args: argparse.Namespace) -> int:
    from hookd.kernels import KernelInspectionError, extract_vmlinux

    try:
        report = extract_vmlinux(args.bzimage, args.out)
    except KernelInspectionError as error:
        print(f"FAIL: {error.reason}")
        return 1
    for line in report.findings():
        print(line)
    print(f"OK: wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m hookd.kernel_cli kernel check …``."""
    parser = argparse.ArgumentParser(prog="hookd")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
