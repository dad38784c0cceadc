"""A stand-in for systemd's notification socket, for driving ``hookd run`` in a subprocess.

It binds a datagram socket at a path (give it to the daemon as ``NOTIFY_SOCKET``) and records
every message with the monotonic time it arrived, from a background thread, so a test or a
benchmark can ask what hookd told systemd and when.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    """Records ``(monotonic time, message)`` for each datagram hookd sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def first(self, assignment: str) -> float | None:
        """When a message carrying the line ``assignment`` (e.g. ``READY=1``) first arrived."""
        for when, message in list(self.messages):
            if assignment in message.split("\n"):
                return when
        return None

    def seen(self, assignment: str) -> bool:
        return self.first(assignment) is not None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
