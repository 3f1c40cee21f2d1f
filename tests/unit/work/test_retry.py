from __future__ import annotations

import random

import pytest

from relaymesh.work.retry import (
    ErrorKind,
    backoff_cap_ms,
    backoff_ms,
    classify,
    next_action,
)


def test_backoff_cap_doubles_then_saturates() -> None:
    caps = [backoff_cap_ms(a, 100, 1000) for a in range(1, 7)]
    assert caps == [100, 200, 400, 800, 1000, 1000]


def test_backoff_cap_huge_attempt_does_not_explode() -> None:
    assert backoff_cap_ms(10_000, 1000, 60_000) == 60_000


def test_backoff_cap_zero_base() -> None:
    assert backoff_cap_ms(3, 0, 1000) == 0
    assert backoff_ms(3, 0, 1000, random.Random(1)) == 0


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_cap_ms(0, 100, 1000)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 8])
def test_full_jitter_stays_in_bounds_and_spreads(attempt: int) -> None:
    rng = random.Random(42)
    cap = backoff_cap_ms(attempt, 100, 1000)
    samples = [backoff_ms(attempt, 100, 1000, rng) for _ in range(2000)]
    assert min(samples) >= 0
    assert max(samples) <= cap
    # Full jitter: uniform over [0, cap], so both halves are well used.
    assert sum(1 for s in samples if s < cap / 2) > 700
    assert sum(1 for s in samples if s > cap / 2) > 700


def test_backoff_is_deterministic_for_a_seed() -> None:
    a = [backoff_ms(3, 100, 10_000, random.Random(7)) for _ in range(3)]
    b = [backoff_ms(3, 100, 10_000, random.Random(7)) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"timed_out": True}, ErrorKind.TRANSIENT),
        ({"killed": True}, ErrorKind.TRANSIENT),
        ({"exit_code": -9}, ErrorKind.TRANSIENT),
        ({"exit_code": 75}, ErrorKind.TRANSIENT),
        ({"exit_code": 3, "transient_exit_codes": [3, 4]}, ErrorKind.TRANSIENT),
        ({"exit_code": 75, "transient_exit_codes": []}, ErrorKind.PERMANENT),
        ({"exit_code": 1}, ErrorKind.PERMANENT),
        ({}, ErrorKind.PERMANENT),
        ({"exit_code": 1, "output": {"error": {"kind": "transient"}}}, ErrorKind.TRANSIENT),
        ({"exit_code": 75, "output": {"error": {"kind": "permanent"}}}, ErrorKind.PERMANENT),
        ({"timed_out": True, "output": {"error": {"kind": "permanent"}}}, ErrorKind.PERMANENT),
        ({"exit_code": 1, "output": {"error": {"kind": "weird"}}}, ErrorKind.PERMANENT),
        ({"exit_code": 1, "output": {"error": "transient"}}, ErrorKind.PERMANENT),
        ({"exit_code": 1, "output": [1, 2]}, ErrorKind.PERMANENT),
    ],
)
def test_classify(kwargs: dict[str, object], kind: ErrorKind) -> None:
    assert classify(**kwargs) is kind  # type: ignore[arg-type]


def test_next_action_counts_the_first_run() -> None:
    rng = random.Random(0)
    # max_attempts=3: runs 1 and 2 may be retried, run 3 is the last.
    assert next_action(1, 3, True, base_ms=100, max_ms=1000, rng=rng) is not None
    assert next_action(2, 3, True, base_ms=100, max_ms=1000, rng=rng) is not None
    assert next_action(3, 3, True, base_ms=100, max_ms=1000, rng=rng) is None
    assert next_action(1, 1, True, base_ms=100, max_ms=1000, rng=rng) is None


def test_next_action_permanent_is_dead_letter_at_once() -> None:
    assert next_action(1, 5, False, base_ms=100, max_ms=1000, rng=random.Random(0)) is None


def test_next_action_delay_within_schedule() -> None:
    rng = random.Random(3)
    for attempt, cap in [(1, 100), (2, 200), (3, 400)]:
        for _ in range(200):
            delay = next_action(attempt, 10, True, base_ms=100, max_ms=1000, rng=rng)
            assert delay is not None
            assert 0 <= delay <= cap
