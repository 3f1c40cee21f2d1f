"""Maintenance against a real store: leader election and failover, reclaiming expired
leases and dead owners' steps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relaymesh.clock import FakeClock, SystemClock
from relaymesh.exceptions import NotFoundError
from relaymesh.model import MemberStatus, MeshNode, StepStatus, WorkflowStatus
from relaymesh.ops.metrics import Metrics
from relaymesh.settings import Settings
from relaymesh.work.maintenance import Maintenance
from tests.conftest import async_wait_until
from tests.integration.work.helpers import (
    WAIT_S,
    ProxyStore,
    harness,
    holds,
    settings,
    steps_by_name,
    submit,
    wait_step,
    wait_workflow,
)


def maintenance(store: Any, node: str, cfg: Settings, clock: Any = None) -> Maintenance:
    return Maintenance(
        store=store,
        node=node,
        settings=lambda: cfg,
        metrics=Metrics(),
        clock=clock or SystemClock(),
    )


async def _elapsed(store: Any, since_ms: int, ms: int) -> bool:
    return bool(await store.now_ms() - since_ms >= ms)


async def report_long_gone_member(store: Any) -> None:
    """A DEAD member ``gone`` whose status changed a minute ago, as node n1 reports it."""
    now = await store.now_ms()
    gone = MeshNode(
        name="gone",
        address="127.0.0.1:1",
        status=MemberStatus.DEAD,
        incarnation=1,
        metadata={},
        status_changed_at_ms=now - 60_000,
    )
    await store.upsert_mesh_nodes("n1", [gone])


@contextlib.asynccontextmanager
async def running(m: Maintenance) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(m.run())
    try:
        yield task
    finally:
        m.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)


def leader_gauge(m: Maintenance) -> float:
    return float(m.metrics.is_leader._value.get())


async def test_one_leader_and_graceful_handover(store: Any) -> None:
    cfg = settings(maintenance={"interval_ms": 30, "leader_lease_ms": 5000})
    standby = ProxyStore(store)
    m1, m2 = maintenance(store, "n1", cfg), maintenance(standby, "n2", cfg)
    async with running(m1):
        await async_wait_until(holds(lambda: m1.is_leader), WAIT_S, what="n1 leads")
        async with running(m2):
            await async_wait_until(
                holds(lambda: standby.calls.get("acquire_leader", 0) >= 3),
                WAIT_S,
                what="n2 to try for leadership",
            )
            assert m1.is_leader and not m2.is_leader
            assert standby.calls.get("reclaim_expired", 0) == 0  # the standby does nothing
            assert leader_gauge(m1) == 1 and leader_gauge(m2) == 0
            m1.stop()  # graceful: gives the lease up, n2 takes over at its next tick
            await async_wait_until(holds(lambda: m2.is_leader), 2, what="n2 takes over")
            assert leader_gauge(m1) == 0 and leader_gauge(m2) == 1


async def test_failover_when_the_leader_dies(store: Any) -> None:
    cfg = settings(maintenance={"interval_ms": 30, "leader_lease_ms": 400})
    dying = ProxyStore(store)
    m1, m2 = maintenance(dying, "n1", cfg), maintenance(store, "n2", cfg)
    t1 = asyncio.create_task(m1.run())
    await async_wait_until(holds(lambda: m1.is_leader), WAIT_S, what="n1 leads")
    async with running(m2):
        # n1 dies without giving the lease up: n2 must wait for expiry, then lead.
        dying.fail = {"release_leader": 1}
        t1.cancel()
        await asyncio.gather(t1, return_exceptions=True)
        loop = asyncio.get_running_loop()
        died = loop.time()
        await async_wait_until(holds(lambda: m2.is_leader), WAIT_S, what="failover")
        assert loop.time() - died < 3.0


async def test_run_once_reclaims_expired_leases(store: Any) -> None:
    cfg = settings(worker={"lease_ms": 200, "heartbeat_ms": 60_000})
    wf = await submit(
        store,
        {"name": "x", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 60}}]},
        cfg,
    )
    m = maintenance(store, "m", cfg)
    alive = True
    async with harness(store, cfg, node="n1", local_alive=lambda: alive) as h:
        worker = h.start()
        await wait_step(store, wf, "s", StepStatus.RUNNING)
        alive = False  # safe mode: no new claims, so the reclaimed step stays READY
        reclaimed: list[str] = []

        async def expired() -> bool:
            reclaimed.extend((await m.run_once())["expired"])
            return bool(reclaimed)

        await async_wait_until(expired, WAIT_S, interval_s=0.05, what="expiry reclaim")
        # The owner learns it lost the lease and kills its agent.
        await async_wait_until(holds(lambda: not worker.running()), WAIT_S, what="agent killed")
    assert m.metrics.lease_expired_reclaimed._value.get() == 1
    step = (await steps_by_name(store, wf))["s"]
    assert step.status is StepStatus.READY
    assert "lease_expired" in [e.event for e in await store.list_ownership_events()]


async def test_run_once_report_and_prune_interval(store: Any) -> None:
    clock = FakeClock()
    cfg = settings(maintenance={"mesh_prune_interval_ms": 10_000, "mesh_prune_older_than_ms": 1})
    await report_long_gone_member(store)
    m = maintenance(store, "m", cfg, clock)
    report = await m.run_once()
    assert report == {
        "expired": [],
        "dead_owners": [],
        "promoted": 0,
        "pruned": 1,
        "retention": {},
    }
    assert (await m.run_once())["pruned"] is None  # not due yet
    clock.advance(10_000)
    assert (await m.run_once())["pruned"] == 0
    assert m.metrics.mesh_nodes_pruned._value.get() == 1


async def test_a_pass_run_by_hand_is_audited_as_the_operator(store: Any) -> None:
    """``relaymesh maintenance --node-id N`` acts as N but the operator asked for it."""
    from relaymesh.ops.services import cli_actor, run_maintenance_pass

    cfg = settings(maintenance={"mesh_prune_older_than_ms": 1})
    await report_long_gone_member(store)
    with pytest.raises(NotFoundError, match="'ops-host' is not in the mesh"):
        await run_maintenance_pass(store, cfg, node="ops-host")
    n1 = MeshNode("n1", "127.0.0.1:2", MemberStatus.ALIVE, 1, {}, await store.now_ms())
    await store.upsert_mesh_nodes("n1", [n1])
    report = await run_maintenance_pass(store, cfg, node="n1")
    assert report["pruned"] == 1
    rows = await store.query_audit(action="prune")
    assert [r.actor for r in rows] == [cli_actor()]
    assert cli_actor().startswith("cli:")


async def test_notify_member_dead_reclaims_at_once(store: Any, store_url: str) -> None:
    from relaymesh.store import open_store

    cfg = settings(worker={"lease_ms": 600_000, "heartbeat_ms": 100})
    wf = await submit(
        store,
        {
            "name": "m",
            "steps": [
                {"name": "s", "agent": "sleep", "input": {"seconds": 0.2}},
                {"name": "t", "agent": "echo", "depends_on": ["s"]},
            ],
        },
        cfg,
    )
    victim_store = await open_store(store_url)
    try:
        victim = ProxyStore(victim_store)
        async with harness(victim, cfg, node="victim") as hv:
            hv.start()
            await wait_step(store, wf, "s", StepStatus.RUNNING)
            # (PostgreSQL: let its LISTEN connection finish opening before the "crash".)
            await async_wait_until(
                holds(lambda: victim.calls.get("wait_for_work", 0) >= 2), WAIT_S, what="idle"
            )
            # The victim "dies" (like kill -9): its agent is gone, its lease would last
            # ten more minutes.
            hv.task.cancel()  # type: ignore[union-attr]
            await asyncio.gather(hv.task, return_exceptions=True)  # type: ignore[arg-type]
            m = maintenance(store, "observer", cfg)  # not the leader: it never ran run()
            # Moments after the crash its last heartbeat is fresh: the verdict alone is
            # not evidence enough, and nothing moves.
            assert await m.notify_member_dead("victim") == []
            assert m.metrics.dead_verdict_refused._value.get() == 1
            silent_since = await store.now_ms()
            await async_wait_until(
                lambda: _elapsed(store, silent_since, cfg.worker.dead_owner_stale_after_ms),
                WAIT_S,
                what="two silent heartbeat intervals",
            )
            ids = await m.notify_member_dead("victim")
            step = (await steps_by_name(store, wf))["s"]
            assert ids == [step.id]
            assert step.status is StepStatus.READY
            assert m.metrics.dead_owner_reclaimed._value.get() == 1
            async with harness(store, cfg, node="rescuer") as hr:
                hr.start()
                steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
            assert steps["s"].owner_node == "rescuer"
    finally:
        await victim_store.close()
    events = await store.list_ownership_events(limit=100)
    # One reclaim, of the victim's step, recorded under the owner it was taken from.
    assert [(e.step_id, e.node) for e in events if e.event == "dead_owner"] == [(step.id, "victim")]
    audit = await store.query_audit(limit=100)
    assert [(a.action, a.details) for a in audit if a.actor == "node:observer"] == [
        ("recover", {"count": 1, "owners": ["victim"], "step_ids": [step.id]})
    ]


async def test_notify_member_dead_ignores_self_and_survives_outages(store: Any) -> None:
    cfg = settings()
    proxy = ProxyStore(store)
    m = maintenance(proxy, "me", cfg)
    assert await m.notify_member_dead("me") == []
    proxy.fail = {"reclaim_dead_owners": 2}
    assert await m.notify_member_dead("other") == []
    assert proxy.calls["reclaim_dead_owners"] == 3
    assert m.metrics.store_errors.labels("reclaim_dead_owners")._value.get() == 2


async def test_leader_that_cannot_renew_stops_believing_it_leads(store: Any) -> None:
    cfg = settings(maintenance={"interval_ms": 20, "leader_lease_ms": 300})
    proxy = ProxyStore(store)
    m = maintenance(proxy, "n1", cfg)
    async with running(m):
        await async_wait_until(holds(lambda: m.is_leader), WAIT_S, what="leads")
        proxy.fail = {"acquire_leader": 10**9}
        await async_wait_until(holds(lambda: not m.is_leader), WAIT_S, what="belief dropped")
        assert leader_gauge(m) == 0
        assert m.metrics.store_errors.labels("maintenance")._value.get() > 0
        proxy.fail = {}
        await async_wait_until(holds(lambda: m.is_leader), WAIT_S, what="leads again")
