"""The error kinds: transient (retry later) and permanent (record and stop).

Every error that crosses a module boundary is one of these, so the reconciler can decide
without guessing: a *transient* error is retried with backoff up to the attempt cap, a
*permanent* one is recorded on the image (HOOKD_STATUS=error) and not retried until the
image or the configuration changes.
"""

from __future__ import annotations


class HookdError(Exception):
    """Base class. ``reason`` is one sentence an operator can act on."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __str__(self) -> str:
        return self.reason


class TransientError(HookdError):
    """Worth retrying: connection refused, timeout, HTTP 5xx, a locked object, Raft replication."""


class PermanentError(HookdError):
    """Retrying will not help: bad credentials, object gone, template rejected, bad input."""
