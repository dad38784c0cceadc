"""``hookd kernel …``: check a kernel image for a hypervisor, extract a vmlinux from a bzImage,
register a kernel with oned. ``python -m hookd.kernel_cli kernel …`` runs it standalone.

Only ``argparse`` is imported at module level: ``hookd --help`` does not pay for ``hookd.kernels``.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``kernel`` and its sub-commands on the main CLI's ``subparsers``."""
    kernel = subparsers.add_parser(
        "kernel", help="inspect, check and extract kernel images",
        description="Kernel images for Firecracker and KVM (PVH) direct kernel boot: check that "
                    "one boots, or extract the uncompressed vmlinux from a bzImage.")
    commands = kernel.add_subparsers(dest="kernel_command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check", help="check that a kernel image can boot guests of a hypervisor",
        description="Inspect FILE and print one line per finding, then 'OK: usable for "
                    "<hypervisor>' (exit 0) or 'FAIL: <reason>' (exit 1).")
    check.add_argument("file", metavar="FILE", help="the kernel image (vmlinux, bzImage, Image)")
    check.add_argument("--hypervisor", required=True, choices=("kvm", "firecracker"),
                       help="the hypervisor that will boot it")
    check.add_argument("--config", metavar="FILE", help="the kernel's .config (default: "
                       "config-<release> beside FILE, else embedded IKCONFIG)")
    check.add_argument("--arch", choices=("x86_64", "aarch64"), default="x86_64",
                       help="host architecture (default: x86_64)")
    check.add_argument("--strict", action="store_true", help="fail, instead of warning, when "
                       "the config shows the root disk cannot be mounted")
    check.set_defaults(func=run_check)

    extract = commands.add_parser(
        "extract", help="extract the uncompressed ELF vmlinux from a bzImage",
        description="Decompress the vmlinux inside BZIMAGE (gzip, xz, bzip2, lzma, lz4, zstd, "
                    "lzo payloads; lz4/zstd/lzop need their programs) and write it atomically "
                    "to OUT.")
    extract.add_argument("bzimage", metavar="BZIMAGE", help="the compressed kernel (vmlinuz)")
    extract.add_argument("out", metavar="OUT", help="where to write the vmlinux")
    extract.set_defaults(func=run_extract)

    register = commands.add_parser(
        "register", help="check a kernel, then create it as a KERNEL image in a file datastore",
        description="Check FILE for the hypervisor (as 'kernel check' does) and, if usable, "
                    "create a KERNEL image from it in the file datastore DATASTORE (oned copies "
                    "the file, which must be readable on the front-end). Prints the new image ID "
                    "to put in hookd.conf under kernels:.")
    register.add_argument("file", metavar="FILE", help="the kernel image (vmlinux or Image)")
    register.add_argument("--hypervisor", required=True, choices=("kvm", "firecracker"))
    register.add_argument("--datastore", required=True, type=int, metavar="ID",
                          help="a Kernels & Files datastore (TYPE FILE_DS)")
    register.add_argument("--name", help="image name (default: kernel-<hypervisor>-<file>)")
    register.add_argument("--config", dest="hookd_config", metavar="FILE",
                          help="hookd configuration (default /etc/one/hookd.conf)")
    register.add_argument("--kernel-config", metavar="FILE",
                          help="the kernel's .config (default: beside FILE or embedded)")
    register.set_defaults(func=run_register)


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


def run_register(args: argparse.Namespace) -> int:
    """Check, then ``one.image.allocate`` a KERNEL image (PATH = the file) in a FILE_DS."""
    from pathlib import Path

    from handlers.errors import HookdError
    from handlers.facts import DS_FILE
    from hookd.config import load
    from hookd.documents import to_xml
    from hookd.kernels import verify_kernel
    from hookd.settings import one_client

    path = Path(args.file).resolve()
    verdict = verify_kernel(path, args.hypervisor, config_path=args.kernel_config)
    for warning in verdict.warnings:
        print(f"warning: {warning}")
    if not verdict.usable:
        print(f"FAIL: {verdict.reason}")
        return 1
    try:
        config = load(Path(args.hookd_config) if args.hookd_config else None)
        client = one_client(config)
        datastore = client.datastore(args.datastore)
        if datastore.type != DS_FILE:
            print(f"FAIL: datastore {datastore.id} ({datastore.name}) is not a file datastore "
                  f"(Kernels & Files); KERNEL images must live in one")
            return 1
        name = args.name or f"kernel-{args.hypervisor}-{path.name}"
        image_id = client.allocate_image(
            to_xml([("NAME", name), ("TYPE", "KERNEL"), ("PATH", str(path)),
                    ("DESCRIPTION", f"{args.hypervisor} kernel registered by hookd")]),
            datastore.id)
    except HookdError as error:
        print(f"FAIL: {error.reason}")
        return 1
    print(f"OK: created KERNEL image {image_id} ({name}) in datastore {datastore.id}; set "
          f"kernels: {{{args.hypervisor}: {image_id}}} in hookd.conf and reload hookd")
    return 0


if __name__ == "__main__":  # ``python -m hookd.kernel_cli kernel …`` is ``hookd kernel …``
    from hookd.cli import main

    sys.exit(main())
