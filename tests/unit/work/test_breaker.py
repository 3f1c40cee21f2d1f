from __future__ import annotations

import pytest

from relaymesh.clock import FakeClock
from relaymesh.work.breaker import BreakerState, CircuitBreaker


def make(clock: FakeClock, events: list[tuple[str, BreakerState, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker(
        "a",
        failure_threshold=3,
        open_ms=1000,
        clock=clock,
        on_transition=lambda agent, old, new: events.append((agent, old, new)),
    )


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    events: list[tuple[str, BreakerState, BreakerState]] = []
    b = make(clock, events)
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    assert b.allowance() is None
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.allowance() == 0
    assert events == [("a", BreakerState.CLOSED, BreakerState.OPEN)]


def test_success_resets_the_count() -> None:
    clock = FakeClock()
    b = make(clock, [])
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    assert b.consecutive_failures == 2


def test_half_open_after_cool_down_allows_one_probe() -> None:
    clock = FakeClock()
    events: list[tuple[str, BreakerState, BreakerState]] = []
    b = make(clock, events)
    for _ in range(3):
        b.record_failure()
    clock.advance(999)
    assert b.allowance() == 0
    clock.advance(1)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allowance() == 1
    b.on_claimed(1)
    assert b.allowance() == 0  # the probe is in flight
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allowance() is None
    assert [e[2] for e in events] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_failed_probe_reopens_for_another_cool_down() -> None:
    clock = FakeClock()
    b = make(clock, [])
    for _ in range(3):
        b.record_failure()
    clock.advance(1000)
    assert b.allowance() == 1
    b.on_claimed(1)
    clock.advance(10)
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.advance(999)
    assert b.allowance() == 0
    clock.advance(1)
    assert b.allowance() == 1


def test_abandoned_probe_may_be_retried() -> None:
    clock = FakeClock()
    b = make(clock, [])
    for _ in range(3):
        b.record_failure()
    clock.advance(1000)
    b.on_claimed(1)
    assert b.allowance() == 0
    b.record_abandoned()
    assert b.allowance() == 1


def test_on_claimed_zero_keeps_probe_available() -> None:
    clock = FakeClock()
    b = make(clock, [])
    for _ in range(3):
        b.record_failure()
    clock.advance(1000)
    b.on_claimed(0)
    assert b.allowance() == 1


def test_configure_applies_new_thresholds() -> None:
    clock = FakeClock()
    b = make(clock, [])
    b.configure(failure_threshold=1, open_ms=50)
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.advance(50)
    assert b.state is BreakerState.HALF_OPEN


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("a", failure_threshold=0, open_ms=10, clock=FakeClock())


def low_rate(
    clock: FakeClock, events: list[tuple[str, BreakerState, BreakerState]]
) -> CircuitBreaker:
    return CircuitBreaker(
        "a",
        failure_threshold=100,
        open_ms=1000,
        clock=clock,
        on_transition=lambda agent, old, new: events.append((agent, old, new)),
        min_success_rate=0.5,
        min_samples=10,
    )


def test_low_success_rate_opens_after_min_samples() -> None:
    clock = FakeClock()
    events: list[tuple[str, BreakerState, BreakerState]] = []
    b = low_rate(clock, events)
    # Alternating: never two failures in a row, so only the rate rule can open it.
    for _ in range(4):
        b.record_success()
        b.record_failure()
        b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.open_reason == "low_success_rate"
    rate, runs = b.success_rate()
    assert runs >= 10 and rate is not None and rate < 0.5
    assert events == [("a", BreakerState.CLOSED, BreakerState.OPEN)]


def test_low_rate_needs_min_samples() -> None:
    clock = FakeClock()
    b = low_rate(clock, [])
    for _ in range(9):
        b.record_failure()
    assert b.state is BreakerState.CLOSED  # 9 runs < min_samples, 9 < failure_threshold


def test_low_rate_half_opens_and_a_good_probe_starts_afresh() -> None:
    clock = FakeClock()
    b = low_rate(clock, [])
    for _ in range(12):
        b.record_failure()
    assert b.state is BreakerState.OPEN and b.open_reason == "low_success_rate"
    clock.advance(1000)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allowance() == 1
    b.on_claimed(1)
    b.record_success()
    assert b.state is BreakerState.CLOSED
    # The hour is still full of failures, but the rule counts only runs since the close.
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    assert b.success_rate() == (0.5, 2)


def test_low_rate_is_off_at_zero_and_reconfigurable() -> None:
    clock = FakeClock()
    b = low_rate(clock, [])
    b.configure(failure_threshold=100, open_ms=1000, min_success_rate=0.0)
    for _ in range(20):
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.configure(failure_threshold=100, open_ms=1000, min_success_rate=0.5, min_samples=5)
    b.record_failure()
    assert b.state is BreakerState.OPEN
