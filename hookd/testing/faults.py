"""Fault injection and call accounting for the XML-RPC front door.

Per method (or ``"*"`` for every ``one.*`` method) the simulator can add latency and
queue failures for the next N calls:

* ``timeout``: hang for ``seconds`` before answering normally;
* ``http500``: answer HTTP 500 without running the call;
* ``close``: close the connection without any answer;
* ``locked``: answer the AUTHORIZATION array oned gives for a locked object
  (``[method] User [0] : IMAGE is locked. [id].``);
* ``error``: answer a failure array with the given error code.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

MODES = ("timeout", "http500", "close", "locked", "error")


@dataclass(frozen=True)
class Failure:
    """One queued failure."""

    mode: str
    seconds: float = 0.0
    code: int = 0
    message: str = "Simulated failure"


class FaultPlan:
    """Thread-safe latency, failure queues and per-method call counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: dict[str, float] = {}
        self._failures: dict[str, deque[Failure]] = {}
        self._counters: Counter[str] = Counter()

    def set_latency(self, method: str, seconds: float) -> None:
        with self._lock:
            if seconds <= 0:
                self._latency.pop(method, None)
            else:
                self._latency[method] = seconds

    def latency_for(self, method: str) -> float:
        with self._lock:
            return self._latency.get(method, self._latency.get("*", 0.0))

    def fail_next(self, method: str, failure: Failure, count: int = 1) -> None:
        if failure.mode not in MODES:
            raise ValueError(f"unknown failure mode {failure.mode!r}; use one of {MODES}")
        with self._lock:
            queue = self._failures.setdefault(method, deque())
            queue.extend([failure] * count)

    def take_failure(self, method: str) -> Failure | None:
        with self._lock:
            for key in (method, "*"):
                queue = self._failures.get(key)
                if queue:
                    return queue.popleft()
            return None

    def clear(self) -> None:
        with self._lock:
            self._latency.clear()
            self._failures.clear()

    def count(self, method: str) -> None:
        with self._lock:
            self._counters[method] += 1

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()
