"""The worker's operational behaviour: breaker, drain, safe mode, guard, store outages,
two workers sharing one store."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import Any

from structlog.testing import capture_logs

from relaymesh.clock import FakeClock, SystemClock
from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.store import open_store
from relaymesh.work.guard import Readings, ResourceGuard
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


async def test_breaker_opens_stops_claims_then_probes(store: Any) -> None:
    clock = FakeClock()
    proxy = ProxyStore(store)
    cfg = settings(
        worker={"slots": 1, "claim_batch": 1}, breaker={"failure_threshold": 2, "open_ms": 60_000}
    )
    wf = await submit(
        store,
        {
            "name": "b",
            "steps": [
                {"name": f"f{i}", "agent": "fail", "input": {"kind": "permanent"}} for i in range(5)
            ],
        },
        cfg,
    )
    async with harness(proxy, cfg, clock=clock) as h:
        worker = h.start()

        async def dead_count() -> int:
            return sum(
                s.status == StepStatus.DEAD_LETTER
                for s in (await steps_by_name(store, wf)).values()
            )

        await async_wait_until(lambda: _eq(dead_count(), 2), WAIT_S, what="2 dead letters")
        assert h.metrics.breaker_state.labels("fail")._value.get() == 2  # OPEN
        # Other agents still run while this one is open...
        echo_wf = await submit(store, {"name": "e", "steps": [{"name": "e", "agent": "echo"}]}, cfg)
        await wait_workflow(store, echo_wf, WorkflowStatus.SUCCEEDED)
        # ...and the broken agent's steps were not claimed meanwhile.
        assert await dead_count() == 2
        assert sum(c.agent == "fail" for c in proxy.claims) == 2
        # After the cool-down exactly one probe runs; it fails, so the breaker opens again.
        clock.advance(60_000)
        await async_wait_until(lambda: _eq(dead_count(), 3), WAIT_S, what="the probe")
        echo2 = await submit(store, {"name": "e2", "steps": [{"name": "e", "agent": "echo"}]}, cfg)
        await wait_workflow(store, echo2, WorkflowStatus.SUCCEEDED)
        assert await dead_count() == 3
        assert h.metrics.breaker_state.labels("fail")._value.get() == 2
        assert worker.breaker_states()["fail"].name == "OPEN"
    audit = await store.query_audit(action="breaker_transition")
    transitions = sorted((a.details["from"], a.details["to"]) for a in audit)
    assert transitions == sorted([("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "OPEN")])
    assert all(a.actor == "node:n1" for a in audit)


async def _eq_async(value: Awaitable[int], expected: int) -> bool:
    return (await value) == expected


def _eq(value: Awaitable[int], expected: int) -> Awaitable[bool]:
    return _eq_async(value, expected)


async def test_drain_releases_running_steps_for_another_node(store: Any) -> None:
    cfg = settings(worker={"slots": 4})
    wf = await submit(
        store,
        {
            "name": "d",
            "steps": [
                {"name": "long1", "agent": "sleep", "input": {"seconds": 60}},
                {"name": "long2", "agent": "sleep", "input": {"seconds": 60}},
                {"name": "short", "agent": "sleep", "input": {"seconds": 0.3}},
            ],
        },
        cfg,
    )
    async with harness(store, cfg, node="n1") as h1:
        worker = h1.start()
        await async_wait_until(holds(lambda: len(worker.running()) == 3), WAIT_S, what="3 held")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await worker.drain(1.0)
        assert loop.time() - started < 3.0
        assert worker.running() == []
        await asyncio.wait_for(h1.task, 5)  # type: ignore[arg-type]
    steps = await steps_by_name(store, wf)
    assert steps["short"].status is StepStatus.SUCCEEDED  # finished within the drain timeout
    for name in ("long1", "long2"):
        assert steps[name].status is StepStatus.READY
        assert steps[name].attempt == 0  # the killed run does not use up a retry
        assert steps[name].owner_node is None
    events = [e.event for e in await store.list_ownership_events()]
    assert events.count("released") == 2
    # Another node picks them up at once, not at lease expiry.
    async with harness(store, cfg, node="n2") as h2:
        w2 = h2.start()
        await async_wait_until(holds(lambda: len(w2.running()) == 2), WAIT_S, what="n2 claims")
    assert await store.list_conflicts() == []


async def test_cut_drain_short_kills_and_releases_at_once(store: Any) -> None:
    """A second SIGTERM: the drain stops waiting for a long step, but still kills and
    releases it (not left RUNNING until its lease expires)."""
    cfg = settings()
    wf = await submit(
        store,
        {"name": "c", "steps": [{"name": "long", "agent": "sleep", "input": {"seconds": 60}}]},
        cfg,
    )
    async with harness(store, cfg, node="n1") as h1:
        worker = h1.start()
        await async_wait_until(holds(lambda: len(worker.running()) == 1), WAIT_S, what="held")
        loop = asyncio.get_running_loop()
        started = loop.time()
        drain = asyncio.ensure_future(worker.drain(60.0))
        await async_wait_until(holds(lambda: worker._closing), WAIT_S, what="drain begun")
        worker.cut_drain_short()
        await asyncio.wait_for(drain, 10)
        assert loop.time() - started < 10
        assert worker.running() == []
    step = (await steps_by_name(store, wf))["long"]
    assert (step.status, step.owner_node, step.attempt) == (StepStatus.READY, None, 0)
    assert [e.event for e in await store.list_ownership_events()].count("released") == 1


async def test_drain_releases_steps_queued_behind_agent_concurrency(store: Any) -> None:
    import sys

    from relaymesh.settings import AgentSettings

    cfg = settings(
        worker={"slots": 4},
        agents={
            "one": AgentSettings(
                command=[sys.executable, "-c", "import time; time.sleep(60)"], concurrency=1
            )
        },
    )
    wf = await submit(
        store, {"name": "q", "steps": [{"name": f"s{i}", "agent": "one"} for i in range(3)]}, cfg
    )
    async with harness(store, cfg) as h:
        worker = h.start()
        await async_wait_until(holds(lambda: len(worker.running()) >= 1), WAIT_S, what="held")
        await worker.drain(0.1)
    steps = await steps_by_name(store, wf)
    assert {s.status for s in steps.values()} == {StepStatus.READY}


async def test_safe_mode_claims_nothing_until_alive(store: Any) -> None:
    alive = False
    cfg = settings()
    wf = await submit(store, {"name": "s", "steps": [{"name": "e", "agent": "echo"}]}, cfg)
    async with harness(store, cfg, local_alive=lambda: alive) as h:
        with capture_logs() as logs:
            worker = h.start()
            paused = h.metrics.worker_paused.labels("local_not_alive")
            await async_wait_until(holds(lambda: paused._value.get() >= 5), WAIT_S, what="pauses")
        paused_logs = [e for e in logs if e["event"] == "worker_paused"]
        assert len(paused_logs) == 1  # said once, counted every round
        assert paused_logs[0]["reason"] == "local_not_alive"
        assert worker.paused_reason == "local_not_alive"
        assert (await steps_by_name(store, wf))["e"].status is StepStatus.READY
        assert h.metrics.claims._value.get() == 0
        alive = True
        await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
        assert worker.paused_reason is None


async def test_resource_guard_pauses_claims(store: Any) -> None:
    readings = [Readings(load_1m=99.0, available_mb=None, swap_used_pct=None, cpu_count=1)]
    guard = ResourceGuard(lambda: readings[0], now_ms=SystemClock().monotonic_ms, cache_ms=0)
    cfg = settings()
    wf = await submit(store, {"name": "g", "steps": [{"name": "e", "agent": "echo"}]}, cfg)
    async with harness(store, cfg, guard=guard) as h:
        worker = h.start()
        paused = h.metrics.worker_paused.labels("load")
        await async_wait_until(holds(lambda: paused._value.get() >= 5), WAIT_S, what="pauses")
        assert worker.paused_reason == "load"
        assert (await steps_by_name(store, wf))["e"].status is StepStatus.READY
        readings[0] = Readings(load_1m=0.1, available_mb=None, swap_used_pct=None, cpu_count=1)
        await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)


async def test_store_outages_are_ridden_through(store: Any) -> None:
    proxy = ProxyStore(store)
    proxy.fail = {
        "claim_steps": 3,
        "commit_success_many": 2,
        "commit_failure": 2,
        "wait_for_work": 2,
    }
    cfg = settings()
    wf = await submit(
        store,
        {
            "name": "o",
            "steps": [{"name": f"e{i}", "agent": "echo", "input": i} for i in range(10)]
            + [{"name": "f", "agent": "fail", "input": {"kind": "transient", "times": 1}}],
        },
        cfg,
    )
    async with harness(proxy, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert all(s.status is StepStatus.SUCCEEDED for s in steps.values())
    assert steps["e3"].result == 3
    errors = h.metrics.store_errors
    assert errors.labels("claim")._value.get() >= 3
    assert errors.labels("commit_success")._value.get() == 2
    assert errors.labels("commit_failure")._value.get() == 2
    assert await store.list_conflicts() == []


async def test_two_workers_share_one_store_exactly_once(store: Any, store_url: str) -> None:
    cfg = settings(worker={"slots": 8, "claim_batch": 4})
    second = await open_store(store_url)
    try:
        wfs = [
            await submit(
                store,
                {
                    "name": f"w{i}",
                    "steps": [{"name": f"s{j}", "agent": "echo", "input": j} for j in range(50)],
                },
                cfg,
            )
            for i in range(4)
        ]
        async with harness(store, cfg, node="n1") as h1, harness(second, cfg, node="n2") as h2:
            h1.start()
            h2.start()
            for wf in wfs:
                await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
        assert h1.metrics.claims._value.get() + h2.metrics.claims._value.get() == 200
        assert h1.metrics.claims._value.get() > 0 and h2.metrics.claims._value.get() > 0
        events = await store.list_ownership_events(limit=1000)
        claimed = Counter(e.step_id for e in events if e.event == "claimed")
        assert len(claimed) == 200 and set(claimed.values()) == {1}
        assert await store.list_conflicts() == []
        for wf in wfs:
            steps = await steps_by_name(store, wf)
            assert all(s.result == int(s.name[1:]) and s.attempt == 1 for s in steps.values())
    finally:
        await second.close()


async def test_stop_lets_held_steps_finish(store: Any) -> None:
    cfg = settings()
    wf = await submit(
        store,
        {"name": "s", "steps": [{"name": "a", "agent": "sleep", "input": {"seconds": 0.3}}]},
        cfg,
    )
    async with harness(store, cfg) as h:
        worker = h.start()
        await wait_step(store, wf, "a", StepStatus.RUNNING)
        worker.stop()
        await asyncio.wait_for(h.task, WAIT_S)  # type: ignore[arg-type]
    assert (await steps_by_name(store, wf))["a"].status is StepStatus.SUCCEEDED


async def test_concurrency_limited_agent_is_not_hoarded(store: Any, store_url: str) -> None:
    import sys

    from relaymesh.settings import AgentSettings

    cfg = settings(
        worker={"slots": 8},
        agents={
            "one": AgentSettings(
                command=[sys.executable, "-c", "import time; time.sleep(0.5); print('{}')"],
                concurrency=1,
            )
        },
    )
    wf = await submit(
        store,
        {"name": "h", "steps": [{"name": "a", "agent": "one"}, {"name": "b", "agent": "one"}]},
        cfg,
    )
    second = await open_store(store_url)
    try:
        async with harness(store, cfg, node="n1") as h1, harness(second, cfg, node="n2") as h2:
            w1 = h1.start()
            await async_wait_until(holds(lambda: len(w1.running()) == 1), WAIT_S, what="n1")
            h2.start()
            await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    finally:
        await second.close()
    events = await store.list_ownership_events()
    assert {e.node for e in events if e.event == "claimed"} == {"n1", "n2"}


class PoisonStore(ProxyStore):
    """Rejects (as a non-transient StoreError) any success batch holding a poison result."""

    async def commit_success_many(self, node: str, items: Any) -> Any:
        from relaymesh.exceptions import StoreError

        self.calls["commit_success_many"] = self.calls.get("commit_success_many", 0) + 1
        if any(result == "poison" for _, result in items):
            raise StoreError("cannot store this result")
        return await self.inner.commit_success_many(node, items)


async def test_unstorable_result_is_isolated_and_dead_lettered(store: Any) -> None:
    proxy = PoisonStore(store)
    cfg = settings(worker={"slots": 16, "claim_batch": 16})
    wf = await submit(
        store,
        {
            "name": "p",
            "steps": [
                {"name": f"e{i}", "agent": "echo", "input": "poison" if i == 3 else i}
                for i in range(8)
            ],
        },
        cfg,
    )
    async with harness(proxy, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.FAILED)
    bad = steps.pop("e3")
    assert bad.status is StepStatus.DEAD_LETTER
    assert bad.error["reason"] == "unstorable_result"
    assert all(s.status is StepStatus.SUCCEEDED for s in steps.values())
    assert await store.list_conflicts() == []


async def test_nul_in_a_result_never_blocks_commits(store: Any) -> None:
    import sys

    from relaymesh.settings import AgentSettings

    code = "import json; print(json.dumps({'s': 'a\\u0000b'}))"
    cfg = settings(agents={"nul": AgentSettings(command=[sys.executable, "-c", code])})
    wf = await submit(
        store,
        {
            "name": "n",
            "steps": [{"name": "nul", "agent": "nul"}, {"name": "ok", "agent": "echo", "input": 1}],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()

        async def settled() -> bool:
            steps = await steps_by_name(store, wf)
            return steps["nul"].status in (StepStatus.SUCCEEDED, StepStatus.DEAD_LETTER) and (
                steps["ok"].status is StepStatus.SUCCEEDED
            )

        await async_wait_until(settled, WAIT_S, what="both steps to settle")
    nul = (await steps_by_name(store, wf))["nul"]
    # SQLite stores it; PostgreSQL's jsonb cannot hold NUL, so the step dead-letters with why.
    if nul.status is StepStatus.DEAD_LETTER:
        assert nul.error["reason"] == "unstorable_result"
    else:
        assert nul.result == {"s": "a\x00b"}


async def test_reloaded_agents_are_picked_up_and_unknown_ones_left_alone(store: Any) -> None:
    import sys

    from relaymesh.settings import AgentSettings

    before = settings()
    after = settings(agents={"new": AgentSettings(command=[sys.executable, "-c", "print(7)"])})
    wf = await submit(store, {"name": "r", "steps": [{"name": "n", "agent": "new"}]}, after)
    probe = await submit(store, {"name": "p", "steps": [{"name": "e", "agent": "echo"}]}, before)
    async with harness(store, before) as h:
        h.start()
        await wait_workflow(store, probe, WorkflowStatus.SUCCEEDED)
        # This node does not know agent "new": it leaves the step for a node that does.
        assert (await steps_by_name(store, wf))["n"].status is StepStatus.READY
        h.settings = after  # a reload (SIGHUP) that adds the agent
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert steps["n"].result == 7
