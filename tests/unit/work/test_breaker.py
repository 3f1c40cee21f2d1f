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
