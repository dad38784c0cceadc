"""The onehem side of the baseline: subscribe to READY events, run one hook process each.

Plays ``onehem-server``: a SUB socket on oned's event stream with the READY filter; for each
event, ``python -m benchmarks.onehem_hook`` with the image XML (``$TEMPLATE``) as argument,
at most ``concurrency`` processes at a time (hookd's worker count, for a fair comparison).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from benchmarks.procs import REPO_ROOT, child_env

_KEY = re.compile(rb"^EVENT STATE IMAGE/READY//(\d+) $")
_IMAGE = re.compile(rb"<IMAGE>.*</IMAGE>", re.DOTALL)


@dataclass
class HookRun:
    image_id: int
    started: float
    ended: float
    returncode: int
    report: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def wall(self) -> float:
        return self.ended - self.started


class HookRunner:
    def __init__(self, zmq_url: str, config: Path, templates: dict[int, int], *,
                 concurrency: int, scan: bool = False) -> None:
        self.zmq_url = zmq_url
        self.config = config
        self.templates = templates
        self.scan = scan
        self.runs: list[HookRun] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=concurrency)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._context = zmq.Context()
        self._thread = threading.Thread(target=self._listen, name="onehem", daemon=True)
        self._env = child_env()

    def start(self, timeout: float = 10.0) -> HookRunner:
        self._thread.start()
        if not self._connected.wait(timeout):
            raise TimeoutError("the baseline could not subscribe to the event stream")
        return self

    def _listen(self) -> None:
        sub = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"EVENT STATE IMAGE/READY/")
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sub.connect(self.zmq_url)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if monitor in events:
                    monitor.recv_multipart()
                    self._connected.set()
                if sub in events:
                    key, body = sub.recv_multipart()
                    match = _KEY.match(key)
                    if match is None:
                        continue
                    image_id = int(match.group(1))
                    if image_id in self.templates:
                        self._pool.submit(self._run_hook, image_id, body)
        finally:
            sub.disable_monitor()
            monitor.close(0)
            sub.close(0)

    def _run_hook(self, image_id: int, body: bytes) -> None:
        found = _IMAGE.search(base64.b64decode(body))
        template_b64 = base64.b64encode(found.group(0) if found else b"").decode()
        cmd = [sys.executable, "-m", "benchmarks.onehem_hook", "--config", str(self.config)]
        cmd += ["--scan"] if self.scan else ["--template-id", str(self.templates[image_id])]
        started = time.monotonic()
        proc = subprocess.run([*cmd, template_b64], capture_output=True, env=self._env,
                              cwd=REPO_ROOT, check=False)
        ended = time.monotonic()
        run = HookRun(image_id, started, ended, proc.returncode)
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        try:
            run.report = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            run.report = {}
        if proc.returncode != 0:
            run.error = proc.stderr.decode(errors="replace")[-2000:]
        with self._lock:
            self.runs.append(run)

    def wait_runs(self, ids: set[int], timeout: float) -> list[HookRun]:
        """The finished runs for ``ids``, once all have exited (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                runs = [r for r in self.runs if r.image_id in ids]
            if len(runs) >= len(ids) or time.monotonic() > deadline:
                return runs
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pool.shutdown(wait=True)
        self._context.term()
