"""The processes a benchmark runs: the simulator and ``hookd run``, plus /proc readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import yaml

from hookd.testing.client import SimulatorClient
from hookd.testing.daemon_config import simulator_config, wait_for
from hookd.testing.notify import NotifySocket
from hookd.testing.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "bench-Pa55-w0rd-for-hookd"  # noqa: S105 - the simulator's throwaway admin


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONE_", "NOTIFY_",
                                                                     "WATCHDOG_"))}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# -- /proc -------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/<pid>/stat), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class RssSampler:
    """Samples VmRSS every ``interval`` seconds; VmHWM gives the kernel's exact peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
                self.samples += 1
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def free_port() -> int:
    """A loopback TCP port free right now (for hookd's metrics endpoint)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str, names: tuple[str, ...], timeout: float = 1.0) -> dict[str, float]:
    """The unlabelled samples ``names`` from a Prometheus text endpoint ({} if unreachable)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


class Timeline:
    """Every ``interval`` seconds: hookd's RSS (/proc) and, when ``metrics_url`` is set, its
    queue depth and in-flight count (``hookd_queue_depth``, ``hookd_in_flight``: the main
    loop updates them about once a second). Rows: [seconds since start, RSS MB, depth,
    in flight] (depth and in flight None when the endpoint did not answer)."""

    def __init__(self, pid: int, metrics_url: str | None = None, interval: float = 0.5) -> None:
        self.pid = pid
        self.metrics_url = metrics_url
        self.interval = interval
        self.rows: list[list[float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> Timeline:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        names = ("hookd_queue_depth", "hookd_in_flight")
        while not self._stop.is_set():
            try:
                rss = status_kb(self.pid, "VmRSS") * 1024 / 1e6
            except (OSError, KeyError):
                return
            metrics = scrape(self.metrics_url, names) if self.metrics_url else {}
            self.rows.append([round(time.monotonic() - self._t0, 2), round(rss, 1),
                              metrics.get("hookd_queue_depth"),
                              metrics.get("hookd_in_flight")])
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, Any]:
        rows = self.rows
        depths = [r[2] for r in rows if r[2] is not None]
        peak = max(rows, key=lambda r: r[1] or 0.0, default=None)
        return {
            "interval_seconds": self.interval, "samples": len(rows),
            "peak_rss_mb": peak[1] if peak else None,
            "peak_rss_at_seconds": peak[0] if peak else None,
            "queue_depth_at_peak_rss": peak[2] if peak else None,
            "in_flight_at_peak_rss": peak[3] if peak else None,
            "max_queue_depth": max(depths) if depths else None,
            "columns": ["seconds", "rss_mb", "queue_depth", "in_flight"],
            "rows": rows,
        }


# -- the simulator -------------------------------------------------------------------------------
class SimProcess:
    """``python -m benchmarks.simproc``: the simulator (and the fake registry) in its own
    process, controlled over its ``sim.*`` namespace."""

    def __init__(self, *, ready_delay: float, workdir: Path, timeout: float = 60.0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = workdir / "simulator.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.simproc", "--xmlrpc", "127.0.0.1:0",
             "--zmq", "tcp://127.0.0.1:0", "--auth", f"oneadmin:{PASSWORD}",
             "--ready-delay", str(ready_delay)],
            stdout=subprocess.PIPE, stderr=self._stderr, env=child_env(), cwd=REPO_ROOT)
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError("no stdout pipe")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline().decode()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        banner = lines[0].strip() if lines else ""
        if not banner.startswith("hookd-simulator listening "):
            self.stop()
            raise RuntimeError(f"simulator did not start: {banner!r}; see {self.stderr_path}")
        fields = dict(part.split("=", 1) for part in banner.split()[2:])
        self.xmlrpc_url = fields["xmlrpc"]
        self.zmq_url = fields["zmq"]
        self.registry_host = fields["registry"]
        self.client = SimulatorClient(self.xmlrpc_url, timeout=1800.0)
        self.seed = self.client.seed_info()

    @property
    def pid(self) -> int:
        return self.process.pid

    def bench(self, name: str, *params: Any) -> Any:
        return self.client.controls.invoke(f"bench.{name}", *params)

    def stop(self) -> None:
        stop_process(self.process, 30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


# -- hookd -----------------------------------------------------------------------------------------
def hookd_config(workdir: Path, *, xmlrpc: str, zmq: str, registry_host: str,
                 kernels: Mapping[str, int], workers: int,
                 extra: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """A hookd.conf with the production defaults except what a benchmark must set: the
    endpoints, the credentials, the kernels, the registry mirror, paths and the periodic
    sweep (pushed out of the measurement: see the report's notes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = simulator_config(
        workdir, xmlrpc=xmlrpc, zmq=zmq, session=f"oneadmin:{PASSWORD}",
        registry=registry_host, kernels=kernels,
        reconcile={"workers": workers, "sweep_interval": 86400},
        log={"format": "json", "level": "info"})
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    path = workdir / "hookd.conf"
    path.write_text(yaml.safe_dump(config))
    return path


_KEPT_EVENTS = frozenset({"sweep.done", "hookd.ready", "hookd.stopped", "hookd.reloaded"})


class HookdProcess:
    """``python -m hookd run --config FILE`` as systemd runs it (Type=notify, WatchdogSec=30,
    JSON lines on stdout, which goes to a file here instead of the journal)."""

    def __init__(self, workdir: Path, config: Path, *, pythonpath: str = "") -> None:
        self.workdir = workdir
        self.config = config
        self.pythonpath = pythonpath
        self.stdout_path = workdir / "hookd.stdout"
        self.notify: NotifySocket | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._out: IO[bytes] | None = None
        self._offset = 0
        self._seen: dict[str, list[dict[str, Any]]] = {}

    def start(self) -> HookdProcess:
        sock = Path(tempfile.gettempdir()) / f"hookd-bench-{os.getpid()}-{id(self)}.sock"
        self.notify = NotifySocket(sock)
        env = child_env({"NOTIFY_SOCKET": str(sock), "WATCHDOG_USEC": "30000000",
                         "PYTHONFAULTHANDLER": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath + os.pathsep + env["PYTHONPATH"]
        self._offset = self.stdout_path.stat().st_size if self.stdout_path.exists() else 0
        self._seen = {}
        self._out = self.stdout_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hookd", "run", "--config", str(self.config)],
            stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("hookd is not running")
        return self.process.pid

    def ready_at(self) -> float | None:
        return self.notify.first("READY=1") if self.notify is not None else None

    def wait_ready(self, timeout: float) -> float:
        wait_for(lambda: self.ready_at() is not None or not self.alive(), timeout,
                 "READY=1 from hookd", interval=0.02)
        when = self.ready_at()
        if when is None:
            raise RuntimeError(f"hookd exited before READY=1; see {self.stdout_path}")
        return when

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def hwm_kb(self) -> int:
        return status_kb(self.pid, "VmHWM")

    def rss_kb(self) -> int:
        return status_kb(self.pid, "VmRSS")

    def signal(self, sig: int) -> None:
        if self.alive() and self.process is not None:
            self.process.send_signal(sig)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines with ``"event": name`` so far (read incrementally: the log of a
        long run is large and the runner shares the machine with what it measures)."""
        if self.stdout_path.exists():
            with self.stdout_path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            self._offset += end
            for line in data[:end].splitlines():
                if b'"event"' not in line:
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("event"), str):
                    event = cast(dict[str, Any], doc)
                    if event["event"] in _KEPT_EVENTS or event.get("level") in ("warning",
                                                                                 "error"):
                        self._seen.setdefault(event["event"], []).append(event)
        return list(self._seen.get(name, []))

    def problems(self) -> list[dict[str, Any]]:
        self.events("")
        return [e for events in self._seen.values() for e in events
                if e.get("level") in ("warning", "error")]

    def stop(self, timeout: float = 60.0) -> int:
        code = 0
        if self.process is not None:
            stop_process(self.process, timeout)
            code = int(self.process.returncode)
        if self._out is not None:
            self._out.close()
            self._out = None
        if self.notify is not None:
            self.notify.close()
            self.notify.path.unlink(missing_ok=True)
            self.notify = None
        return code


@dataclass
class Pool:
    """Bulk-created container images and the VM templates that use them (1:1)."""

    image_ids: list[int]
    template_ids: list[int]

    def __len__(self) -> int:
        return len(self.image_ids)
