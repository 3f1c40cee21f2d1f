"""Per-agent circuit breaker: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

CLOSED: claims allowed; ``failure_threshold`` consecutive failures open it.
OPEN: no claims for ``open_ms``; then HALF_OPEN.
HALF_OPEN: exactly one probe step may be claimed; its success closes the breaker,
its failure opens it again for another ``open_ms``.

Pure: the clock is injected and transitions are reported through a callback, so the
worker does the logging, auditing and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from relaymesh.clock import Clock

__all__ = ["BreakerState", "CircuitBreaker", "TransitionCallback"]


class BreakerState(IntEnum):
    """Values are the ``relaymesh_breaker_state`` gauge's."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


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
    ) -> None:
        if failure_threshold < 1 or open_ms < 0:
            raise ValueError("failure_threshold must be >= 1 and open_ms >= 0")
        self.agent = agent
        self.failure_threshold = failure_threshold
        self.open_ms = open_ms
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at_ms = 0
        self._probe_in_flight = False

    def configure(self, *, failure_threshold: int, open_ms: int) -> None:
        """Apply reloaded settings; the current state is kept."""
        self.failure_threshold = failure_threshold
        self.open_ms = open_ms

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

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at_ms = self._clock.monotonic_ms()
            self._set(BreakerState.OPEN)

    def record_abandoned(self) -> None:
        """A run ended without a verdict (lease lost, drained): the probe may be retried."""
        self._probe_in_flight = False

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_transition is not None:
            self._on_transition(self.agent, old, new)
