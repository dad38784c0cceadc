"""Why hookd looks at an object: a kind of cause, a detail for people, the API call if any.

Metrics count reconciles by :class:`Cause` (a fixed set of labels); the echo filter matches
an event with the API call hookd itself made (``Why.call``); the log says all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Cause(StrEnum):
    EVENT = "event"  # oned said so: a READY event, an API call, a template that changed
    SWEEP = "sweep"  # a full sweep found work (start-up, reconnection, periodic, leader)
    RELOAD = "reload"  # the configuration or the world (hosts, clusters) changed
    CONCURRENT = "concurrent"  # someone else updated a template while hookd wrote it
    CLI = "cli"  # an operator's hookd reconcile


@dataclass(frozen=True, slots=True, order=True)
class Why:
    cause: Cause
    detail: str = ""
    call: str | None = None  # the API call of an API event (one.template.update, ...)

    def __str__(self) -> str:
        return f"{self.cause.value}: {self.detail}" if self.detail else self.cause.value


READY = Why(Cause.EVENT, "READY event")
SWEEP = Why(Cause.SWEEP)
