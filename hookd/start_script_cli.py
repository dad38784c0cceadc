"""``hookd start-script``: print, readable, the START_SCRIPT hookd makes or a template carries.

For operators to review what runs in their VMs::

    hookd start-script --oci-config nginx-config.json [--name web] [--context-env]
    hookd start-script --fallback [--name web]
    hookd start-script --template 42 [--config /etc/one/hookd.conf]

``--oci-config`` takes an image config blob (``{"config": {...}}``), Docker Engine's form
(``{"Config": {...}}``) or ``docker image inspect`` output and prints the START_SCRIPT hookd
would inject for it; ``--fallback`` the one for images whose config cannot be read (it starts
``/one_entrypoint.sh``). Both print the readable form: in templates, the launcher's code (the
same for every image) is gzip-compressed and base64-encoded, here it is text; the script runs
the same either way. ``--template`` reads a VM template over XML-RPC (hookd's configuration
names oned and the credentials, as for ``hookd plan``) and prints its
``CONTEXT/START_SCRIPT_BASE64`` decoded (else ``CONTEXT/START_SCRIPT``), with hookd's packed
parts unpacked. Exit status 0 with the script on stdout, or 1 with one line on stderr saying
why there is none. Imports are kept light (the generator is imported only when the command
runs) so ``hookd --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "start-script"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``start-script``; its handler is :func:`run` (``set_defaults(func=run)``)."""
    parser = subparsers.add_parser(
        COMMAND,
        help="print the START_SCRIPT for an image config, or the one a template carries",
        description=(
            "Print, readable, the contextualization START_SCRIPT that hookd injects into VM "
            "templates for a container image (it starts the image's Entrypoint + Cmd inside "
            "the VM the way `docker run` would), or the one a VM template carries."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--oci-config",
        metavar="FILE.json",
        help="image config JSON (registry config blob, or `docker image inspect` output)",
    )
    source.add_argument(
        "--fallback",
        action="store_true",
        help="the script for images whose config cannot be read (starts /one_entrypoint.sh)",
    )
    source.add_argument(
        "--template",
        type=int,
        metavar="ID",
        help="decode the START_SCRIPT of this VM template (read from oned)",
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
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="with --template: hookd's configuration file (default /etc/one/hookd.conf)",
    )
    parser.set_defaults(func=run)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(message: str) -> int:
    print(f"hookd {COMMAND}: {_one_line(message)}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """Print the script to stdout and return 0, or one line to stderr and return 1."""
    if getattr(args, "template", None) is not None:
        return _from_template(int(args.template), getattr(args, "config", None))

    from handlers.start_script import (
        MAX_CONFIG_DOCUMENT_BYTES,
        StartScriptError,
        StartScriptOptions,
        build_start_script,
        load_oci_config,
        readable_fallback_script,
        readable_script,
    )

    try:
        options = StartScriptOptions(
            **({} if args.name is None else {"name": args.name}),
            context_env=bool(args.context_env),
        )
    except StartScriptError as exc:
        return _fail(exc.reason)
    if getattr(args, "fallback", False):
        sys.stdout.write(readable_fallback_script(options))
        sys.stdout.flush()
        return 0

    path = str(args.oci_config)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_DOCUMENT_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _fail(f"cannot read {path!r}: {reason}.")
    try:
        process = load_oci_config(data)
        build_start_script(process, options=options)  # the same checks (size) as hookd's
        script = readable_script(process, options)
    except StartScriptError as exc:
        return _fail(f"{path!r}: {exc.reason}")
    sys.stdout.write(script)
    sys.stdout.flush()
    return 0


def _from_template(template_id: int, config_path: str | None) -> int:
    import base64
    import binascii

    from handlers.errors import HookdError
    from handlers.start_script import readable_start_script
    from hookd.client import OneClient
    from hookd.config import load, read_session

    try:
        config = load(Path(config_path) if config_path else None)
        facts = OneClient(config.xmlrpc, read_session(config.auth_file)).template(template_id)
    except HookdError as exc:
        return _fail(f"template {template_id}: {exc.reason}")
    context = facts.template.vector("CONTEXT")
    encoded = context.get("START_SCRIPT_BASE64") if context else None
    plain = context.get("START_SCRIPT") if context else None
    if encoded:
        try:
            script = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return _fail(
                f"template {template_id} ({facts.name}): CONTEXT/START_SCRIPT_BASE64 is not "
                "base64 of UTF-8 text"
            )
    elif plain:
        script = plain
    else:
        return _fail(
            f"template {template_id} ({facts.name}) has no CONTEXT/START_SCRIPT_BASE64 and no "
            "CONTEXT/START_SCRIPT"
        )
    text = readable_start_script(script)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
    return 0
