"""A foreign publisher on the event port: the attack an event stream invites.

oned's hook manager publishes on a TCP port without authentication (one_hm's ZeroMQ PUB):
any local user who binds that port while oned restarts, or who sits between it and its
subscribers, publishes whatever they like to everyone who subscribes. :class:`ForgingRelay`
does exactly that for tests: it subscribes to the real stream, republishes every message on
its own port, and publishes forged messages when asked. Point hookd at :attr:`endpoint`.
"""

from __future__ import annotations

import base64
import queue
import re
import threading

import zmq

from hookd.testing.events import state_message


class ForgingRelay:
    def __init__(self, upstream: str, bind: str = "tcp://127.0.0.1:0") -> None:
        self._upstream = upstream
        self._bind = bind
        self._context = zmq.Context()
        self._forged: queue.Queue[list[bytes]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.endpoint = ""
        self.relayed = 0
        self.forged = 0

    def start(self) -> ForgingRelay:
        self._thread = threading.Thread(target=self._run, name="forging-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._context.term()

    def __enter__(self) -> ForgingRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def forge(self, frames: list[bytes]) -> None:
        """Publish ``frames`` (a key and a base64 body) as if oned had."""
        self._forged.put(frames)

    def forge_ready(self, image_id: int, image_xml: str, **changes: str) -> None:
        """A READY event for ``image_id`` whose embedded image is ``image_xml`` with the
        given elements' text replaced (``PATH="docker://redis"``): everything else is real."""
        for tag, value in changes.items():
            image_xml = re.sub(rf"<{tag}>.*?</{tag}>", f"<{tag}><![CDATA[{value}]]></{tag}>",
                               image_xml, count=1, flags=re.DOTALL)
        body = state_message("IMAGE", "READY", image_id, image_xml)
        self.forge([f"EVENT STATE IMAGE/READY//{image_id} ".encode(), body.encode()])

    def _run(self) -> None:
        sub = self._context.socket(zmq.SUB)
        pub = self._context.socket(zmq.PUB)
        try:
            sub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(self._upstream)
            pub.bind(self._bind)
            self.endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            self._ready.set()
            poller = zmq.Poller()
            poller.register(sub, zmq.POLLIN)
            while not self._stop.is_set():
                for socket, _ in poller.poll(20):
                    pub.send_multipart(socket.recv_multipart())
                    self.relayed += 1
                while True:
                    try:
                        frames = self._forged.get_nowait()
                    except queue.Empty:
                        break
                    pub.send_multipart(frames)
                    self.forged += 1
        finally:
            sub.close(0)
            pub.close(0)


def decoded(frames: list[bytes]) -> str:
    """The XML of a message's body (for assertions)."""
    return base64.b64decode(frames[1]).decode("utf-8", "replace")
