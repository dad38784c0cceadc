"""systemd service notifications (sd_notify(3)) without libsystemd, and the watchdog pinger.

``$NOTIFY_SOCKET`` names an ``AF_UNIX`` datagram socket: a filesystem path or, when it starts
with ``@``, a name in the Linux abstract namespace. Each notification is one datagram of
newline-separated ``KEY=VALUE`` assignments. Without the variable (hookd started by hand, in a
container, in tests) every send is a no-op returning False; a failed send returns False too and
never raises: a daemon must not die because its supervisor is busy.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

#: systemd reads notifications into a buffer of a few kilobytes; a status line is for humans
#: (``systemctl status``) and is cut well below that.
STATUS_MAX_BYTES = 1024

# C0 controls, DEL and C1 controls are dropped; whitespace controls become spaces.
_CONTROL = {**dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)]),
            **dict.fromkeys(map(ord, "\t\n\r\v\f"), " ")}


def clean_status(text: str, max_bytes: int = STATUS_MAX_BYTES) -> str:
    """``text`` as one printable line of at most ``max_bytes`` UTF-8 bytes, cut at a character.

    A newline inside ``STATUS=`` would start a new assignment: ``"ok\\nREADY=1"`` must not tell
    systemd anything but a status.
    """
    line = " ".join(text.translate(_CONTROL).split())
    return line.encode(errors="replace")[:max_bytes].decode(errors="ignore").rstrip()


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


class Notifier:
    """Sends notifications to systemd, as ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and
    ``$WATCHDOG_PID`` in ``environ`` (default: the process's environment) say."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = value
        if value.startswith("@") and len(value) > 1:
            self.address = "\0" + value[1:]
        elif not value.startswith("/"):
            # Unset, empty or relative (invalid); vsock: forms (systemd >= 253, VMs) are not
            # used on a front-end. All mean "not under systemd" rather than a guess.
            self.address = None
        self._watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        self._watchdog_pid = _positive_int(env.get("WATCHDOG_PID"))

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as
        sd_watchdog_enabled(3) recommends.

        None when notifications are off, ``WatchdogSec=`` is not set, or ``$WATCHDOG_PID``
        names another process: a forked child must not keep its parent alive.
        """
        if self.address is None or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` that ``Type=notify-reload``
        (systemd >= 253) expects; older managers ignore the unknown assignment."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def notify(self, *assignments: str) -> bool:
        """Send single-line ``KEY=VALUE`` assignments as one datagram; True when sent."""
        if self.address is None:
            return False
        payload = "\n".join(assignments).encode(errors="replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A busy PID 1 (its socket buffer full) must not block the main loop for long.
                sock.settimeout(2.0)
                sock.sendto(payload, self.address)
        except OSError:
            return False
        return True


def _status(text: str | None) -> tuple[str, ...]:
    return () if text is None else (f"STATUS={clean_status(text)}",)


class WatchdogPinger:
    """Sends ``WATCHDOG=1`` at most every ``interval`` seconds.

    Call :meth:`maybe_ping` on every turn of the daemon's main loop, **never** from a helper
    thread or timer: the point of the watchdog is that a hung main loop stops the pings, so
    systemd's ``WatchdogSec=`` kills and restarts the service.
    """

    def __init__(self, notifier: Notifier, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def maybe_ping(self) -> bool:
        """Ping if ``interval`` has passed since the last ping; a failed send is retried on
        the next call. True when a ping was sent."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        if not self.notifier.notify("WATCHDOG=1"):
            return False
        self._last = now
        return True
