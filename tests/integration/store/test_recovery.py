"""Recovery and maintenance: expiry, dead owners, retries, leadership."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relaymesh.model import MemberStatus, MeshNode, StepStatus, WorkflowStatus
from relaymesh.store import Store, open_store
from relaymesh.store.postgres import PostgresStore
from tests.conftest import async_wait_until, require_pg
from tests.integration.store.conftest import flat, step, workflow
from tests.pgutil import fresh_pg_database

pytestmark = pytest.mark.asyncio


async def reclaim_now(
    store: Store, *, actor: str, nodes: list[str] | None = None
) -> tuple[str, ...]:
    """Act on DEAD verdicts without asking for heartbeat evidence (stale_after_ms=0)."""
    outcome = await store.reclaim_dead_owners(limit=10, actor=actor, stale_after_ms=0, nodes=nodes)
    return outcome.step_ids


def member(name: str, status: MemberStatus, incarnation: int = 1, at: int = 0) -> MeshNode:
    return MeshNode(
        name=name,
        address=f"127.0.0.1:{7000 + len(name)}",
        status=status,
        incarnation=incarnation,
        metadata={"v": 1},
        status_changed_at_ms=at,
    )


async def test_reclaim_expired_back_to_ready_then_dead_letter_when_out_of_attempts(
    store: Store,
) -> None:
    wf = await store.submit_workflow(
        workflow(step("a", locks=("k",), max_attempts=2), step("b", locks=("k",))), "t"
    )
    [a] = await store.claim_steps("n1", limit=5, lease_ms=1)
    assert a.name == "a"
    reclaimed: list[str] = []

    async def reclaim() -> bool:
        reclaimed.extend(await store.reclaim_expired(10))
        return bool(reclaimed)

    await async_wait_until(reclaim, 10, 0.005, "lease expiry")
    assert reclaimed == [a.step_id]
    record = await store.get_step(a.step_id)
    assert record.status is StepStatus.READY and record.lease_epoch == 2 and record.attempt == 1
    assert record.owner_node is None
    event = (await store.list_ownership_events(limit=1))[0]
    assert (event.event, event.node, event.lease_epoch) == ("lease_expired", "n1", 2)
    # The lock k was released: a (READY again, at the back of the queue) or b can take it.
    [first] = await store.claim_steps("n2", limit=5, lease_ms=60_000)
    assert first.name == "b"
    await store.commit_success(first.lease, "n2", None)
    [a2] = await store.claim_steps("n2", limit=5, lease_ms=1)
    assert a2.step_id == a.step_id and a2.attempt == 2
    reclaimed.clear()
    await async_wait_until(reclaim, 10, 0.005, "second lease expiry")
    record = await store.get_step(a.step_id)
    assert record.status is StepStatus.DEAD_LETTER
    assert record.error["kind"] == "lost"
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.FAILED


async def test_unexpired_leases_are_not_reclaimed(store: Store) -> None:
    await store.submit_workflow(flat(2), "t")
    await store.claim_steps("n", limit=2, lease_ms=60_000)
    assert await store.reclaim_expired(10) == []


async def test_reclaim_dead_owners_from_mesh_and_by_name(store: Store) -> None:
    await store.submit_workflow(flat(4), "t")
    a = await store.claim_steps("alive", limit=1, lease_ms=60_000)
    d = await store.claim_steps("dead", limit=2, lease_ms=60_000)
    x = await store.claim_steps("gone", limit=1, lease_ms=60_000)
    await store.upsert_mesh_nodes(
        "alive",
        [
            member("alive", MemberStatus.ALIVE),
            member("dead", MemberStatus.DEAD),
        ],
    )
    assert await store.running_by_owner_status() == {"ALIVE": 1, "DEAD": 2, "UNKNOWN": 1}
    got = list(await reclaim_now(store, actor="node:alive"))
    assert sorted(got) == sorted(c.step_id for c in d)
    for c in d:
        record = await store.get_step(c.step_id)
        assert record.status is StepStatus.READY and record.lease_epoch == c.lease_epoch + 1
    assert {e.event for e in await store.list_ownership_events(limit=2)} == {"dead_owner"}
    [audit] = await store.query_audit(action="recover")
    assert audit.actor == "node:alive" and sorted(audit.details["step_ids"]) == sorted(got)
    got = list(await reclaim_now(store, actor="cli:u", nodes=["gone"]))
    assert got == [x[0].step_id]
    assert await reclaim_now(store, actor="cli:u") == ()
    assert (await store.get_step(a[0].step_id)).status is StepStatus.RUNNING
    assert await store.running_by_owner_status() == {"ALIVE": 1}


async def test_promote_retries(store: Store) -> None:
    await store.submit_workflow(flat(2), "t")
    claims = await store.claim_steps("n", limit=2, lease_ms=60_000)
    await store.commit_failure(claims[0].lease, "n", {"kind": "transient"}, 0)
    await store.commit_failure(claims[1].lease, "n", {"kind": "transient"}, 3_600_000)

    async def promoted() -> bool:
        return await store.promote_retries(10) == 1

    await async_wait_until(promoted, 5, 0.005, "a promotion")
    assert (await store.get_step(claims[0].step_id)).status is StepStatus.READY
    assert (await store.get_step(claims[1].step_id)).status is StepStatus.RETRY_WAIT
    assert await store.promote_retries(10) == 0


async def test_leader_lease(store: Store) -> None:
    first = await store.acquire_leader("n1", 60_000)
    assert first is not None and first.node == "n1" and first.epoch == 1
    assert await store.acquire_leader("n2", 60_000) is None
    renewed = await store.acquire_leader("n1", 60_000)
    assert renewed is not None and renewed.epoch == 1
    assert renewed.expires_at_ms >= first.expires_at_ms
    await store.release_leader(renewed)
    taken = await store.acquire_leader("n2", 60_000)
    assert taken is not None and taken.node == "n2" and taken.epoch == 2
    await store.release_leader(renewed)  # stale: changes nothing
    assert await store.acquire_leader("n1", 60_000) is None
    short = await store.acquire_leader("n2", 1)
    assert short is not None and short.epoch == 2

    async def taken_over() -> bool:
        return await store.acquire_leader("n3", 60_000) is not None

    await async_wait_until(taken_over, 5, 0.005, "the leader lease to expire")
    assert await store.acquire_leader("n2", 60_000) is None


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    """A fresh PostgreSQL store, for the tests of a window only PostgreSQL has (no
    SQLite variant that could only skip)."""
    async with fresh_pg_database(require_pg()) as url:
        opened = await open_store(url)
        assert isinstance(opened, PostgresStore)
        try:
            yield opened
        finally:
            await opened.close()


@pytest.mark.pg
async def test_a_dead_owner_reclaim_leaves_a_step_re_claimed_meanwhile_alone(
    pg_store: PostgresStore,
) -> None:
    """Two survivors act on the same DEAD verdict. The slower chose the step while the
    dead node held it; by the time it locks the row the faster one has reclaimed it and
    a live node claimed it. Found in the e2e kill -9 test on PostgreSQL, where the slower
    reclaim took the live node's fresh lease as a dead owner's (SQLite writers take
    turns, so the choice and the update are one step there)."""
    store = pg_store
    await store.submit_workflow(workflow(step("a")), "t")
    [first] = await store.claim_steps("n1", limit=1, lease_ms=60_000)
    stale = [(first.step_id, first.lease_epoch)]  # what the slower survivor chose
    assert await reclaim_now(store, actor="node:n2", nodes=["n1"]) == (first.step_id,)
    [again] = await store.claim_steps("n2", limit=1, lease_ms=60_000)
    assert again.step_id == first.step_id

    async def slower(conn: object) -> list[tuple[str, str | None]]:
        return await store._reclaim(conn, stale, mode="owner", event="dead_owner", why="x")

    assert await store._run(slower) == []
    s = await store.get_step(first.step_id)
    assert (s.status, s.owner_node, s.lease_epoch) == (StepStatus.RUNNING, "n2", again.lease_epoch)
