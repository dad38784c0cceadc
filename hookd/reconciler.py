"""Scheduling: which image is looked at when. Never what a template should contain.

* one job per object at a time (per-image serialisation), a fixed pool of workers (global
  concurrency limit);
* duplicate triggers coalesce: a trigger for a job that is queued merges into it, one for a
  job that is running makes it run once more afterwards;
* transient failures are retried with exponential backoff and full jitter, up to the
  attempt cap; the last attempt runs in "final" mode (e.g. the START_SCRIPT falls back to
  ``/one_entrypoint.sh``), and if it still fails the image is marked ``error``;
* permanent failures are recorded on the image right away;
* the gate: nothing runs while paused (before the first sweep, or while this oned is a Raft
  follower); queued jobs wait and run when the gate opens.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from handlers.errors import HookdError, TransientError
from hookd.engine import Engine
from hookd.logs import get_logger
from hookd.triggers import Cause, Why

log = get_logger(__name__)

JobKind = Literal["image", "template"]


@dataclass
class Job:
    kind: JobKind
    object_id: int
    whys: set[Why] = field(default_factory=set)
    attempt: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.object_id)

    def merge(self, other: Job) -> None:
        self.whys |= other.whys


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 300.0
    attempts: int = 8

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**attempt)], at least 10 ms."""
        ceiling = min(self.maximum, self.initial * (2.0 ** max(0, attempt - 1)))
        return max(0.01, ceiling * random.random())  # noqa: S311 (jitter, not a secret)


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        *,
        workers: int = 8,
        backoff: Backoff = Backoff(),
        on_reconcile: Callable[[str], None] = lambda trigger: None,
        on_failure: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.engine = engine
        self.backoff = backoff
        self._workers = workers
        self._on_reconcile = on_reconcile
        self._on_failure = on_failure
        self._cond = threading.Condition()
        self._pending: OrderedDict[tuple[str, int], Job] = OrderedDict()
        self._delayed: dict[tuple[str, int], Job] = {}
        self._heap: list[tuple[float, int, tuple[str, int]]] = []
        self._seq = itertools.count()
        self._running: set[tuple[str, int]] = set()
        self._rerun: dict[tuple[str, int], Job] = {}
        self._threads: list[threading.Thread] = []
        self._paused = True
        self._stopping = False
        self.waiting: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"hookd-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self, timeout: float) -> bool:
        """Let in-flight jobs finish (up to ``timeout``); drop the rest. True if all done."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    # -- submitting ------------------------------------------------------------------------
    def submit_image(self, image_id: int, why: Why) -> None:
        self._submit(Job("image", image_id, {why}))

    def submit_template(self, template_id: int, why: Why) -> None:
        self._submit(Job("template", template_id, {why}))

    def requeue_waiting(self, why: Why) -> int:
        with self._cond:
            waiting = sorted(self.waiting)
        for image_id in waiting:
            self.submit_image(image_id, why)
        return len(waiting)

    def _submit(self, job: Job) -> None:
        key = job.key
        with self._cond:
            if self._stopping:
                return
            if key in self._running:
                self._rerun.setdefault(key, job).merge(job)
                return
            if key in self._pending:
                self._pending[key].merge(job)
                return
            delayed = self._delayed.pop(key, None)
            if delayed is not None:
                # New information: run it now, keeping the attempt count.
                delayed.merge(job)
                job = delayed
            self._pending[key] = job
            self._cond.notify()

    # -- state for the main loop, metrics and tests -------------------------------------------
    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._delayed) + len(self._rerun)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._running)

    def idle(self) -> bool:
        with self._cond:
            return not (self._pending or self._delayed or self._running or self._rerun)

    # -- workers -----------------------------------------------------------------------------
    def _next(self) -> Job | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    job = self._delayed.pop(key, None)
                    if job is None:
                        continue
                    queued = self._pending.setdefault(key, job)
                    queued.merge(job)
                    queued.attempt = job.attempt
                if not self._paused:
                    for key in self._pending:
                        if key not in self._running:
                            job = self._pending.pop(key)
                            self._running.add(key)
                            return job
                # Sleep until notified (submit, resume, stop) or the next retry is due: an
                # idle hookd does not wake its workers at all.
                wait = max(0.0, self._heap[0][0] - now) if self._heap else None
                self._cond.wait(wait)
            return None

    def _finish(self, job: Job) -> None:
        with self._cond:
            self._running.discard(job.key)
            again = self._rerun.pop(job.key, None)
            if again is not None and not self._stopping:
                self._pending.setdefault(job.key, again).merge(again)
            self._cond.notify_all()

    def _retry(self, job: Job, error: TransientError) -> None:
        job.attempt += 1
        delay = self.backoff.delay(job.attempt)
        due = time.monotonic() + delay
        with self._cond:
            # Stopping, or a newer trigger arrived meanwhile: that one runs right away instead.
            if self._stopping or job.key in self._rerun:
                return
            self._delayed[job.key] = job
            heapq.heappush(self._heap, (due, next(self._seq), job.key))
            self._cond.notify()
        log.warning("reconcile.retry", kind=job.kind, object_id=job.object_id,
                    attempt=job.attempt, of=self.backoff.attempts, in_seconds=round(delay, 3),
                    reason=error.reason)
        if job.kind == "image":
            # The image says what hookd waits for and when it tries next, at once (the
            # retries of a long outage take minutes); one write per attempt at most.
            when = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + delay))
            text = (f"{error.reason}; attempt {job.attempt + 1} of {self.backoff.attempts} "
                    f"at {when}")
            try:
                self.engine.record_waiting(job.object_id, text,
                                           trigger=", ".join(map(str, sorted(job.whys))))
            except HookdError as exc:  # oned itself may be what is waited for
                log.debug("reconcile.waiting_not_recorded", image_id=job.object_id,
                          reason=exc.reason)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._run(job)
            finally:
                self._finish(job)

    def _run(self, job: Job) -> None:
        trigger = ", ".join(str(why) for why in sorted(job.whys))
        for cause in {why.cause for why in job.whys}:
            self._on_reconcile(cause.value)
        final = job.attempt >= self.backoff.attempts - 1
        try:
            if job.kind == "template":
                for image_id in self.engine.reconcile_template(job.object_id):
                    self.submit_image(image_id,
                                      Why(Cause.EVENT, f"template {job.object_id} changed"))
                return
            result = self.engine.reconcile_image(job.object_id, final=final, trigger=trigger)
            plan = result.plan
            with self._cond:
                if plan is not None and plan.status == "waiting":
                    self.waiting.add(job.object_id)
                else:
                    self.waiting.discard(job.object_id)
        except TransientError as exc:
            self._on_failure("transient")
            if final:
                self._give_up(job, f"gave up after {job.attempt + 1} attempts: {exc.reason}")
            else:
                self._retry(job, exc)
        except HookdError as exc:  # PermanentError, the other kind
            self._on_failure("permanent")
            self._give_up(job, exc.reason)
        except Exception as exc:  # a bug must not kill the worker: record and go on
            self._on_failure("internal")
            log.exception("reconcile.crashed", kind=job.kind, object_id=job.object_id)
            self._give_up(job, f"internal error in hookd: {type(exc).__name__}: {exc}")

    def _give_up(self, job: Job, reason: str) -> None:
        log.error("reconcile.failed", kind=job.kind, object_id=job.object_id, reason=reason,
                  attempts=job.attempt + 1)
        if job.kind != "image":
            return
        try:
            self.engine.record_error(job.object_id, reason)
        except HookdError as exc:
            log.warning("reconcile.status_not_recorded", image_id=job.object_id,
                        reason=exc.reason)

