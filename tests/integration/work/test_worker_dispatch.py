"""The worker feeds the dispatch window: every claimed step's outcome, the refusing claim
decisions, and the low_success_rate breaker (on both stores)."""

from __future__ import annotations

from typing import Any

from relaymesh.clock import FakeClock, SystemClock
from relaymesh.model import StepStatus, WorkflowStatus
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


def _fails(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"f{i}",
            "agent": "fail",
            "input": {"kind": "permanent"},
            "retry": {"max_attempts": 1},
        }
        for i in range(n)
    ]


async def _dead(store: Any, wf: str) -> int:
    return sum(
        s.status == StepStatus.DEAD_LETTER for s in (await steps_by_name(store, wf)).values()
    )


def _counter(h: Any, result: str, reason: str) -> float:
    return float(h.metrics.dispatch.labels(result, reason)._value.get())


async def test_outcomes_are_counted_per_node_and_agent(store: Any) -> None:
    cfg = settings(breaker={"failure_threshold": 50})
    steps = [{"name": f"e{i}", "agent": "echo"} for i in range(3)] + _fails(2)
    wf = await submit(store, {"name": "mix", "steps": steps}, cfg)
    async with harness(store, cfg) as h:
        worker = h.start()
        await async_wait_until(
            holds(lambda: worker.dispatch.node_stats().total == 5), WAIT_S, what="5 outcomes"
        )
        doc = worker.dispatch.to_json()
        assert (doc["total"], doc["success"], doc["failed"]) == (5, 3, 2)
        assert doc["rate"] == 0.6
        assert doc["failure_reasons"] == {"agent_error": 2}
        assert doc["agents"]["echo"]["rate"] == 1.0
        assert doc["agents"]["fail"]["failure_reasons"] == {"agent_error": 2}
        assert _counter(h, "success", "ok") == 3
        assert _counter(h, "failed", "agent_error") == 2
    assert (await store.get_workflow(wf))[0].status == WorkflowStatus.FAILED


async def test_a_lost_lease_is_an_outcome(store: Any) -> None:
    cfg = settings()
    wf = await submit(
        store, {"name": "c", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 60}}]}
    )
    async with harness(store, cfg) as h:
        worker = h.start()
        await wait_step(store, wf, "s", StepStatus.RUNNING)
        await store.cancel_workflow(wf, "hard", "test")
        await async_wait_until(
            holds(lambda: worker.dispatch.node_stats().total == 1), WAIT_S, what="the outcome"
        )
        assert worker.dispatch.node_stats().failure_reasons == {"lost_lease": 1}


async def test_a_guard_pause_is_one_node_refusal(store: Any) -> None:
    readings = [Readings(load_1m=99.0, available_mb=None, swap_used_pct=None, cpu_count=1)]
    guard = ResourceGuard(lambda: readings[0], now_ms=SystemClock().monotonic_ms, cache_ms=0)
    cfg = settings(worker={"poll_ms": 5})
    async with harness(store, cfg, guard=guard) as h:
        worker = h.start()
        await async_wait_until(
            holds(lambda: h.metrics.worker_paused.labels("load")._value.get() >= 5),
            WAIT_S,
            what="several paused rounds",
        )
        # One refusal per pause, however many rounds it lasts; no agent's rate moves.
        assert worker.dispatch.node_stats().failure_reasons == {"guard_refused": 1}
        assert worker.dispatch.agent_stats() == {}


async def test_low_success_rate_opens_the_breaker_and_is_hot_reloadable(store: Any) -> None:
    clock = FakeClock()
    proxy = ProxyStore(store)
    # Consecutive failures never open it here (threshold 100): only the rate rule can.
    off = settings(
        worker={"slots": 1, "claim_batch": 1},
        breaker={"failure_threshold": 100, "open_ms": 600_000},
        dispatch={"min_success_rate": 0.0, "min_samples": 3},
    )
    first = await submit(store, {"name": "low1", "steps": _fails(4)}, off)
    async with harness(proxy, off, clock=clock) as h:
        worker = h.start()

        async def all_dead(wf: str, n: int) -> bool:
            return await _dead(store, wf) == n

        await async_wait_until(lambda: all_dead(first, 4), WAIT_S, what="4 dead letters")
        assert worker.breaker_states()["fail"].name == "CLOSED"  # the rule is off
        # A reload turns it on; each claim round reads the settings before it claims, so
        # the next failure (rate 0 over 5 >= 3 runs) opens the breaker.
        h.settings = off.model_copy(
            update={"dispatch": off.dispatch.model_copy(update={"min_success_rate": 0.5})}
        )
        second = await submit(store, {"name": "low2", "steps": _fails(6)}, off)
        await async_wait_until(
            holds(lambda: worker.breaker_states()["fail"].name == "OPEN"), WAIT_S, what="OPEN"
        )
        # No more claims of that agent: an echo workflow finishing proves a round passed.
        echo = await submit(store, {"name": "e", "steps": [{"name": "e", "agent": "echo"}]}, off)
        await wait_workflow(store, echo, WorkflowStatus.SUCCEEDED)
        assert await _dead(store, second) == 1
        assert sum(c.agent == "fail" for c in proxy.claims) == 5
        reasons = worker.dispatch.agent_stats()["fail"].failure_reasons
        assert reasons["low_success_rate"] == 1
        assert (
            h.metrics.breaker_transitions.labels("fail", "OPEN", "low_success_rate")._value.get()
            == 1
        )
        assert _counter(h, "failed", "low_success_rate") == 1
    [row] = await store.query_audit(action="breaker_transition")
    assert row.details["to"] == "OPEN"
    assert row.details["reason"] == "low_success_rate"
    assert row.details["success_rate"] == 0.0 and row.details["runs"] >= 3
