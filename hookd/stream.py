"""The ZeroMQ SUB socket towards oned's hook-manager driver.

Facts relied on (libzmq's zmq_setsockopt(3) and zmq_socket_monitor(3); verified with
pyzmq 27 / libzmq 4.3.5): libzmq reconnects by itself with ``RECONNECT_IVL`` doubling up to
``RECONNECT_IVL_MAX``; without ZMTP heartbeats a frozen publisher (process stopped, TCP still
open) is never noticed, with ``HEARTBEAT_IVL``/``HEARTBEAT_TIMEOUT`` the connection is
dropped and re-established; ``HANDSHAKE_SUCCEEDED`` on the monitor socket is the reliable
"connected" signal; messages published while disconnected are lost (PUB/SUB has no replay),
which is why every (re)connection triggers a sweep.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from hookd.config import Events
from hookd.intake import SUBSCRIPTIONS, Malformed, Trigger, decode
from hookd.logs import get_logger

log = get_logger(__name__)

RECEIVE_HWM = 100_000  # messages libzmq queues before it drops


class EventStream:
    """Owns the SUB socket and its monitor; :meth:`open` connects, :meth:`poll` (from the main
    loop) reads."""

    def __init__(
        self,
        endpoint: str,
        settings: Events,
        on_trigger: Callable[[Trigger], None],
        on_connected: Callable[[], None],
        on_malformed: Callable[[str], None] = lambda reason: None,
        on_event: Callable[[str], None] = lambda kind: None,
        on_state: Callable[[bool], None] = lambda connected: None,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self._on_trigger = on_trigger
        self._on_connected = on_connected
        self._on_malformed = on_malformed
        self._on_event = on_event
        self._on_state = on_state
        self.connected = False
        self.connections = 0
        self._retried = False  # a connection attempt failed (oned's endpoint is not up)
        s = settings
        self._context = zmq.Context()
        sub: zmq.Socket[bytes] = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        sub.setsockopt(zmq.RECONNECT_IVL, max(1, int(s.reconnect_initial * 1000)))
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, max(1, int(s.reconnect_max * 1000)))
        sub.setsockopt(zmq.HEARTBEAT_IVL, int(s.heartbeat_interval * 1000))
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(s.heartbeat_timeout * 1000))
        sub.setsockopt(zmq.HEARTBEAT_TTL, int(s.heartbeat_timeout * 1000))
        # A hard ceiling well above the application limit: a peer sending more than this is
        # disconnected by libzmq before the message is buffered (memory stays flat).
        sub.setsockopt(zmq.MAXMSGSIZE, s.max_message_bytes * 4 + 4096)
        for prefix in SUBSCRIPTIONS:
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self._sub = sub
        self._monitor = sub.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
            | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self._poller = zmq.Poller()
        self._poller.register(self._sub, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def open(self) -> None:
        self._sub.connect(self.endpoint)
        log.info("events.subscribing", endpoint=self.endpoint,
                 filters=[p.decode() for p in SUBSCRIPTIONS])

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sub.disable_monitor()
        for sock in (self._monitor, self._sub):
            self._poller.unregister(sock)
            sock.close(0)
        self._context.term()

    def poll(self, timeout: float, budget: int = 5000) -> int:
        """Wait up to ``timeout`` seconds, then drain what arrived. Returns messages read."""
        events = dict(self._poller.poll(int(timeout * 1000)))
        handled = 0
        if self._monitor in events:
            self._drain_monitor()
        if self._sub in events:
            while handled < budget:
                try:
                    frames = self._sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                handled += 1
                self._handle(frames)
        return handled

    def wait_connected(self, timeout: float) -> bool:
        """Poll (handling what arrives) until connected, a failed attempt, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.connected and not self._retried:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.poll(min(left, 0.05))
        return self.connected

    def _handle(self, frames: list[bytes]) -> None:
        try:
            trigger = decode(frames, self.settings.max_message_bytes)
        except Malformed as exc:
            self._on_malformed(exc.reason)
            log.warning("events.malformed", reason=exc.reason, detail=exc.detail[:200],
                        key=frames[0][:80].decode("ascii", errors="replace") if frames else "")
            return
        if trigger is None:
            self._on_event("other")
            return
        self._on_event("api" if trigger.why.call else "state")
        self._on_trigger(trigger)

    def _drain_monitor(self) -> None:
        while True:
            try:
                message = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            event = message["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connections += 1
                self.connected = True
                self._on_state(True)
                log.info("events.connected", endpoint=self.endpoint,
                         reconnect=self.connections > 1)
                self._on_connected()
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                if self.connected:
                    log.warning("events.disconnected", endpoint=self.endpoint,
                                hint="events published until reconnection are lost; a sweep "
                                     "follows the reconnection")
                self.connected = False
                self._on_state(False)
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self._retried = True
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                log.warning("events.handshake_failed", endpoint=self.endpoint)
