"""Claims: what is claimable, in which order, and what a claim records."""

from __future__ import annotations

import pytest

from relaymesh.model import Priority, StepStatus
from relaymesh.store import Store
from tests.integration.store.conftest import flat, step, workflow

pytestmark = pytest.mark.asyncio


async def names(store: Store, workflow_id: str) -> dict[str, str]:
    _, steps = await store.get_workflow(workflow_id)
    return {s.name: s.id for s in steps}


async def test_submit_makes_roots_ready_and_dependents_pending(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(step("a"), step("b", depends_on=("a",)), step("c")), "cli:test"
    )
    record, steps = await store.get_workflow(wf)
    assert record.status.value == "RUNNING"
    status = {s.name: s.status for s in steps}
    assert status == {"a": StepStatus.READY, "b": StepStatus.PENDING, "c": StepStatus.READY}
    assert next(s for s in steps if s.name == "b").depends_on == ("a",)


async def test_claim_records_lease_owner_epoch_and_event(store: Store) -> None:
    wf = await store.submit_workflow(workflow(step("a", input={"x": 1})), "cli:test")
    before = await store.now_ms()
    [claim] = await store.claim_steps("n1", limit=5, lease_ms=30_000)
    after = await store.now_ms()
    assert claim.workflow_id == wf and claim.name == "a" and claim.input == {"x": 1}
    assert claim.attempt == 1 and claim.lease_epoch == 1 and len(claim.lease_token) >= 16
    assert before + 30_000 <= claim.lease_expires_at_ms <= after + 30_000
    record = await store.get_step(claim.step_id)
    assert record.status is StepStatus.RUNNING and record.owner_node == "n1"
    assert record.lease_epoch == 1 and record.attempt == 1
    events = await store.list_ownership_events()
    assert [(e.step_id, e.event, e.node, e.lease_epoch) for e in events] == [
        (claim.step_id, "claimed", "n1", 1)
    ]
    assert await store.claim_steps("n2", limit=5, lease_ms=30_000) == []


async def test_claim_order_priority_then_age(store: Store) -> None:
    await store.submit_workflow(workflow(step("low1", priority=Priority.LOW)), "t")
    await store.submit_workflow(workflow(step("norm1")), "t")
    await store.submit_workflow(workflow(step("high1", priority=Priority.HIGH)), "t")
    await store.submit_workflow(workflow(step("norm2")), "t")
    await store.submit_workflow(workflow(step("high2", priority=Priority.HIGH)), "t")
    claims = await store.claim_steps("n", limit=10, lease_ms=10_000)
    assert [c.name for c in claims] == ["high1", "high2", "norm1", "norm2", "low1"]


async def test_low_first_takes_low_priority_picks_first(store: Store) -> None:
    await store.submit_workflow(
        workflow(
            step("h1", priority=Priority.HIGH),
            step("h2", priority=Priority.HIGH),
            step("l1", priority=Priority.LOW),
            step("l2", priority=Priority.LOW),
        ),
        "t",
    )
    claims = await store.claim_steps("n", limit=2, lease_ms=10_000, low_first=1)
    assert sorted(c.name for c in claims) == ["h1", "l1"]
    # No LOW left to favour: low_first just falls back to the normal order.
    rest = await store.claim_steps("n", limit=1, lease_ms=10_000, low_first=5)
    assert [c.name for c in rest] == ["l2"]


async def test_agent_filters(store: Store) -> None:
    await store.submit_workflow(
        workflow(step("e", "echo"), step("s", "sleep"), step("f", "fail")), "t"
    )
    only = await store.claim_steps("n", limit=10, lease_ms=10_000, agents=["sleep"])
    assert [c.name for c in only] == ["s"]
    rest = await store.claim_steps("n", limit=10, lease_ms=10_000, exclude_agents=["fail"])
    assert [c.name for c in rest] == ["e"]
    assert await store.claim_steps("n", limit=10, lease_ms=10_000, agents=[]) == []
    last = await store.claim_steps("n", limit=10, lease_ms=10_000)
    assert [c.name for c in last] == ["f"]


async def test_limit_and_batch(store: Store) -> None:
    await store.submit_workflow(flat(10), "t")
    first = await store.claim_steps("n", limit=4, lease_ms=10_000)
    second = await store.claim_steps("n", limit=100, lease_ms=10_000)
    assert len(first) == 4 and len(second) == 6
    assert not {c.step_id for c in first} & {c.step_id for c in second}
    assert len({c.lease_token for c in first + second}) == 10
    assert await store.claim_steps("n", limit=0, lease_ms=10_000) == []


async def test_locks_exclusive_across_claims_and_within_a_batch(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(
            step("a", locks=("repo",)),
            step("b", locks=("repo", "db")),
            step("c", locks=("db",)),
            step("d"),
        ),
        "t",
    )
    first = await store.claim_steps("n", limit=10, lease_ms=10_000)
    # a takes repo; b needs repo (same batch) -> skipped; c takes db; d has no locks.
    assert sorted(c.name for c in first) == ["a", "c", "d"]
    assert await store.claim_steps("n", limit=10, lease_ms=10_000) == []
    by_name = {c.name: c for c in first}
    await store.commit_success(by_name["a"].lease, "n", None)
    # b still needs db, which c holds.
    assert await store.claim_steps("n", limit=10, lease_ms=10_000) == []
    await store.commit_failure(by_name["c"].lease, "n", {"kind": "transient"}, 0)
    got = await store.claim_steps("n", limit=10, lease_ms=10_000)
    # b (older ready_at than c's retry) wins the db key; c must wait for it.
    assert [c.name for c in got] == ["b"]
    assert got[0].locks == ("db", "repo")
    ids = await names(store, wf)
    assert (await store.get_step(ids["c"])).status is StepStatus.RETRY_WAIT


async def test_retry_wait_claimable_only_after_not_before(store: Store) -> None:
    await store.submit_workflow(workflow(step("a")), "t")
    [claim] = await store.claim_steps("n", limit=1, lease_ms=10_000)
    before = await store.now_ms()
    status = await store.commit_failure(claim.lease, "n", {"kind": "transient"}, 60_000)
    assert status is StepStatus.RETRY_WAIT
    record = await store.get_step(claim.step_id)
    assert record.not_before_ms is not None and record.not_before_ms >= before + 60_000
    assert record.error == {"kind": "transient"}
    assert await store.claim_steps("n", limit=1, lease_ms=10_000) == []
    assert await store.promote_retries(10) == 0
    assert await store.queue_lag_ms() == 0


async def test_retry_wait_with_zero_delay_is_claimed_again(store: Store) -> None:
    await store.submit_workflow(workflow(step("a")), "t")
    [claim] = await store.claim_steps("n", limit=1, lease_ms=10_000)
    await store.commit_failure(claim.lease, "n", {"kind": "transient", "message": "x"}, 0)
    [again] = await store.claim_steps("n2", limit=1, lease_ms=10_000)
    assert again.step_id == claim.step_id
    assert again.attempt == 2 and again.lease_epoch == 2 and again.lease_token != claim.lease_token


async def test_claim_carries_upstream_results(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(step("a"), step("b"), step("c", depends_on=("a", "b"))), "t"
    )
    claims = await store.claim_steps("n", limit=10, lease_ms=10_000)
    assert sorted(c.name for c in claims) == ["a", "b"]
    for c in claims:
        await store.commit_success(c.lease, "n", {"from": c.name})
    [c] = await store.claim_steps("n", limit=10, lease_ms=10_000)
    assert c.name == "c"
    assert c.upstream == {"a": {"from": "a"}, "b": {"from": "b"}}
    assert c.ready_at_ms is not None
    assert (await store.get_workflow(wf))[0].status.value == "RUNNING"
