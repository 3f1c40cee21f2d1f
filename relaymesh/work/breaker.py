"""Per-agent circuit breaker: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

CLOSED: claims allowed; ``failure_threshold`` consecutive failures open it.
OPEN: no claims for ``open_ms``; then HALF_OPEN.
HALF_OPEN: exactly one probe step may be claimed; its success closes the breaker,
its failure opens it again for another ``open_ms``.

Low success rate: besides consecutive failures, a CLOSED breaker opens when the
agent's success rate over its runs since the breaker last closed (at most the last
hour, ``work/dispatch.py``) is below ``min_success_rate`` with at least
``min_samples`` runs. Counting only since the last close matters: the hour before a
successful probe is still full of failures, and judging it again would reopen the
breaker at once, forever. ``open_reason`` says which rule opened it
(``breaker_open`` or ``low_success_rate``).

Pure: the clock is injected and transitions are reported through a callback, so the
worker does the logging, auditing and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from relaymesh.clock import Clock
from relaymesh.work.dispatch import OK, DispatchWindow

__all__ = [
    "REASON_FAILURES",
    "REASON_LOW_RATE",
    "BreakerState",
    "CircuitBreaker",
    "TransitionCallback",
]


class BreakerState(IntEnum):
    """Values are the ``relaymesh_breaker_state`` gauge's."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


REASON_FAILURES = "breaker_open"
REASON_LOW_RATE = "low_success_rate"

TransitionCallback = Callable[[str, BreakerState, BreakerState], None]
"""``(agent, old, new)``; called synchronously on every state change."""


class CircuitBreaker:
    def __init__(
        self,
        agent: str,
        *,
        failure_threshold: int,
        open_ms: int,
        clock: Clock,
        on_transition: TransitionCallback | None = None,
        min_success_rate: float = 0.0,
        min_samples: int = 1,
    ) -> None:
        if failure_threshold < 1 or open_ms < 0:
            raise ValueError("failure_threshold must be >= 1 and open_ms >= 0")
        self.agent = agent
        self.failure_threshold = failure_threshold
        self.open_ms = open_ms
        self.min_success_rate = min_success_rate
        self.min_samples = max(1, min_samples)
        self.open_reason: str | None = None
        """Why the breaker last opened; None while it never has."""
        self._runs = DispatchWindow(clock.monotonic_ms)
        """Runs since the breaker last closed, within the hour: the low-rate rule's input."""
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at_ms = 0
        self._probe_in_flight = False

    def configure(
        self,
        *,
        failure_threshold: int,
        open_ms: int,
        min_success_rate: float | None = None,
        min_samples: int | None = None,
    ) -> None:
        """Apply reloaded settings; the current state is kept."""
        self.failure_threshold = failure_threshold
        self.open_ms = open_ms
        if min_success_rate is not None:
            self.min_success_rate = min_success_rate
        if min_samples is not None:
            self.min_samples = max(1, min_samples)

    @property
    def state(self) -> BreakerState:
        """The state now (an OPEN breaker whose cool-down has passed is HALF_OPEN)."""
        if (
            self._state is BreakerState.OPEN
            and self._clock.monotonic_ms() - self._opened_at_ms >= self.open_ms
        ):
            self._set(BreakerState.HALF_OPEN)
            self._probe_in_flight = False
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allowance(self) -> int | None:
        """How many steps of this agent may be claimed now: None (no limit), 1 (the
        half-open probe) or 0."""
        state = self.state
        if state is BreakerState.CLOSED:
            return None
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            return 1
        return 0

    def on_claimed(self, count: int) -> None:
        """Steps of this agent were claimed; in HALF_OPEN the first is the probe."""
        if count > 0 and self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = True

    def success_rate(self) -> tuple[float | None, int]:
        """The low-rate rule's view: (success rate, runs) since the last close."""
        stats = self._runs.stats()
        return stats.rate, stats.total

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)
        self._runs.record(OK)

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_in_flight = False
        self._runs.record("agent_error")
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open(REASON_FAILURES)
        elif self._state is BreakerState.CLOSED and self._rate_too_low():
            self._open(REASON_LOW_RATE)

    def _rate_too_low(self) -> bool:
        if self.min_success_rate <= 0:
            return False
        rate, runs = self.success_rate()
        return runs >= self.min_samples and rate is not None and rate < self.min_success_rate

    def _open(self, reason: str) -> None:
        self._opened_at_ms = self._clock.monotonic_ms()
        self.open_reason = reason
        self._set(BreakerState.OPEN)

    def record_abandoned(self) -> None:
        """A run ended without a verdict (lease lost, drained): the probe may be retried."""
        self._probe_in_flight = False

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.CLOSED:
            self._runs.clear()  # judged afresh from the probe on (see the module docstring)
        if old is not new and self._on_transition is not None:
            self._on_transition(self.agent, old, new)
