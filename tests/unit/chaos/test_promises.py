"""The history checker's promises on hand-made histories: one clean history that keeps
every promise, and for each promise a mutation of it that breaks exactly that one."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from relaymesh.chaos.history import (
    Conflict,
    HarnessEvent,
    History,
    JournalEntry,
    LogRecord,
    Ownership,
    StepView,
)
from relaymesh.chaos.promises import PROMISES, Bounds, check_history, lease_intervals, percentile

BOUNDS = Bounds(reclaim_bound_ms=3000, claim_grace_ms=500, expect_success=True)


def clean() -> History:
    """Two workflows' worth of history on nodes a, b, c:

    * s1 (lock L): claimed by a at 1000 (epoch 1), committed at 1500;
    * s2 (lock L): claimed by b at 1600 (epoch 1); b is killed at 2000; dead_owner at
      3500 (epoch 2); claimed by c at 3600 (epoch 3); committed at 4000. b's zombie
      heartbeat at 5000 was refused and recorded;
    * s3: claimed by c at 1000 while c was ALIVE; c is not ALIVE from 6000 to 8000 and
      claims nothing then; s3 committed at 1200.
    """
    steps = [
        StepView(
            "s1",
            "w1",
            "one",
            "record",
            "SUCCEEDED",
            1,
            "a",
            ("L",),
            {"epoch": 1, "node": "a"},
            1500,
        ),
        StepView(
            "s2",
            "w1",
            "two",
            "record",
            "SUCCEEDED",
            3,
            "c",
            ("L",),
            {"epoch": 3, "node": "c"},
            4000,
        ),
        StepView("s3", "w2", "three", "echo", "SUCCEEDED", 1, "c", (), {"x": 1}, 1200),
    ]
    ownership = [
        Ownership(1, "s1", "a", "claimed", 1, 1000),
        Ownership(2, "s3", "c", "claimed", 1, 1000),
        Ownership(3, "s2", "b", "claimed", 1, 1600),
        Ownership(4, "s2", "b", "dead_owner", 2, 3500),
        Ownership(5, "s2", "c", "claimed", 3, 3600),
    ]
    conflicts = [Conflict("s2", "b", "heartbeat", 1, 3, "SUCCEEDED", 5000)]
    journal = [
        JournalEntry("start", "s1", 1, "a", 1010),
        JournalEntry("done", "s1", 1, "a", 1400),
        JournalEntry("start", "s2", 1, "b", 1610),
        JournalEntry("done", "s2", 1, "b", 4500),
        JournalEntry("start", "s2", 3, "c", 3610),
        JournalEntry("done", "s2", 3, "c", 3900),
    ]
    events = [
        HarnessEvent("submitted", 900, {"workflow_id": "w1", "steps": 2}),
        HarnessEvent("submitted", 900, {"workflow_id": "w2", "steps": 1}),
        HarnessEvent("view", 950, {"node": "c", "local_alive": True}),
        HarnessEvent("kill", 2000, {"node": "b"}),
        HarnessEvent("view", 6000, {"node": "c", "local_alive": False}),
        HarnessEvent("view", 8000, {"node": "c", "local_alive": False}),
        HarnessEvent("view", 8200, {"node": "c", "local_alive": True}),
    ]
    logs = [LogRecord("b", "lease_lost", 5000, {"step_id": "s2", "epoch": 1, "write": "heartbeat"})]
    return History(steps, ownership, conflicts, journal, events, logs)


def test_clean_history_keeps_every_promise() -> None:
    report = check_history(clean(), BOUNDS)
    assert report.violations == []
    assert report.ok
    # Each promise had something to check: a clean verdict over nothing proves nothing.
    assert {p for p in PROMISES if report.checked[p] == 0} == set()
    assert report.reclaim_ms == [1500]
    assert report.faults == {"kill": 1}


def _set_step(h: History, step_id: str, **changes: object) -> None:
    h.steps = [
        StepView(**{**{f: getattr(s, f) for f in StepView.__slots__}, **changes})  # type: ignore[arg-type]
        if s.id == step_id
        else s
        for s in h.steps
    ]


def step_left_running(h: History) -> None:
    _set_step(h, "s3", status="RUNNING")


def step_lost(h: History) -> None:
    h.steps = [s for s in h.steps if s.id != "s1"]
    h.ownership = [e for e in h.ownership if e.step_id != "s1"]


def result_from_older_lease(h: History) -> None:
    # s2's result is the zombie's (epoch 1 on b), not the last lease's.
    _set_step(h, "s2", result={"epoch": 1, "node": "b"})


def standing_commit_also_refused(h: History) -> None:
    h.conflicts.append(Conflict("s2", "c", "commit_success", 3, 3, "SUCCEEDED", 4001))


def refused_write_not_recorded(h: History) -> None:
    h.logs.append(
        LogRecord("b", "lease_lost", 5100, {"step_id": "s2", "epoch": 1, "write": "commit_success"})
    )


def lock_held_twice(h: History) -> None:
    # s2's first claim moves before s1's commit (1500): both hold lock L at once.
    h.ownership = [
        Ownership(e.id, e.step_id, e.node, e.event, e.lease_epoch, 1400) if e.id == 3 else e
        for e in h.ownership
    ]


def reclaim_too_slow(h: History) -> None:
    h.ownership = [
        Ownership(e.id, e.step_id, e.node, e.event, e.lease_epoch, 5500) if e.id == 4 else e
        for e in h.ownership
    ]
    h.ownership = [
        Ownership(e.id, e.step_id, e.node, e.event, e.lease_epoch, 5600) if e.id == 5 else e
        for e in h.ownership
    ]
    _set_step(h, "s2", finished_at_ms=6100)


def claim_while_not_alive(h: History) -> None:
    h.steps.append(StepView("s4", "w2", "four", "echo", "SUCCEEDED", 1, "c", (), {}, 7200))
    h.ownership.append(Ownership(6, "s4", "c", "claimed", 1, 7000))
    h.events = [
        HarnessEvent(e.kind, e.at_ms, {**e.fields, "steps": 2})
        if e.get("workflow_id") == "w2"
        else e
        for e in h.events
    ]


MUTATIONS: dict[str, Callable[[History], None]] = {
    "final_state": step_left_running,
    "none_lost": step_lost,
    "one_commit": result_from_older_lease,
    "conflicts_recorded": refused_write_not_recorded,
    "lock_exclusive": lock_held_twice,
    "reclaim_bound": reclaim_too_slow,
    "safe_mode": claim_while_not_alive,
}


@pytest.mark.parametrize("promise", PROMISES)
def test_each_broken_promise_is_named(promise: str) -> None:
    history = copy.deepcopy(clean())
    MUTATIONS[promise](history)
    report = check_history(history, BOUNDS)
    assert {v.promise for v in report.violations} == {promise}, report.violations
    assert all(v.history for v in report.violations)


def test_a_refused_commit_of_the_standing_lease_breaks_one_commit() -> None:
    history = clean()
    standing_commit_also_refused(history)
    report = check_history(history, BOUNDS)
    assert [(v.promise, v.step_id) for v in report.violations] == [("one_commit", "s2")]
    assert "conflict commit_success by c: expected epoch 3" in report.violations[0].history[-1]


def test_a_journalled_step_missing_from_the_store_is_lost() -> None:
    history = clean()
    history.journal.append(JournalEntry("start", "ghost", 1, "a", 1000))
    report = check_history(history, BOUNDS)
    assert [(v.promise, v.step_id) for v in report.violations] == [("none_lost", "ghost")]


def test_a_killed_node_whose_lease_was_never_reclaimed_breaks_the_bound() -> None:
    history = clean()
    history.ownership = [e for e in history.ownership if e.id not in (4, 5)]
    _set_step(history, "s2", status="RUNNING", lease_epoch=1, owner_node="b", finished_at_ms=None)
    report = check_history(history, Bounds(3000, 500, expect_success=False))
    assert {(v.promise, v.step_id) for v in report.violations} == {
        ("reclaim_bound", "s2"),
        ("final_state", "s2"),
    }


def test_a_claim_within_the_grace_of_an_accusation_is_not_blamed() -> None:
    history = clean()
    claim_while_not_alive(history)
    history.ownership[-1] = Ownership(6, "s4", "c", "claimed", 1, 6300)  # 300 ms < 500 ms grace
    assert check_history(history, BOUNDS).ok


def test_safe_mode_reads_the_workers_own_pause_records() -> None:
    history = clean()
    history.events = [e for e in history.events if e.kind != "view"]
    claim_while_not_alive(history)
    assert check_history(history, BOUNDS).ok  # no samples: nothing is known
    history.logs += [
        LogRecord("c", "worker_paused", 6000, {"reason": "local_not_alive"}),
        LogRecord("c", "worker_resumed", 8000, {"was": "local_not_alive"}),
    ]
    history.logs.sort(key=lambda r: r.at_ms)
    report = check_history(history, BOUNDS)
    assert [v.promise for v in report.violations] == []  # resumed at 8000 is ALIVE after
    history.logs[-1] = LogRecord("c", "worker_paused", 8000, {"reason": "local_not_alive"})
    assert [v.promise for v in check_history(history, BOUNDS).violations] == ["safe_mode"]


def test_a_restart_between_samples_breaks_the_not_alive_span() -> None:
    history = clean()
    claim_while_not_alive(history)
    history.events.append(HarnessEvent("start", 6500, {"node": "c"}))
    history.events.sort(key=lambda e: e.at_ms)
    assert check_history(history, BOUNDS).ok


def test_lease_intervals_end_where_the_history_is_sure() -> None:
    leases = {(x.step_id, x.epoch): x for x in lease_intervals(clean())}
    assert (leases["s1", 1].start_ms, leases["s1", 1].sure_end_ms, leases["s1", 1].ended_by) == (
        1000,
        1500,
        "finished",
    )
    assert (leases["s2", 1].sure_end_ms, leases["s2", 1].ended_by) == (3500, "dead_owner")


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5, 1, 3], 50) == 3
    assert percentile(range(1, 101), 99) == 99
    assert percentile([7], 99) == 7


def test_failover_recovery_runs_from_the_primarys_stop_to_the_next_claim() -> None:
    history = clean()
    history.events += [
        HarnessEvent("pg_stop_primary", 9000, {"server": "pg-a"}),
        HarnessEvent("pg_failover", 9500, {"old": "pg-a", "new": "pg-b"}),
    ]
    history.steps.append(StepView("s5", "w3", "five", "echo", "SUCCEEDED", 1, "a", (), {}, 10_100))
    history.ownership.append(Ownership(7, "s5", "a", "claimed", 1, 10_000))
    report = check_history(history, Bounds(3000, 500))
    assert report.failover_recovery_ms == [1000]
    assert report.faults["pg_failover"] == 1


def test_samples_inside_the_grace_do_not_hide_a_long_not_alive_span() -> None:
    history = clean()
    claim_while_not_alive(history)
    # Dense sampling (every 200 ms) of a not-ALIVE span around the claim at 7000.
    history.events += [
        HarnessEvent("view", t, {"node": "c", "local_alive": False}) for t in range(6000, 8000, 200)
    ]
    history.events.sort(key=lambda e: e.at_ms)
    assert [v.promise for v in check_history(history, BOUNDS).violations] == ["safe_mode"]
