"""A node's own health, behind ``GET /healthz``: does its store answer, does its worker
loop turn. Pure: every time is passed in (``Clock.monotonic_ms``), nothing here awaits.

Rules (the operator's side is docs/health.md):

* The store is unreachable when no store probe has succeeded for
  ``node.store_unhealthy_after_s``, counted from the last success, or from the node's
  start when none has succeeded yet (a wrong address never turns healthy). A probe
  that hangs counts as failing, since no success arrives. Shorter outages are
  ridden through silently (a PostgreSQL failover, a SQLite lock held for a few
  seconds). A ``StoreGoneError`` (the SQLite file was deleted or replaced) is a
  refusal, not an outage: it turns the node unhealthy at once.
* The worker is stalled when its claim loop has not begun a round for
  ``worker_stall_after_ms`` while it runs and is not stopping or draining. A round
  legitimately lasts up to a poll (``worker.poll_ms``) or one store call, and a store
  call longer than ``store_unhealthy_after_s`` is already a store outage, so the
  stall threshold is the larger of ``STALL_POLLS`` polls and that.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STALL_POLLS", "StoreHealth", "worker_stall_after_ms", "worker_stall_reason"]

STALL_POLLS = 20
"""Claim-loop polls without a new round before the worker counts as stalled."""


@dataclass(slots=True)
class StoreHealth:
    """What the store probes said. ``ok``/``failed``/``refused`` record outcomes;
    ``reason`` is the verdict (None while healthy)."""

    unhealthy_after_ms: int
    started_ms: int
    last_ok_ms: int | None = None
    last_error: str | None = None
    refusal: str | None = None
    """Set by ``refused``, cleared by the next ``ok``."""
    errors: int = 0
    """Failed probes since the last success."""

    def ok(self, now_ms: int) -> None:
        self.last_ok_ms = now_ms
        self.last_error = None
        self.refusal = None
        self.errors = 0

    def failed(self, now_ms: int, error: str) -> None:
        del now_ms  # the outage is timed from the last success, not from failures
        self.last_error = error
        self.errors += 1

    def refused(self, now_ms: int, error: str) -> None:
        self.failed(now_ms, error)
        self.refusal = error

    @property
    def answered(self) -> bool:
        """True once any probe succeeded."""
        return self.last_ok_ms is not None

    def silent_ms(self, now_ms: int) -> int:
        """How long the store has not answered (0 right after a success)."""
        since = self.last_ok_ms if self.last_ok_ms is not None else self.started_ms
        return max(0, now_ms - since)

    def reason(self, now_ms: int) -> str | None:
        if self.refusal is not None:
            return f"store refused: {self.refusal}"
        silent_ms = self.silent_ms(now_ms)
        if silent_ms < self.unhealthy_after_ms:
            return None
        what = "has not answered yet" if self.last_ok_ms is None else "has not answered"
        detail = f": {self.last_error}" if self.last_error else " (a store call is hanging)"
        return (
            f"store {what} for {silent_ms / 1000:.1f} s"
            f" (node.store_unhealthy_after_s = {self.unhealthy_after_ms / 1000:g}){detail}"
        )


def worker_stall_after_ms(*, poll_ms: int, store_unhealthy_after_ms: int) -> int:
    """The claim-loop silence that counts as a stall (see the module docstring)."""
    return max(STALL_POLLS * poll_ms, store_unhealthy_after_ms)


def worker_stall_reason(
    *, last_round_ms: int | None, started_ms: int, now_ms: int, stall_after_ms: int, stopping: bool
) -> str | None:
    """Why the worker counts as stalled, or None. ``last_round_ms`` None: no round yet,
    timed from ``started_ms`` (when the worker was started)."""
    if stopping:
        return None
    since = last_round_ms if last_round_ms is not None else started_ms
    quiet_ms = now_ms - since
    if quiet_ms <= stall_after_ms:
        return None
    return (
        f"worker stalled: no claim round for {quiet_ms / 1000:.1f} s"
        f" (limit {stall_after_ms / 1000:g} s)"
    )
