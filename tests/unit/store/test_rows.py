from __future__ import annotations

from relaymesh.model import Priority, StepRecord, StepStatus, WorkflowStatus
from relaymesh.store.rows import dumps, loads, replayed
from relaymesh.store.rules import pick_batch, workflow_status


def test_workflow_status_rule() -> None:
    def ws(**kw: bool) -> WorkflowStatus:
        flags = {"active": False, "pending": False, "dead": False, "cancelled": False}
        flags.update(kw)
        return workflow_status(**flags)

    assert ws() is WorkflowStatus.SUCCEEDED
    assert ws(active=True, dead=True) is WorkflowStatus.RUNNING
    assert ws(pending=True) is WorkflowStatus.RUNNING
    assert ws(pending=True, dead=True) is WorkflowStatus.FAILED
    assert ws(dead=True, cancelled=True) is WorkflowStatus.FAILED
    assert ws(cancelled=True) is WorkflowStatus.CANCELLED


def test_pick_batch_skips_keys_taken_in_the_batch() -> None:
    picked: list[str] = []
    held: set[str] = set()
    candidates = [("a", ("k",)), ("b", ("k", "j")), ("c", ("j",)), ("d", ()), ("a", ())]
    pick_batch(candidates, want=10, picked=picked, held=held)
    assert picked == ["a", "c", "d"] and held == {"k", "j"}


def test_pick_batch_stops_at_want_and_keeps_earlier_picks() -> None:
    picked = ["x"]
    held = {"k"}
    pick_batch([("a", ("k",)), ("b", ()), ("c", ())], want=2, picked=picked, held=held)
    assert picked == ["x", "b"]


def test_json_round_trip() -> None:
    assert loads(dumps({"b": [1, None], "a": "é"})) == {"a": "é", "b": [1, None]}
    assert loads(None) is None


def test_ids_increase_within_a_millisecond() -> None:
    import random

    from relaymesh.clock import FakeClock
    from relaymesh.store.rows import IdMaker

    clock = FakeClock()
    make = IdMaker(clock, random.Random(7))
    ids = [make() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) for i in ids)
    assert ids[0][:12] == f"{clock.wall_ms():012x}"
    again = IdMaker(FakeClock(), random.Random(7))
    assert [again() for _ in range(3)] == ids[:3]  # repeatable with injected randomness


def _step(status: StepStatus, attempt: int, max_attempts: int, replays: tuple = ()) -> StepRecord:  # type: ignore[type-arg]
    return StepRecord(
        id="s1",
        workflow_id="w1",
        name="a",
        agent="fail",
        status=status,
        priority=Priority.NORMAL,
        attempt=attempt,
        max_attempts=max_attempts,
        lease_epoch=attempt,
        owner_node=None,
        lease_expires_at_ms=None,
        not_before_ms=None,
        depends_on=(),
        locks=(),
        input=None,
        result=None,
        error={"kind": "permanent", "message": "boom"},
        created_at_ms=0,
        updated_at_ms=0,
        replays=replays,
    )


def test_a_replay_keeps_the_attempts_and_grants_the_same_budget() -> None:
    # Exhausted 3/3: three more runs (4..6), the counter goes on.
    first, column, entry = replayed(_step(StepStatus.DEAD_LETTER, 3, 3), "cli:ops", 1000)
    assert first == 6
    assert entry == {
        "at": 1000,
        "actor": "cli:ops",
        "from_status": "DEAD_LETTER",
        "from_attempt": 3,
        "max_attempts": 3,
        "error": {"kind": "permanent", "message": "boom"},
    }
    history = tuple(loads(column))
    # Exhausted again at 6/6: again three (7..9), not six.
    second, column2, _ = replayed(_step(StepStatus.DEAD_LETTER, 6, 6, history), "cli:ops", 2000)
    assert second == 9 and [h["from_attempt"] for h in loads(column2)] == [3, 6]
    # A permanent error at 1/3, and a cancelled step that never ran.
    assert replayed(_step(StepStatus.DEAD_LETTER, 1, 3), "a", 0)[0] == 4
    assert replayed(_step(StepStatus.CANCELLED, 0, 3), "a", 0)[0] == 3
