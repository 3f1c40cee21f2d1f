"""The backend-independent store rules (store/rules.py), alone."""

from __future__ import annotations

import itertools

import pytest

from relaymesh.exceptions import InvalidStateError, WorkflowError
from relaymesh.model import LeaseRef, StepSpec, StepStatus, WorkflowSpec, WorkflowStatus
from relaymesh.store import rules


def lease(step_id: str) -> LeaseRef:
    return LeaseRef(step_id, "t", 1)


def test_cancel_modes_and_replay_sources_have_one_message() -> None:
    rules.check_cancel_mode("hard")
    rules.check_cancel_mode("soft")
    with pytest.raises(InvalidStateError, match="unknown cancel mode 'fast': use hard or soft"):
        rules.check_cancel_mode("fast")
    assert rules.check_replayable("DEAD_LETTER") is StepStatus.DEAD_LETTER
    with pytest.raises(InvalidStateError, match=r"^READY steps: only DEAD_LETTER or CANCELLED"):
        rules.check_replayable(StepStatus.READY)
    with pytest.raises(InvalidStateError, match=r"^step s1 is RUNNING: only DEAD_LETTER"):
        rules.check_replayable(StepStatus.RUNNING, "s1")


def test_submit_plan() -> None:
    ids = (f"id{i}" for i in itertools.count())
    spec = WorkflowSpec(
        "w",
        (
            StepSpec("a", "echo", locks=("k", "j", "k")),
            StepSpec("b", "echo", depends_on=("a", "a")),
            StepSpec("c", "echo", depends_on=("a", "b")),
        ),
    )
    plan = rules.plan_submit(spec, lambda: next(ids))
    assert plan.workflow_id == "id0" and plan.step_ids == {"a": "id1", "b": "id2", "c": "id3"}
    assert plan.status is WorkflowStatus.RUNNING
    assert plan.step_status == {
        "a": StepStatus.READY,
        "b": StepStatus.PENDING,
        "c": StepStatus.PENDING,
    }
    assert plan.dependents == {"a": 3, "b": 1, "c": 0}
    assert plan.locks["a"] == ("j", "k")
    assert plan.deps == (("id2", "id1"), ("id3", "id1"), ("id3", "id2"))
    assert rules.plan_submit(WorkflowSpec("e", ()), lambda: "x").status is WorkflowStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((StepSpec("a", "e"), StepSpec("a", "e")), "duplicate step name 'a'"),
        ((StepSpec("a", "e", depends_on=("ghost",)),), "names unknown step 'ghost'"),
        (
            (StepSpec("a", "e", depends_on=("b",)), StepSpec("b", "e", depends_on=("a",))),
            "dependency cycle: a -> b -> a",
        ),
    ],
)
def test_submit_plan_rejects_what_is_not_a_dag(steps: tuple[StepSpec, ...], message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        rules.plan_submit(WorkflowSpec("w", steps), lambda: "x")


def test_split_commits_keeps_order_and_commits_a_duplicate_once() -> None:
    items = [lease("a"), lease("b"), lease("a"), lease("c"), lease("d")]
    out, rejected = rules.split_commits(items, committed={"a"}, landed={"c"})
    assert out == [True, False, False, True, False]
    assert [x.step_id for x in rejected] == ["b", "a", "d"]


def test_leader_rule() -> None:
    now = 1000
    assert rules.leader_epoch(None, 0, 0, node="n", now_ms=now) == 1  # no row yet
    assert rules.leader_epoch("n", 4, 2000, node="n", now_ms=now) == 4  # renewal
    assert rules.leader_epoch("m", 4, 2000, node="n", now_ms=now) is None  # held
    assert rules.leader_epoch("m", 4, 1000, node="n", now_ms=now) == 5  # expired: takeover
    assert rules.leader_epoch("n", 4, 900, node="n", now_ms=now) == 5  # own, lapsed


def test_reclaim_and_audit_details() -> None:
    assert rules.reclaim_to_dead_letter(3, 3) and not rules.reclaim_to_dead_letter(2, 3)
    assert rules.lost_error(2, "lease expired") == {
        "kind": "lost",
        "message": "attempt 2 lost: lease expired",
    }
    assert rules.recover_details(["s1", "s2"], ["b", None, "a", "b"]) == {
        "step_ids": ["s1", "s2"],
        "owners": ["a", "b"],
        "count": 2,
    }
    assert rules.key_details("k", {"x": 1}) == {"idempotency_key": "k", "x": 1}
    assert rules.key_details(None, None) == {}
