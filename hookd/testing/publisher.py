"""Parent side of the event stream: the hook manager that feeds the driver child process.

Like oned's HookManager (``src/hm/HookManager.cc``), the simulator never touches ZeroMQ
itself: it queues each base64 HOOK_MESSAGE and a writer thread hands it, one line per
message, to the driver child (:mod:`hookd.testing.publisher_child`), which publishes. A
stalled or stopped child therefore never blocks request handling.

Controls model the failures of a real deployment:

* :meth:`Publisher.drop_next`: the next N messages reach nobody;
* :meth:`Publisher.restart`: kill the child, keep the port closed for a while, respawn on
  the same endpoint; messages produced meanwhile are lost (PUB/SUB keeps nothing);
* :meth:`Publisher.freeze` / :meth:`Publisher.thaw`: SIGSTOP/SIGCONT the child, so TCP
  stays up while ZMTP heartbeats go unanswered.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hookd.testing.netutil import loopback_zmq_endpoint

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class PublisherError(RuntimeError):
    """The driver child could not be started."""


class Publisher:
    """Owns the driver child process and the queue of messages to publish."""

    def __init__(self, bind: str, *, startup_timeout: float = 15.0) -> None:
        self._bind = loopback_zmq_endpoint(bind)
        self._startup_timeout = startup_timeout
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._state_lock = threading.RLock()
        self._child: subprocess.Popen[bytes] | None = None
        self._endpoint: str | None = None
        self._drop = 0
        self._down = False
        self._frozen = False
        self._published = 0
        self._dropped = 0
        self._writer: threading.Thread | None = None
        self._closed = False
        self._restart_lock = threading.Lock()

    # -- life-cycle ----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            raise PublisherError("publisher not started")
        return self._endpoint

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    def start(self) -> None:
        child, endpoint = self._spawn(self._bind)
        with self._state_lock:
            self._child, self._endpoint = child, endpoint
        self._writer = threading.Thread(target=self._write_loop, name="sim-hm-writer",
                                        daemon=True)
        self._writer.start()

    def _spawn(self, bind: str) -> tuple[subprocess.Popen[bytes], str]:
        """Start a driver child bound to ``bind``; return it and its endpoint."""
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "hookd.testing.publisher_child", "--bind", bind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        stdout = child.stdout
        if stdout is None:
            raise PublisherError("publisher child has no stdout pipe")
        ready: list[str] = []
        reader = threading.Thread(
            target=lambda: ready.append(stdout.readline().decode("ascii", "replace")),
            daemon=True,
        )
        reader.start()
        reader.join(self._startup_timeout)
        line = ready[0].strip() if ready else ""
        if not line.startswith("READY "):
            _reap(child, frozen=False)
            raise PublisherError(f"publisher child did not start on {bind} ({line!r})")
        return child, line.split(" ", 1)[1]

    def stop(self) -> None:
        with self._state_lock:
            self._closed = True
            child, frozen = self._child, self._frozen
            self._child, self._frozen = None, False
        self._queue.put(None)
        if child is not None:
            _reap(child, frozen=frozen)
        if self._writer is not None:
            self._writer.join(timeout=5)

    # -- publishing ----------------------------------------------------------------------
    def publish(self, message_b64: str) -> None:
        """Queue one base64 HOOK_MESSAGE (called with the world lock held)."""
        with self._state_lock:
            if self._closed:
                return
            if self._drop > 0:
                self._drop -= 1
                self._dropped += 1
                return
            if self._down:
                self._dropped += 1
                return
            self._published += 1
        self._queue.put(message_b64)

    def _write_loop(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            child = self._child
            if child is None or child.stdin is None:
                continue  # down: lost, as a restarting driver loses it
            try:
                child.stdin.write(message.encode("ascii") + b"\n")
                child.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                continue

    # -- controls ------------------------------------------------------------------------
    def drop_next(self, count: int) -> None:
        with self._state_lock:
            self._drop += max(0, count)

    def restart(self, down_seconds: float) -> None:
        """Kill the child, stay down ``down_seconds``, respawn on the same endpoint.

        Messages published meanwhile are counted as dropped; the state lock is never held
        while a process starts or stops, so request handling is not blocked.
        """
        with self._restart_lock:
            with self._state_lock:
                endpoint = self.endpoint
                child, frozen = self._child, self._frozen
                self._child, self._frozen, self._down = None, False, True
            if child is not None:
                _reap(child, frozen=frozen)
            time.sleep(max(0.0, down_seconds))
            deadline = time.monotonic() + self._startup_timeout
            while True:
                try:
                    new_child, _ = self._spawn(endpoint)
                    break
                except PublisherError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with self._state_lock:
                if self._closed:
                    _reap(new_child, frozen=False)
                    return
                self._child, self._down = new_child, False

    def freeze(self) -> None:
        with self._state_lock:
            if self._child is not None and not self._frozen:
                os.kill(self._child.pid, signal.SIGSTOP)
                self._frozen = True

    def thaw(self) -> None:
        with self._state_lock:
            if self._child is not None and self._frozen:
                os.kill(self._child.pid, signal.SIGCONT)
                self._frozen = False

    def stats(self) -> dict[str, int]:
        with self._state_lock:
            return {"published": self._published, "dropped": self._dropped,
                    "queued": self._queue.qsize(), "down": int(self._down),
                    "frozen": int(self._frozen)}


def _reap(child: subprocess.Popen[bytes], *, frozen: bool) -> None:
    """Close the pipes, kill and wait for a driver child (SIGCONT first when stopped)."""
    if frozen:
        try:
            os.kill(child.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    for stream in (child.stdin, child.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    child.kill()
    child.wait()
