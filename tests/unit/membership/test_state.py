"""The merge rule and the snapshot merge (a lattice join: hypothesis proves it)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaymesh.membership.state import (
    Member,
    Verdict,
    judge,
    merge_member,
    merge_views,
    supersedes,
)
from relaymesh.model import MemberStatus

A, S, D, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT


def m(status: MemberStatus, inc: int, port: int = 1, meta: dict[str, str] | None = None) -> Member:
    return Member("x", ("h", port), status, inc, meta or {}, 0)


def test_higher_incarnation_wins_whatever_the_status() -> None:
    assert supersedes(5, A, 4, D)
    assert not supersedes(4, D, 5, A)


def test_equal_incarnation_left_dead_over_suspect_over_alive() -> None:
    assert supersedes(3, S, 3, A)
    assert supersedes(3, D, 3, S)
    assert supersedes(3, L, 3, D)
    assert not supersedes(3, A, 3, S)
    assert not supersedes(3, A, 3, A)


def test_merge_member_picks_the_winner() -> None:
    assert merge_member(m(A, 2), m(S, 2)).status is S
    assert merge_member(m(D, 1), m(A, 2)).status is A


names = st.sampled_from(["a", "b", "c", "d"])
members = st.builds(
    lambda name, status, inc, port, meta, at: Member(name, ("h", port), status, inc, meta, at),
    names,
    st.sampled_from(list(MemberStatus)),
    st.integers(0, 3),
    st.integers(1, 3),
    st.dictionaries(st.sampled_from(["k", "v"]), st.sampled_from(["1", "2"]), max_size=2),
    st.integers(0, 2),
)
views = st.lists(members, max_size=6).map(lambda ms: {x.name: x for x in ms})


@given(views, views)
def test_merge_views_is_commutative(a: dict[str, Member], b: dict[str, Member]) -> None:
    assert merge_views(a, b) == merge_views(b, a)


@given(views, views, views)
def test_merge_views_is_associative(
    a: dict[str, Member], b: dict[str, Member], c: dict[str, Member]
) -> None:
    assert merge_views(merge_views(a, b), c) == merge_views(a, merge_views(b, c))


@given(views, views)
def test_merge_views_is_idempotent(a: dict[str, Member], b: dict[str, Member]) -> None:
    assert merge_views(a, a) == a
    ab = merge_views(a, b)
    assert merge_views(ab, b) == ab


@given(views, views)
def test_merge_never_loses_a_higher_incarnation(a: dict[str, Member], b: dict[str, Member]) -> None:
    merged = merge_views(a, b)
    for view in (a, b):
        for name, member in view.items():
            assert merged[name].incarnation >= member.incarnation


# --- judge: the rule the running node applies to every update ------------------

_statuses = st.sampled_from(list(MemberStatus))


@given(st.integers(0, 5), _statuses, st.integers(0, 5), _statuses)
def test_judge_applies_only_what_supersedes(
    inc: int, status: MemberStatus, cur_inc: int, cur_status: MemberStatus
) -> None:
    verdict = judge(inc, status, cur_inc, cur_status)
    if verdict is Verdict.APPLY:
        assert supersedes(inc, status, cur_inc, cur_status)
    if verdict is Verdict.CONFIRM:
        assert (inc, status) == (cur_inc, cur_status) == (cur_inc, MemberStatus.SUSPECT)


@pytest.mark.parametrize(
    ("incoming", "current", "verdict"),
    [
        ((3, MemberStatus.ALIVE), (2, MemberStatus.DEAD), Verdict.APPLY),  # refutation
        ((2, MemberStatus.ALIVE), (2, MemberStatus.SUSPECT), Verdict.IGNORE),
        ((2, MemberStatus.SUSPECT), (2, MemberStatus.ALIVE), Verdict.APPLY),
        ((2, MemberStatus.SUSPECT), (2, MemberStatus.SUSPECT), Verdict.CONFIRM),
        ((9, MemberStatus.SUSPECT), (2, MemberStatus.DEAD), Verdict.IGNORE),  # not re-suspected
        ((9, MemberStatus.DEAD), (2, MemberStatus.DEAD), Verdict.IGNORE),
        ((2, MemberStatus.LEFT), (2, MemberStatus.DEAD), Verdict.APPLY),
        ((9, MemberStatus.DEAD), (2, MemberStatus.LEFT), Verdict.IGNORE),  # LEFT is final...
        ((3, MemberStatus.ALIVE), (2, MemberStatus.LEFT), Verdict.APPLY),  # ...but a new life
        ((1, MemberStatus.DEAD), (2, MemberStatus.ALIVE), Verdict.IGNORE),
    ],
)
def test_judge_cases(
    incoming: tuple[int, MemberStatus], current: tuple[int, MemberStatus], verdict: Verdict
) -> None:
    assert judge(*incoming, *current) is verdict
