"""hookd as it runs in production — a ``hookd run`` process — against a simulator.

The daemon gets a real configuration file, a ONE_AUTH file, a NOTIFY_SOCKET the test reads
(READY=1, STATUS=, WATCHDOG=1, STOPPING=1), and a JSON log file the test parses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

from hookd.testing.daemon_config import simulator_config, wait_for
from hookd.testing.notify import NotifySocket
from hookd.testing.processes import stop_process
from hookd.testing.registry import FakeRegistry

PASSWORD = "s3cr3t-Pa55-w0rd-for-hookd"

def template_attrs(xml: str) -> dict[str, Any]:
    """A VM template's TEMPLATE as {name: text | {sub: text}} (last one wins for repeats)."""
    root = etree.fromstring(xml.encode())
    element = root.find("TEMPLATE") if root.tag != "TEMPLATE" else root
    assert element is not None, "no TEMPLATE element"
    out: dict[str, Any] = {}
    for child in element:
        if len(child):
            out[child.tag] = {sub.tag: sub.text or "" for sub in child}
        else:
            out[child.tag] = child.text or ""
    return out


class Hookd:
    """One ``hookd run`` process (restartable)."""

    def __init__(self, workdir: Path, *, xmlrpc: str, zmq: str,
                 registry: FakeRegistry | None, settings: Mapping[str, Any] | None = None,
                 password: str = PASSWORD) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth_file = workdir / "one_auth"
        self.log_file = workdir / "hookd.log"
        self.stdout_file = workdir / "stdout.log"
        config = simulator_config(
            workdir, xmlrpc=xmlrpc, zmq=zmq, session=f"oneadmin:{password}", registry=registry,
            one={"timeout": 2.0, "connect_timeout": 1.0},
            events={"heartbeat_interval": 0.5, "heartbeat_timeout": 1.5,
                    "reconnect_initial": 0.05, "reconnect_max": 0.5},
            reconcile={"workers": 4, "backoff_initial": 0.05, "backoff_max": 0.5,
                       "attempts": 10, "sweep_interval": 600, "shutdown_timeout": 10},
            ha={"poll_interval": 0.3},
            log={"file": str(self.log_file), "format": "json", "level": "debug"})
        for section, values in (settings or {}).items():
            config.setdefault(section, {}).update(values)
        self.config_file = workdir / "hookd.conf"
        self.config_file.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None
        self.starts = 0

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0,
              env: Mapping[str, str] | None = None) -> Hookd:
        self.starts += 1
        if self.notify is not None:
            self.notify.close()
        sock_path = self.workdir / f"notify-{self.starts}.sock"
        self.notify = NotifySocket(sock_path)
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("ONE_", "NOTIFY_", "WATCHDOG_"))}
        environ.update({"NOTIFY_SOCKET": str(sock_path), "PYTHONUNBUFFERED": "1"})
        environ.update(env or {})
        with self.stdout_file.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hookd", "run", "--config", str(self.config_file)],
                stdout=out, stderr=subprocess.STDOUT, env=environ)
        if wait_ready:
            wait_for(lambda: self.notify is not None and self.notify.seen("READY=1"), timeout,
                     "READY=1 from hookd")
        return self

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if not stop_process(self.process, timeout):
            raise AssertionError("hookd did not stop within the timeout")
        return int(self.process.returncode)

    def close(self) -> None:
        self.kill()
        if self.notify is not None:
            self.notify.close()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        out = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and (name is None or doc.get("event") == name):
                out.append(doc)
        return out

    def output(self) -> str:
        return self.stdout_file.read_text(errors="replace") if self.stdout_file.exists() else ""
