"""``hookd start-script``: print the START_SCRIPT hookd would inject for an image config.

For operators to review what runs in their VMs::

    hookd start-script --oci-config nginx-config.json [--name web] [--context-env]

The file is an image config blob (``{"config": {...}}``), Docker Engine's form
(``{"Config": {...}}``) or ``docker image inspect`` output. Exit status 0 with the script on
stdout, or 1 with one line on stderr saying why no script can be made. Imports are kept
light (the generator is imported only when the command runs) so ``hookd --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys

COMMAND = "start-script"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``start-script``; its handler is :func:`run` (``set_defaults(func=run)``)."""
    parser = subparsers.add_parser(
        COMMAND,
        help="print the START_SCRIPT generated for an image config",
        description=(
            "Print the contextualization START_SCRIPT that hookd injects into VM templates "
            "for a container image: it starts the image's Entrypoint + Cmd inside the VM "
            "the way `docker run` would."
        ),
    )
    parser.add_argument(
        "--oci-config",
        required=True,
        metavar="FILE.json",
        help="image config JSON (registry config blob, or `docker image inspect` output)",
    )
    parser.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help="service (systemd unit / OpenRC service) name; default: hookd-app",
    )
    parser.add_argument(
        "--context-env",
        action="store_true",
        help="also give the app the VM's one-context variables, as /one_entrypoint.sh did",
    )
    parser.set_defaults(func=run)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run(args: argparse.Namespace) -> int:
    """Print the script to stdout and return 0, or one line to stderr and return 1."""
    from handlers.start_script import (
        MAX_CONFIG_DOCUMENT_BYTES,
        StartScriptError,
        StartScriptOptions,
        build_start_script,
        load_oci_config,
    )

    path = str(args.oci_config)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_DOCUMENT_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"hookd {COMMAND}: cannot read {path!r}: {reason}.", file=sys.stderr)
        return 1
    try:
        process = load_oci_config(data)
        if args.name is None:
            options = StartScriptOptions(context_env=bool(args.context_env))
        else:
            options = StartScriptOptions(name=args.name, context_env=bool(args.context_env))
        script = build_start_script(process, options=options)
    except StartScriptError as exc:
        print(f"hookd {COMMAND}: {path!r}: {_one_line(exc.reason)}", file=sys.stderr)
        return 1
    sys.stdout.write(script)
    sys.stdout.flush()
    return 0
