"""A DEAD verdict is a hint; a silent heartbeat is the evidence (both backends).

``reclaim_dead_owners`` moves a DEAD/LEFT owner's RUNNING step only when its lease has
not been claimed or heartbeated for ``stale_after_ms`` (store clock), and says how many
it left alone. A forged or mistaken DEAD for a node that keeps heartbeating reclaims
nothing.
"""

from __future__ import annotations

import pytest

from relaymesh.model import MemberStatus, MeshNode, StepStatus
from relaymesh.store import Store
from tests.conftest import async_wait_until
from tests.integration.store.conftest import flat, step, workflow

pytestmark = pytest.mark.asyncio

WINDOW_MS = 1000
"""The evidence window of these tests: long enough that a heartbeat lands inside it."""


async def mark(store: Store, name: str, status: MemberStatus) -> None:
    await store.upsert_mesh_nodes(
        "reporter",
        [MeshNode(name, "127.0.0.1:7001", status, 1, {}, await store.now_ms())],
    )


async def silent_for(store: Store, since_ms: int, ms: int) -> None:
    async def elapsed() -> bool:
        return await store.now_ms() - since_ms > ms

    await async_wait_until(elapsed, 10, 0.01, f"{ms} ms of store time")


async def test_a_dead_verdict_for_a_heartbeating_owner_reclaims_nothing(store: Store) -> None:
    await store.submit_workflow(flat(3), "t")
    claims = await store.claim_steps("busy", limit=3, lease_ms=60_000)
    await mark(store, "busy", MemberStatus.DEAD)

    mesh_wide = await store.reclaim_dead_owners(limit=10, actor="node:x", stale_after_ms=60_000)
    named = await store.reclaim_dead_owners(
        limit=10, actor="node:x", stale_after_ms=60_000, nodes=["busy"]
    )

    assert (mesh_wide.step_ids, mesh_wide.still_heartbeating) == ((), 3)
    assert (named.step_ids, named.still_heartbeating) == ((), 3)
    for claim in claims:
        record = await store.get_step(claim.step_id)
        assert (record.status, record.owner_node, record.lease_epoch) == (
            StepStatus.RUNNING,
            "busy",
            claim.lease_epoch,
        )
    assert [e.event for e in await store.list_ownership_events(limit=10)] == ["claimed"] * 3
    assert await store.query_audit(action="recover") == []
    # The owner's commits still land: its leases were never touched.
    for claim in claims:
        await store.commit_success(claim.lease, "busy", {"ok": True})


async def test_a_heartbeat_restarts_the_evidence_window(store: Store) -> None:
    await store.submit_workflow(workflow(step("a"), step("b")), "t")
    a, b = await store.claim_steps("n1", limit=2, lease_ms=60_000)
    claimed_ms = await store.now_ms()
    await mark(store, "n1", MemberStatus.DEAD)
    await silent_for(store, claimed_ms, WINDOW_MS)
    # One lease heartbeated (alone), one with the batch call, just before the verdict.
    await store.heartbeat(a.lease, "n1", 60_000)
    beat_ms = await store.now_ms()

    outcome = await store.reclaim_dead_owners(limit=10, actor="node:x", stale_after_ms=WINDOW_MS)
    assert (outcome.step_ids, outcome.still_heartbeating) == ((b.step_id,), 1)

    # Silent for a window again, then one batch heartbeat: fresh once more.
    await silent_for(store, beat_ms, WINDOW_MS)
    await store.heartbeat_many("n1", [a.lease], 60_000)
    batch_ms = await store.now_ms()
    outcome = await store.reclaim_dead_owners(limit=10, actor="node:x", stale_after_ms=WINDOW_MS)
    assert (outcome.step_ids, outcome.still_heartbeating) == ((), 1)

    # Then the owner goes quiet for good: the verdict now has its evidence.
    await silent_for(store, batch_ms, WINDOW_MS)
    outcome = await store.reclaim_dead_owners(limit=10, actor="node:x", stale_after_ms=WINDOW_MS)
    assert (outcome.step_ids, outcome.still_heartbeating) == ((a.step_id,), 0)
    record = await store.get_step(a.step_id)
    assert record.status is StepStatus.READY and record.lease_epoch == a.lease_epoch + 1


async def test_only_dead_or_left_owners_are_counted(store: Store) -> None:
    await store.submit_workflow(flat(2), "t")
    await store.claim_steps("alive", limit=1, lease_ms=60_000)
    await store.claim_steps("left", limit=1, lease_ms=60_000)
    await mark(store, "alive", MemberStatus.ALIVE)
    await mark(store, "left", MemberStatus.LEFT)
    outcome = await store.reclaim_dead_owners(limit=10, actor="node:x", stale_after_ms=60_000)
    assert (outcome.step_ids, outcome.still_heartbeating) == ((), 1)


async def test_a_heartbeat_between_choice_and_row_lock_wins(store: Store) -> None:
    """PostgreSQL chooses the dead owner's steps, then locks them: a heartbeat that lands
    in between must keep the step (SQLite writers take turns, so there is no window)."""
    from relaymesh.store.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        pytest.skip("the choose-then-lock window exists only on PostgreSQL")
    await store.submit_workflow(workflow(step("a")), "t")
    [claim] = await store.claim_steps("n1", limit=1, lease_ms=60_000)
    await silent_for(store, await store.now_ms(), WINDOW_MS)
    chosen = [(claim.step_id, claim.lease_epoch)]  # stale when chosen
    await store.heartbeat(claim.lease, "n1", 60_000)  # and then the owner spoke

    async def reclaim(conn: object) -> list[tuple[str, str | None]]:
        return await store._reclaim(
            conn, chosen, mode="owner", event="dead_owner", why="x", stale_after_ms=WINDOW_MS
        )

    assert await store._run(reclaim) == []
    record = await store.get_step(claim.step_id)
    assert (record.status, record.lease_epoch) == (StepStatus.RUNNING, claim.lease_epoch)
