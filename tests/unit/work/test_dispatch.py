"""The one-hour dispatch window: sliding, bounded, and summed per node, agent, mesh."""

from __future__ import annotations

import pytest

from relaymesh.clock import FakeClock
from relaymesh.work.dispatch import (
    BUCKET_MS,
    OK,
    WINDOW_MS,
    DispatchStats,
    DispatchWindow,
    outcome_reason,
    summarize_rows,
)


def test_empty_window_has_a_null_rate() -> None:
    clock = FakeClock()
    doc = DispatchWindow(clock.monotonic_ms).stats().to_json()
    assert doc == {
        "window_s": 3600,
        "total": 0,
        "success": 0,
        "failed": 0,
        "rate": None,
        "failure_reasons": {},
    }


def test_counts_successes_and_failure_reasons() -> None:
    clock = FakeClock()
    w = DispatchWindow(clock.monotonic_ms)
    for _ in range(3):
        w.record(OK)
    w.record("timeout")
    w.record("agent_error")
    doc = w.stats().to_json()
    assert (doc["total"], doc["success"], doc["failed"]) == (5, 3, 2)
    assert doc["rate"] == 0.6
    assert doc["failure_reasons"] == {"agent_error": 1, "timeout": 1}


def test_samples_leave_after_an_hour() -> None:
    clock = FakeClock()
    w = DispatchWindow(clock.monotonic_ms)
    w.record("timeout")
    clock.advance(WINDOW_MS // 2)
    w.record(OK)
    clock.advance(WINDOW_MS // 2 + BUCKET_MS)
    stats = w.stats()
    assert (stats.total, stats.success, stats.failure_reasons) == (1, 1, {})
    clock.advance(WINDOW_MS)
    assert w.stats().total == 0


def test_memory_is_bounded_by_the_bucket_count() -> None:
    clock = FakeClock()
    w = DispatchWindow(clock.monotonic_ms)
    for _ in range(5000):
        w.record(OK)
        clock.advance(1000)  # 5000 s of one sample a second
    assert len(w) <= WINDOW_MS // BUCKET_MS + 1
    assert w.stats().total == pytest.approx(3600, abs=BUCKET_MS // 1000)


def test_unknown_reasons_are_folded_into_other() -> None:
    clock = FakeClock()
    w = DispatchWindow(clock.monotonic_ms)
    for i in range(100):
        w.record(f"made-up-{i}")
    assert w.stats().failure_reasons == {"other": 100}


def test_outcome_reason_maps_agent_errors() -> None:
    assert outcome_reason({"reason": "timeout"}) == "timeout"
    assert outcome_reason({"reason": "unstorable_result"}) == "store_error"
    assert outcome_reason({"reason": "bad_output"}) == "agent_error"
    assert outcome_reason(None) == "agent_error"


def test_node_and_agent_windows() -> None:
    clock = FakeClock()
    stats = DispatchStats("n1", clock.monotonic_ms)
    stats.record("echo", OK)
    stats.record("echo", "agent_error")
    stats.record("slow", "timeout")
    stats.record(None, "guard_refused")
    doc = stats.to_json()
    assert (doc["total"], doc["success"]) == (4, 1)
    assert doc["failure_reasons"] == {"agent_error": 1, "guard_refused": 1, "timeout": 1}
    assert set(doc["agents"]) == {"echo", "slow"}
    assert doc["agents"]["echo"]["rate"] == 0.5


def test_summary_rows_are_minutes_and_only_the_changed_ones() -> None:
    clock = FakeClock(start_ms=0, wall_start_ms=1_700_000_000_000)
    stats = DispatchStats("n1", clock.monotonic_ms, wall_offset_ms=clock.wall_ms())
    stats.record("echo", OK)
    clock.advance(BUCKET_MS)
    stats.record("echo", OK)
    stats.record(None, "guard_refused")
    rows = stats.summary_rows()
    minute = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    assert {(r.agent, r.bucket_ms, r.reason, r.count) for r in rows} == {
        ("echo", minute, OK, 2),
        ("", minute, "guard_refused", 1),
    }
    assert stats.summary_rows() == []  # nothing new
    stats.record("echo", "timeout")
    assert {(r.reason, r.count) for r in stats.summary_rows()} == {(OK, 2), ("timeout", 1)}
    stats.resend_all()
    assert len(stats.summary_rows()) == 3


def test_summarize_rows_sums_the_mesh() -> None:
    doc = summarize_rows(
        [
            ("n1", "echo", OK, 8),
            ("n1", "", "guard_refused", 1),
            ("n2", "echo", "timeout", 1),
            ("n2", "fail", "agent_error", 2),
        ]
    )
    assert (doc["total"], doc["success"], doc["failed"]) == (12, 8, 4)
    assert doc["rate"] == round(8 / 12, 4)
    assert doc["nodes"]["n1"]["total"] == 9 and doc["nodes"]["n2"]["rate"] == 0.0
    assert doc["agents"]["echo"]["failure_reasons"] == {"timeout": 1}
    assert "" not in doc["agents"]
    assert summarize_rows([])["rate"] is None
