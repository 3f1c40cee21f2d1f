"""A node's own health rules (pure): store outage timing, refusal, worker stall."""

from __future__ import annotations

from relaymesh.ops.health import (
    STALL_POLLS,
    StoreHealth,
    worker_stall_after_ms,
    worker_stall_reason,
)

AFTER = 30_000


def test_a_store_that_never_answered_turns_unhealthy_after_the_threshold_from_start() -> None:
    h = StoreHealth(unhealthy_after_ms=AFTER, started_ms=1_000)
    h.failed(1_500, "connection refused")
    assert h.reason(1_000 + AFTER - 1) is None
    reason = h.reason(1_000 + AFTER)
    assert reason is not None
    assert reason.startswith("store has not answered yet for 30.0 s")
    assert "node.store_unhealthy_after_s = 30" in reason
    assert reason.endswith(": connection refused")


def test_the_outage_is_timed_from_the_last_success_and_a_success_clears_it() -> None:
    h = StoreHealth(unhealthy_after_ms=AFTER, started_ms=0)
    h.ok(10_000)
    for t in range(11_000, 50_000, 1_000):
        h.failed(t, "database is locked")
    assert h.reason(10_000 + AFTER - 1) is None
    reason = h.reason(10_000 + AFTER)
    assert reason is not None and "database is locked" in reason
    assert h.errors == 39
    h.ok(60_000)
    assert (h.reason(60_000), h.errors, h.last_error) == (None, 0, None)


def test_a_hanging_probe_counts_as_an_outage() -> None:
    # No failure is ever reported, but no success arrives either.
    h = StoreHealth(unhealthy_after_ms=AFTER, started_ms=0)
    h.ok(5_000)
    assert h.reason(5_000 + AFTER - 1) is None
    reason = h.reason(5_000 + AFTER)
    assert reason is not None and reason.endswith("(a store call is hanging)")


def test_a_refusal_is_unhealthy_at_once_until_the_next_success() -> None:
    h = StoreHealth(unhealthy_after_ms=AFTER, started_ms=0)
    h.ok(1_000)
    h.refused(1_001, "file was deleted")
    assert h.reason(1_001) == "store refused: file was deleted"
    h.ok(2_000)
    assert h.reason(2_000) is None


def test_stall_threshold_is_polls_or_the_store_threshold_whichever_is_longer() -> None:
    assert worker_stall_after_ms(poll_ms=500, store_unhealthy_after_ms=AFTER) == AFTER
    assert worker_stall_after_ms(poll_ms=5_000, store_unhealthy_after_ms=AFTER) == (
        STALL_POLLS * 5_000
    )


def test_worker_stall_reason() -> None:
    def reason(last: int | None, now: int, stopping: bool = False) -> str | None:
        return worker_stall_reason(
            last_round_ms=last, started_ms=100, now_ms=now, stall_after_ms=2_000, stopping=stopping
        )

    assert reason(1_000, 3_000) is None
    assert reason(1_000, 3_001) == "worker stalled: no claim round for 2.0 s (limit 2 s)"
    # No round yet: timed from the worker's start.
    assert reason(None, 2_100) is None
    assert reason(None, 2_101) is not None
    # Stopping or draining: no more rounds are expected.
    assert reason(1_000, 60_000, stopping=True) is None
