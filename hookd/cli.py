"""The ``hookd`` command. Module-level imports stay light: ``hookd --help`` must be fast."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hookd import __version__


def _config_path(args: argparse.Namespace) -> Path | None:
    return Path(args.config) if args.config else None  # --config "": the default file


def cmd_run(args: argparse.Namespace) -> int:
    from hookd.daemon import run

    return run(_config_path(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from hookd.demo import run_demo

    return run_demo(one_version=args.one_version, verbose=args.verbose)


def cmd_check(args: argparse.Namespace) -> int:
    from hookd.check_cli import run_checks

    return run_checks(_config_path(args), zmq_timeout=args.zmq_timeout)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from hookd.operate import reconcile

    return reconcile(_config_path(args), images=args.image or [], dry_run=args.dry_run)


def cmd_plan(args: argparse.Namespace) -> int:
    from hookd.operate import plan

    return plan(_config_path(args), args.image_id)


def cmd_history(args: argparse.Namespace) -> int:
    from hookd.history import run_history

    return run_history(_config_path(args), log_file=args.log, image=args.image,
                       since=args.since, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd",
        description="Makes OpenNebula container-image imports bootable: kernel, root device "
                    "and START_SCRIPT, per hypervisor, automatically.",
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE",
                       help="configuration file (default /etc/one/hookd.conf)")
        return p

    p = with_config(sub.add_parser("run", help="run the service (what systemd starts)"))
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="fix imports on the built-in simulator and show the diff")
    p.add_argument("--one-version", choices=["6.8", "7.4"], default="6.8")
    p.add_argument("--verbose", action="store_true", help="also print hookd's log lines")
    p.set_defaults(func=cmd_demo)

    p = with_config(sub.add_parser(
        "check", help="check configuration, credentials, oned, events, kernels, registry"))
    p.add_argument("--zmq-timeout", type=float, default=3.0, metavar="SECONDS")
    p.set_defaults(func=cmd_check)

    p = with_config(sub.add_parser("reconcile", help="fix images now (all, or --image)"))
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--image", type=int, action="append", metavar="ID")
    p.set_defaults(func=cmd_reconcile)

    p = with_config(sub.add_parser("plan", help="what hookd would change for one image, and why"))
    p.add_argument("image_id", type=int, metavar="IMAGE_ID")
    p.set_defaults(func=cmd_plan)

    p = with_config(sub.add_parser("history", help="what hookd changed, from its log"))
    p.add_argument("--image", type=int, metavar="ID")
    p.add_argument("--since", metavar="WHEN", help="e.g. 2026-11-28, '2026-11-28 10:00', 2h, 3d")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--log", metavar="FILE",
                   help="JSON log file (default: log.file from the configuration, else "
                        "journalctl -u hookd)")
    p.set_defaults(func=cmd_history)

    from hookd import kernel_cli, start_script_cli

    kernel_cli.add_parser(sub)
    start_script_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result: int = func(args)
        return result
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
