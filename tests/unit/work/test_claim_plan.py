"""The worker's claim planning (work/worker.py: plan_claims), alone."""

from __future__ import annotations

from collections.abc import Mapping

from relaymesh.work.worker import ClaimPlan, plan_claims


def plan(
    *,
    free: int = 8,
    allowance: Mapping[str, int] | None = None,
    room: Mapping[str, int] | None = None,
    non_low_streak: int = 0,
) -> ClaimPlan:
    return plan_claims(
        ["b", "a", "c"],
        free=free,
        claim_batch=64,
        allowance=(allowance or {}).get,
        room_cap=(room or {}).get,
        non_low_streak=non_low_streak,
        low_starvation_threshold=10,
    )


def test_unlimited_agents_share_one_batch_of_the_free_slots() -> None:
    p = plan()
    assert p.limit == 8 and p.exact == () and p.general == ("a", "b", "c")
    assert plan(free=100).limit == 64


def test_open_breakers_and_full_agents_are_not_claimed_for() -> None:
    p = plan(allowance={"a": 0, "b": 1}, room={"c": 0})
    assert p.exact == (("b", 1),) and p.general == ()


def test_an_agent_with_less_room_than_the_batch_is_claimed_for_exactly_its_room() -> None:
    p = plan(room={"a": 3, "b": 8})
    assert p.exact == (("a", 3),) and p.general == ("b", "c")


def test_the_low_guard_forces_one_low_pick_after_the_threshold() -> None:
    assert plan(non_low_streak=9).low_first == 0
    assert plan(non_low_streak=10).low_first == 1
