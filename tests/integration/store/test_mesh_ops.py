"""Mesh table, reports, audit and settings history."""

from __future__ import annotations

import pytest

from relaymesh.model import MemberStatus, StepStatus
from relaymesh.store import Store
from tests.conftest import async_wait_until
from tests.integration.store.conftest import flat
from tests.integration.store.test_recovery import member

pytestmark = pytest.mark.asyncio


async def test_mesh_upsert_follows_the_merge_rule(store: Store) -> None:
    await store.upsert_mesh_nodes("r1", [member("a", MemberStatus.ALIVE, 1, at=100)])
    [a] = await store.list_mesh_nodes()
    assert (a.status, a.incarnation, a.reporter, a.metadata) == (
        MemberStatus.ALIVE,
        1,
        "r1",
        {"v": 1},
    )
    # Same incarnation: SUSPECT beats ALIVE, DEAD beats SUSPECT.
    await store.upsert_mesh_nodes("r2", [member("a", MemberStatus.SUSPECT, 1, at=200)])
    await store.upsert_mesh_nodes("r2", [member("a", MemberStatus.DEAD, 1, at=300)])
    # A stale reporter cannot resurrect it at the same incarnation.
    await store.upsert_mesh_nodes("r3", [member("a", MemberStatus.ALIVE, 1, at=400)])
    await store.upsert_mesh_nodes("r3", [member("a", MemberStatus.SUSPECT, 1, at=400)])
    [a] = await store.list_mesh_nodes()
    assert (a.status, a.incarnation, a.reporter, a.status_changed_at_ms) == (
        MemberStatus.DEAD,
        1,
        "r2",
        300,
    )
    # Nor with a lower one; a higher incarnation (the node refuted) wins.
    await store.upsert_mesh_nodes("r3", [member("a", MemberStatus.ALIVE, 0, at=500)])
    assert (await store.list_mesh_nodes())[0].status is MemberStatus.DEAD
    await store.upsert_mesh_nodes("a", [member("a", MemberStatus.ALIVE, 2, at=600)])
    [a] = await store.list_mesh_nodes()
    assert (a.status, a.incarnation, a.status_changed_at_ms) == (MemberStatus.ALIVE, 2, 600)
    # Higher incarnation, same status: the status change time stays.
    await store.upsert_mesh_nodes("a", [member("a", MemberStatus.ALIVE, 3, at=700)])
    [a] = await store.list_mesh_nodes()
    assert (a.incarnation, a.status_changed_at_ms) == (3, 600)
    await store.upsert_mesh_nodes("a", [])


async def test_prune_mesh_nodes(store: Store) -> None:
    now = await store.now_ms()
    await store.upsert_mesh_nodes(
        "r",
        [
            member("old-dead", MemberStatus.DEAD, at=now - 100_000),
            member("old-left", MemberStatus.LEFT, at=now - 100_000),
            member("new-dead", MemberStatus.DEAD, at=now),
            member("old-alive", MemberStatus.ALIVE, at=now - 100_000),
        ],
    )
    assert await store.prune_mesh_nodes(older_than_ms=50_000, limit=1, actor="cli:u") == 1
    assert await store.prune_mesh_nodes(older_than_ms=50_000, limit=10, actor="cli:u") == 1
    assert await store.prune_mesh_nodes(older_than_ms=50_000, limit=10, actor="cli:u") == 0
    assert sorted(n.name for n in await store.list_mesh_nodes()) == ["new-dead", "old-alive"]
    audits = await store.query_audit(action="prune")
    assert [a.details["count"] for a in audits] == [1, 1]  # the no-op is not audited


async def _store_clock_passes(store: Store, after_ms: int) -> None:
    """Wait (polling the store's own clock) until it reads later than ``after_ms``."""

    async def passed() -> bool:
        return await store.now_ms() > after_ms

    await async_wait_until(passed, 5, interval_s=0.01, what=f"the store clock past {after_ms}")


async def test_step_counts_and_queue_lag(store: Store) -> None:
    assert await store.queue_lag_ms() == 0
    counts = await store.step_counts()
    assert set(counts) == set(StepStatus) and sum(counts.values()) == 0
    before_submit = await store.now_ms()
    await store.submit_workflow(flat(3), "t")
    after_submit = await store.now_ms()
    [c] = await store.claim_steps("n", limit=1, lease_ms=10_000)
    await store.commit_success(c.lease, "n", None)
    await store.claim_steps("n", limit=1, lease_ms=10_000)
    counts = await store.step_counts()
    assert counts[StepStatus.SUCCEEDED] == 1 and counts[StepStatus.RUNNING] == 1
    assert counts[StepStatus.READY] == 1 and counts[StepStatus.PENDING] == 0
    # The oldest claimable step (s2) has waited since the submit: at least 80 ms once
    # the store's clock is 80 ms past it, and no more than the time since just before it.
    await _store_clock_passes(store, after_submit + 80)
    lag = await store.queue_lag_ms()
    assert 80 <= lag <= await store.now_ms() - before_submit
    # Nothing claimable left: no lag, however old the finished steps are.
    await store.claim_steps("n", limit=1, lease_ms=10_000)
    assert await store.queue_lag_ms() == 0


async def test_conflict_listing_and_report(store: Store) -> None:
    await store.submit_workflow(flat(2), "t")
    claims = await store.claim_steps("n", limit=2, lease_ms=10_000)
    for c in claims:
        await store.commit_success(c.lease, "n", None)
    assert await store.commit_success_many("late", [(claims[0].lease, 1)]) == [False]
    assert await store.heartbeat_many("late", [claims[0].lease], 1000) == {claims[0].step_id: None}
    assert await store.commit_success_many("other", [(claims[1].lease, 1)]) == [False]
    conflicts = await store.list_conflicts()
    assert [c.node for c in conflicts] == ["other", "late", "late"]
    assert len(await store.list_conflicts(limit=1)) == 1
    future = await store.now_ms() + 60_000
    assert await store.list_conflicts(since_ms=future) == []
    report = await store.conflict_report()
    assert report.total == 3
    assert report.by_step[0] == (claims[0].step_id, 2)
    assert report.by_node == [("late", 2), ("other", 1)]
    assert dict(report.by_event) == {"commit_success": 2, "heartbeat": 1}
    assert (await store.conflict_report(since_ms=future)).total == 0
    assert len((await store.conflict_report(top=1)).by_node) == 1


async def test_ownership_events_since(store: Store) -> None:
    await store.submit_workflow(flat(2), "t")
    await store.claim_steps("n", limit=1, lease_ms=10_000)
    future = await store.now_ms() + 60_000
    assert len(await store.list_ownership_events()) == 1
    assert await store.list_ownership_events(since_ms=future) == []


async def test_audit_query_filters(store: Store) -> None:
    # Three rows at three distinct store times, so --from/--to can each exclude one.
    wf = await store.submit_workflow(flat(1), "cli:a")
    await _store_clock_passes(store, (await store.query_audit())[0].at_ms)
    await store.record_audit("web:admin@1.2.3.4", "reload", None, {"node": "n1"})
    await _store_clock_passes(store, (await store.query_audit())[0].at_ms)
    await store.record_audit("cli:b", "note", "x", {"step_id": "st-123"})
    everything = await store.query_audit()
    assert [a.action for a in everything] == ["note", "reload", "submit"]
    assert [a.action for a in await store.query_audit(task_id=wf)] == ["submit"]
    assert [a.action for a in await store.query_audit(task_id="st-123")] == ["note"]
    assert [a.action for a in await store.query_audit(action="reload")] == ["reload"]
    assert len(await store.query_audit(limit=2)) == 2
    t = everything[1].at_ms
    assert everything[2].at_ms < t < everything[0].at_ms
    assert [a.action for a in await store.query_audit(from_ms=t, to_ms=t)] == ["reload"]
    assert [a.action for a in await store.query_audit(to_ms=t)] == ["reload", "submit"]
    assert [a.action for a in await store.query_audit(to_ms=t - 1)] == ["submit"]
    assert [a.action for a in await store.query_audit(from_ms=t)] == ["note", "reload"]
    assert await store.query_audit(from_ms=everything[0].at_ms + 1) == []
    assert everything[1].details == {"node": "n1"} and everything[1].actor == "web:admin@1.2.3.4"


async def test_settings_history(store: Store) -> None:
    await store.record_settings_change("n1", ["worker.slots", "gossip.probe_interval_ms"])
    await store.record_settings_change("n2", [])
    history = await store.list_settings_history()
    assert [(h.node, h.fields) for h in history] == [
        ("n2", ()),
        ("n1", ("worker.slots", "gossip.probe_interval_ms")),
    ]
    assert len(await store.list_settings_history(limit=1)) == 1
    audits = await store.query_audit(action="reload")
    assert [a.target for a in audits] == ["n2", "n1"]
