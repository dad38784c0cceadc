"""``hookd check``: one line per prerequisite, OK or FAIL with a hint; exit 1 on any FAIL."""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from handlers.errors import HookdError
from hookd.config import Config, load, read_session
from hookd.logs import redact_text


@dataclass(frozen=True)
class Line:
    ok: bool
    what: str
    detail: str
    hint: str = ""

    def render(self) -> str:
        """The line as printed; oned's and the registry's texts are redacted like the log."""
        text = f"{'OK  ' if self.ok else 'FAIL'}  {self.what}: {redact_text(self.detail)}"
        if not self.ok and self.hint:
            text += f"\n      hint: {redact_text(self.hint)}"
        return text


def check_auth_file(path: Path | None) -> Line:
    if path is None:
        return Line(False, "credentials", "no ONE_AUTH file found",
                    "set one.auth_file in hookd.conf or $ONE_AUTH, or create "
                    "/var/lib/one/.one/one_auth (user:password)")
    try:
        info = path.stat()
    except OSError as exc:
        return Line(False, "credentials", f"{path}: {exc.strerror}",
                    "hookd runs as oneadmin and reads oneadmin's one_auth")
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        return Line(False, "credentials",
                    f"{path} is readable or writable by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):04o})",
                    f"chmod 600 {path}")
    if not os.access(path, os.R_OK):
        return Line(False, "credentials", f"{path} is not readable by this user",
                    "run hookd check as the user the service runs as (oneadmin)")
    try:
        read_session(path)
    except HookdError as exc:
        return Line(False, "credentials", exc.reason)
    return Line(True, "credentials", f"{path} (mode {stat.S_IMODE(info.st_mode):04o})")


def check_zmq(endpoint: str, timeout: float) -> Line:
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sub.connect(endpoint)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if monitor.poll(int(left * 1000)):
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return Line(True, "event stream", f"ZMTP handshake with {endpoint}")
        return Line(False, "event stream", f"no ZMTP handshake with {endpoint} within "
                    f"{timeout:g} s",
                    "is oned running with its hook manager (HM_MAD one_hm -p 2101)? one_hm "
                    "binds 127.0.0.1 by default (-b): run hookd on the front-end or change "
                    "-b in oned.conf")
    except zmq.ZMQError as exc:
        return Line(False, "event stream", f"{endpoint}: {exc}",
                    "one.zmq must look like tcp://localhost:2101")
    finally:
        sub.disable_monitor()
        monitor.close(0)
        sub.close(0)
        context.term()


def check_metrics(listen: str) -> Line:
    """The metrics address can be bound now (loopback only, not in use)."""
    from hookd.metrics import HookdMetrics, MetricsServer

    host, _, port = listen.rpartition(":")
    try:
        server = MetricsServer(HookdMetrics().registry, host=host.strip("[]") or "127.0.0.1",
                               port=int(port))
        server.start()
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE and _serves_hookd(listen):
            return Line(True, "metrics", f"{listen} is served by a running hookd")
        return Line(False, "metrics", f"{listen}: {getattr(exc, 'strerror', None) or exc}",
                    "metrics.listen must be a free loopback address:port")
    server.stop()
    return Line(True, "metrics", f"{listen} can be served")


def _serves_hookd(listen: str) -> bool:
    import http.client

    conn = http.client.HTTPConnection(listen, timeout=2.0)  # it splits host:port, [IPv6]:port
    try:
        conn.request("GET", "/metrics")
        return b"hookd_info" in conn.getresponse().read(1 << 20)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def run_checks(config_path: Path | None, *, zmq_timeout: float = 3.0,
               out: TextIO = sys.stdout) -> int:
    lines: list[Line] = []

    def emit(line: Line) -> None:
        lines.append(line)
        print(line.render(), file=out, flush=True)

    try:
        config = load(config_path)
    except HookdError as exc:
        emit(Line(False, "configuration", exc.reason))
        return 1
    emit(Line(True, "configuration", config.where))
    emit(Line(True, "endpoints", f"xmlrpc {config.xmlrpc} (from {config.xmlrpc_origin}), "
              f"events {config.zmq} (from {config.zmq_origin})"))
    if config.metrics.listen:
        emit(check_metrics(config.metrics.listen))
    auth = check_auth_file(config.auth_file)
    emit(auth)
    if auth.ok:
        _oned_checks(config, emit)
    emit(check_zmq(config.zmq, zmq_timeout))
    return 0 if all(line.ok for line in lines) else 1


def _oned_checks(config: Config, emit: Callable[[Line], None]) -> None:
    from handlers.facts import DS_FILE
    from hookd.daemon import build
    from hookd.logs import configure_logging

    configure_logging(level="error", stream=sys.stderr)
    try:
        c = build(config)
    except HookdError as exc:
        emit(Line(False, "setup", exc.reason))
        return
    try:
        user = c.client.whoami()
    except HookdError as exc:
        hint = ("check user:password in the ONE_AUTH file"
                if "authenticat" in exc.reason.lower()
                else f"is oned running and listening on {config.xmlrpc}?")
        emit(Line(False, "oned XML-RPC", exc.reason, hint))
        return
    emit(Line(True, "oned XML-RPC", f"{config.xmlrpc}: authenticated as "
              f"{user.findtext('NAME')} (uid {user.findtext('ID')})"))
    try:
        version = c.client.version()
        c.world.refresh()
    except HookdError as exc:
        emit(Line(False, "oned version", exc.reason))
        return
    snap = c.world.snapshot
    markets = sorted({m.market_mad for m in snap.markets.values()})
    vm_mads = sorted({h.vm_mad for h in snap.hosts})
    emit(Line(True, "oned version", f"{version}; marketplaces: {', '.join(markets) or 'none'}; "
              f"VM_MADs: {', '.join(vm_mads) or 'no hosts yet'}"))
    try:
        raft = c.client.raft()
        role = raft.state_name.lower() if raft.ha_enabled else "solo (HA off)"
        note = "" if raft.may_act else "; hookd stands by until this oned becomes leader"
        emit(Line(True, "raft role", role + note))
    except HookdError as exc:
        emit(Line(False, "raft role", exc.reason))
    file_datastore = any(d.type == DS_FILE for d in snap.datastores.values())
    for hv in ("kvm", "firecracker"):
        if config.kernels.refs()[hv] is None:
            if any(m in ((hv, "qemu") if hv == "kvm" else (hv,)) for m in vm_mads):
                emit(Line(False, f"{hv} kernel", f"{hv} hosts exist but kernels.{hv} is not set",
                          f"register one with: hookd kernel register FILE --hypervisor {hv} "
                          f"--datastore <file datastore id>, then set kernels.{hv}"))
            continue
        choice = snap.kernels.get(hv)
        if choice is None:
            emit(Line(False, f"{hv} kernel", snap.kernel_problems.get(hv, "not found")))
        elif not choice.usable:
            emit(Line(False, f"{hv} kernel", choice.reason,
                      f"hookd kernel check FILE --hypervisor {hv} shows why"))
        else:
            extra = f" ({'; '.join(choice.warnings)})" if choice.warnings else ""
            emit(Line(True, f"{hv} kernel", f"image {choice.image_id} ({choice.name}, owner "
                      f"{choice.owner}, datastore {choice.datastore}){extra}"))
        if not file_datastore:
            emit(Line(False, f"{hv} kernel", "no file datastore (Kernels & Files) exists"))
    if not config.start_script.enabled or not {"dockerhub", "docker_registry"} & set(markets):
        emit(Line(True, "registry", "no Docker marketplace on this front-end (or start "
                  "scripts disabled): no registry needed"))
        return
    from hookd.oci import DOCKER_HUB_API_HOST, probe
    from hookd.settings import registry_settings

    settings = registry_settings(config)
    target = next(iter(settings.mirrors.get(DOCKER_HUB_API_HOST, ())), DOCKER_HUB_API_HOST)
    ok, detail = probe(settings, target)
    emit(Line(ok, "registry", f"Docker Hub via {target}: {detail}",
              "hookd reads image configs from the registry; set registries.mirrors "
              "if the front-end has no Internet access"))
