"""``hookd start-script``: print, readable, the START_SCRIPT hookd makes or a template carries.

``--oci-config`` takes an image config blob (``{"config": {...}}``), Docker Engine's form
(``{"Config": {...}}``) or ``docker image inspect`` output; ``--template`` reads a VM
template over XML-RPC and decodes its ``CONTEXT/START_SCRIPT_BASE64`` (else
``CONTEXT/START_SCRIPT``). Exit status 0 with the script on stdout, or 1 with one line on
stderr saying why there is none. The generator is imported only when the command runs, so
``hookd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "start-script"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``start-script``; its handler is :func:`run` (``set_defaults(func=run)``)."""
    parser = subparsers.add_parser(
        COMMAND, help="print the START_SCRIPT for an image config, or the one a template carries",
        description="Print, readable, the contextualization START_SCRIPT that hookd injects into "
                    "VM templates for a container image (it starts the image's Entrypoint + Cmd "
                    "inside the VM the way `docker run` would), or the one a VM template "
                    "carries.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--oci-config", metavar="FILE.json", help="image config JSON (registry "
                        "config blob, or `docker image inspect` output)")
    source.add_argument("--fallback", action="store_true", help="the script for images whose "
                        "config cannot be read (starts /one_entrypoint.sh)")
    source.add_argument("--template", type=int, metavar="ID",
                        help="decode the START_SCRIPT of this VM template (read from oned)")
    parser.add_argument("--name", metavar="NAME", help="service (systemd unit / OpenRC service) "
                        "name; default: hookd-app")
    parser.add_argument("--context-env", action="store_true", help="also give the app the VM's "
                        "one-context variables, as /one_entrypoint.sh did")
    parser.add_argument("--config", metavar="FILE", help="with --template: hookd's "
                        "configuration file (default /etc/one/hookd.conf)")
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"hookd {COMMAND}: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _print(script: str) -> int:
    print(script, end="" if script.endswith("\n") else "\n", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Print the script to stdout and return 0, or one line to stderr and return 1."""
    if args.template is not None:
        return _from_template(args.template, args.config)

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
        options = StartScriptOptions(**({} if args.name is None else {"name": args.name}),
                                     context_env=args.context_env)
    except StartScriptError as exc:
        return _fail(exc.reason)
    if args.fallback:
        return _print(readable_fallback_script(options))
    path = str(args.oci_config)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_DOCUMENT_BYTES + 1)
    except OSError as exc:
        return _fail(f"cannot read {path!r}: {exc.strerror or exc}.")
    try:
        process = load_oci_config(data)
        build_start_script(process, options=options)  # the same checks (size) as hookd's
        return _print(readable_script(process, options))
    except StartScriptError as exc:
        return _fail(f"{path!r}: {exc.reason}")


def _from_template(template_id: int, config_path: str | None) -> int:
    import base64
    import binascii

    from handlers.errors import HookdError
    from handlers.start_script import readable_start_script
    from hookd.config import load
    from hookd.settings import one_client

    try:
        config = load(Path(config_path) if config_path else None)
        facts = one_client(config).template(template_id)
    except HookdError as exc:
        return _fail(f"template {template_id}: {exc.reason}")
    context = facts.template.vector("CONTEXT")
    encoded = context.get("START_SCRIPT_BASE64") if context else None
    plain = context.get("START_SCRIPT") if context else None
    if encoded:
        try:
            script = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return _fail(f"template {template_id} ({facts.name}): CONTEXT/START_SCRIPT_BASE64 "
                         "is not base64 of UTF-8 text")
    elif plain:
        script = plain
    else:
        return _fail(f"template {template_id} ({facts.name}) has no CONTEXT/START_SCRIPT_BASE64 "
                     "and no CONTEXT/START_SCRIPT")
    return _print(readable_start_script(script))
