from __future__ import annotations

from relaymesh.model import WorkflowStatus
from relaymesh.store.rows import dumps, loads
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
