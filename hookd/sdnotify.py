"""systemd service notifications (sd_notify(3)) without libsystemd.

The protocol: ``$NOTIFY_SOCKET`` names an ``AF_UNIX`` datagram socket — a filesystem path
(``/run/systemd/notify``) or, when it starts with ``@``, a name in the Linux abstract namespace.
Each notification is **one datagram** of newline-separated ``KEY=VALUE`` assignments;
the kernel attaches the sender's credentials, which is how systemd checks ``NotifyAccess=``.

* :class:`Notifier` sends ``READY=1``, ``STATUS=…``, ``RELOADING=1``, ``STOPPING=1``,
  ``WATCHDOG=1`` and ``EXTEND_TIMEOUT_USEC=…``. Without ``$NOTIFY_SOCKET`` (hookd started by
  hand, in a container, in tests) every method is a silent no-op returning ``False``.
  Sending never raises: a failure returns ``False`` and :attr:`Notifier.last_error` says why,
  so the caller may log it — a daemon must not die because its supervisor is busy.
* :meth:`Notifier.watchdog_interval` reads ``$WATCHDOG_USEC``/``$WATCHDOG_PID`` (set by
  ``WatchdogSec=``) and returns how often to ping: half the timeout, as sd_watchdog_enabled(3)
  recommends, or ``None`` when the watchdog is off or meant for another process.
* :class:`WatchdogPinger` rate-limits ``WATCHDOG=1``. Call :meth:`WatchdogPinger.maybe_ping`
  **from the daemon's main loop**, never from a helper thread: the point of the watchdog is
  that a hung main loop stops the pings, so systemd kills and restarts the service.

Only the standard library is used, so this module can be imported anywhere (and first).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, MutableMapping

__all__ = ["Notifier", "WatchdogPinger", "clean_status"]

#: systemd reads notifications into a buffer of a few kilobytes; a status line is for humans
#: (``systemctl status``) and is cut well below that.
STATUS_MAX_BYTES = 1024

_ENV_SOCKET = "NOTIFY_SOCKET"
_ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
_ENV_WATCHDOG_PID = "WATCHDOG_PID"

# C0 controls, DEL and C1 controls. Tabs/newlines become spaces first (see clean_status).
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)])
_WHITESPACE_CONTROL = str.maketrans({"\t": " ", "\n": " ", "\r": " ", "\v": " ", "\f": " "})


def clean_status(text: str, max_bytes: int = STATUS_MAX_BYTES) -> str:
    """``text`` as one printable line of at most ``max_bytes`` UTF-8 bytes.

    A newline inside ``STATUS=`` would start a new assignment (``"ok\\nREADY=1"`` must not
    tell systemd anything but a status), so line breaks and tabs become spaces, other
    control characters are dropped, runs of spaces collapse, and the result is cut at a
    character boundary.
    """
    line = " ".join(text.translate(_WHITESPACE_CONTROL).translate(_CONTROL).split())
    encoded = line.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return line
    return encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip()


def _parse_address(value: str) -> str | None:
    """The ``AF_UNIX`` address for ``$NOTIFY_SOCKET``, or None when it is not one we speak."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    # Relative paths are invalid; vsock: forms (systemd >= 253, VMs) are not used on a
    # front-end. Treat both as "not under systemd" rather than guessing.
    return None


class Notifier:
    """Sends notifications to systemd; a no-op when not started by systemd with a socket.

    Build it with :meth:`from_env`. Methods return ``True`` when the datagram was sent,
    ``False`` when notifications are disabled or the send failed (see :attr:`last_error`).
    Thread-safe: each send is a single ``sendto`` on a datagram socket.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        timeout: float = 2.0,
    ) -> None:
        """``address``: a path, ``"@name"`` or ``"\\0name"`` (abstract socket); None disables.

        ``timeout`` bounds a send if systemd's socket buffer is full, so a busy PID 1 cannot
        block the main loop for long.
        """
        if address is not None and not address.startswith("\0"):
            address = _parse_address(address)  # "@name" -> "\0name"; relative -> disabled
        self.address = address
        self.last_error: OSError | None = None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._timeout = timeout
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
        timeout: float = 2.0,
    ) -> Notifier:
        """A notifier configured from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``, ``$WATCHDOG_PID``.

        ``unset_environment=True`` removes the three variables afterwards (as
        ``sd_notify(unset_environment=1)`` does) so child processes cannot notify in our name.
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        raw = env.get(_ENV_SOCKET, "")
        address = _parse_address(raw) if raw else None
        usec = _positive_int(env.get(_ENV_WATCHDOG_USEC))
        pid = _positive_int(env.get(_ENV_WATCHDOG_PID))
        if unset_environment:
            for name in (_ENV_SOCKET, _ENV_WATCHDOG_USEC, _ENV_WATCHDOG_PID):
                env.pop(name, None)
        return cls(address, watchdog_usec=usec, watchdog_pid=pid, timeout=timeout)

    # -- state -----------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (we run under systemd with Type=notify)."""
        return self.address is not None

    def watchdog_interval(self, pid: int | None = None) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``.

        None when notifications are off, ``WatchdogSec=`` is not set, or ``$WATCHDOG_PID`` names
        another process (``pid`` defaults to ours): a forked child must not keep its parent
        alive.
        """
        if not self.enabled or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != (
            os.getpid() if pid is None else pid
        ):
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # -- messages -------------------------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is complete; optionally with a status line."""
        return self.notify("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.notify(*self._status(text))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` (+ ``MONOTONIC_USEC``): a reload started; send :meth:`ready` after.

        ``MONOTONIC_USEC`` is what ``Type=notify-reload`` (systemd >= 253) expects; older
        managers ignore the unknown assignment.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a graceful stop began."""
        return self.notify("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping. Prefer :class:`WatchdogPinger` for cadence."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, usec: int) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: ask for ``usec`` more µs in a start-up/stop/reload step."""
        if isinstance(usec, bool) or not isinstance(usec, int) or usec <= 0:
            raise ValueError(f"extend_timeout needs a positive number of microseconds: {usec!r}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={usec}")

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` (``KEY=VALUE`` strings) as one datagram.

        Values must be single lines; use :func:`clean_status` for free text.
        """
        if self.address is None or not assignments:
            return False
        for item in assignments:
            if "=" not in item or "\n" in item:
                raise ValueError(f"not a single KEY=VALUE assignment: {item!r}")
        payload = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            sock = self._socket()
            sock.sendto(payload, self.address)
        except OSError as exc:
            self.last_error = exc
            self._drop_socket()
            return False
        self.last_error = None
        return True

    def close(self) -> None:
        """Close the client socket (it is reopened on the next send)."""
        self._drop_socket()

    def __repr__(self) -> str:
        where = "disabled" if self.address is None else repr(self.address.replace("\0", "@", 1))
        return f"Notifier({where})"

    # -- internals ------------------------------------------------------------------------
    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={clean_status(text)}",)

    def _socket(self) -> socket.socket:
        sock = self._sock
        if sock is None:
            # SOCK_CLOEXEC: children we spawn (journalctl, tools) must not inherit it.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.settimeout(self._timeout)
            self._sock = sock
        return sock

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _positive_int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number > 0 else None


class WatchdogPinger:
    """Sends ``WATCHDOG=1`` at most every ``interval`` seconds; driven by the main loop.

    ``maybe_ping()`` is cheap (a clock read and a comparison) and meant to be called on every
    turn of the loop, whose own poll timeout must be well below ``interval``. Do **not** run it
    from a separate thread or timer: then a deadlocked main loop would keep being reported as
    alive and systemd's ``WatchdogSec=`` would never fire.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"watchdog interval must be positive: {interval!r}")
        self.notifier = notifier
        self.interval = float(interval)
        self._clock = clock
        self._last: float | None = None
        self.pings = 0

    @classmethod
    def from_notifier(
        cls, notifier: Notifier, clock: Callable[[], float] = time.monotonic
    ) -> WatchdogPinger | None:
        """A pinger at the notifier's :meth:`~Notifier.watchdog_interval`, or None if off."""
        interval = notifier.watchdog_interval()
        return None if interval is None else cls(notifier, interval, clock)

    def seconds_until_due(self) -> float:
        """How long the loop may sleep before the next ping is due (0 when due now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - self._clock())

    def maybe_ping(self) -> bool:
        """Ping if ``interval`` has passed since the last ping (or none was sent yet).

        Returns True when a ping was sent. A failed send is retried on the next call.
        """
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        if not self.notifier.watchdog():
            return False
        self._last = now
        self.pings += 1
        return True

