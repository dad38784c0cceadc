"""The ceiling: a bare client that makes only the calls a fix strictly needs.

For each image: ``one.image.info`` (the image read: an event only says which image to
look at, everything decided is read from oned, since issue 11), ``one.template.info`` (the
template read), ``one.template.update`` (merge, hookd's own payload) and
``one.image.update`` (merge, hookd's own status payload). The
payloads are the last ones hookd sent in the burst, captured by the simulator, with the ids
swapped, so the simulator parses, merges and stores exactly what it does for hookd. No event
stream, no planning, no logging; request bodies are pre-encoded, a response is only checked
for ``<boolean>1</boolean>``; one HTTP connection per call, as oned's server closes each
(``Connection: close``). ``workers`` threads share the work, as hookd's workers do.
"""

from __future__ import annotations

import http.client
import queue
import re
import threading
import time
import xmlrpc.client
from dataclasses import dataclass
from urllib.parse import urlsplit

_OK = b"<boolean>1</boolean>"
_IMAGE_ID = re.compile(r"<IMAGE_ID>\d+</IMAGE_ID>")
_TEMPLATES = re.compile(r"<HOOKD_TEMPLATES>[^<]*</HOOKD_TEMPLATES>")


@dataclass
class LimitResult:
    images: int
    seconds: float
    calls: int
    failures: int

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _post(host: str, port: int, path: str, body: bytes) -> bytes:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", path, body, {"Content-Type": "text/xml",
                                          "User-Agent": "bench-limit"})
        return conn.getresponse().read()
    finally:
        conn.close()


def run_limit(url: str, session: str, pairs: list[tuple[int, int]], *, workers: int,
              template_payload: str, image_payload: str) -> LimitResult:
    """Fix every (image, template) pair as fast as the simulator answers."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/RPC2"
    jobs: queue.SimpleQueue[tuple[bytes, ...] | None] = queue.SimpleQueue()
    for image_id, template_id in pairs:
        tpl = _IMAGE_ID.sub(f"<IMAGE_ID>{image_id}</IMAGE_ID>", template_payload)
        img = _TEMPLATES.sub(f"<HOOKD_TEMPLATES>{template_id}</HOOKD_TEMPLATES>", image_payload)
        jobs.put((
            xmlrpc.client.dumps((session, image_id, False), "one.image.info").encode(),
            xmlrpc.client.dumps((session, template_id, False, False), "one.template.info")
            .encode(),
            xmlrpc.client.dumps((session, template_id, tpl, 1), "one.template.update").encode(),
            xmlrpc.client.dumps((session, image_id, img, 1), "one.image.update").encode(),
        ))
    for _ in range(workers):
        jobs.put(None)
    lock = threading.Lock()
    totals = {"calls": 0, "failures": 0}

    def work() -> None:
        calls = failures = 0
        while True:
            job = jobs.get()
            if job is None:
                break
            for body in job:
                calls += 1
                if _OK not in _post(host, port, path, body):
                    failures += 1
        with lock:
            totals["calls"] += calls
            totals["failures"] += failures

    threads = [threading.Thread(target=work, name=f"limit-{n}") for n in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return LimitResult(len(pairs), elapsed, totals["calls"], totals["failures"])
