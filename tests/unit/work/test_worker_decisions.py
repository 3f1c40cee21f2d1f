"""The worker's decisions (what it claims, commits, retries, dead-letters, drops) against
the in-memory store: the same worker and harness as tests/integration/work/, without a
database, so each case takes milliseconds. The real stores run the same cases there."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.store.memory import MemoryStore
from tests.conftest import async_wait_until
from tests.integration.work.helpers import (
    WAIT_S,
    ProxyStore,
    harness,
    holds,
    settings,
    submit,
    wait_step,
    wait_workflow,
)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


async def test_a_dag_runs_in_dependency_order_and_commits_every_result(
    store: MemoryStore,
) -> None:
    cfg = settings()
    wf = await submit(
        store,
        {
            "name": "dag",
            "steps": [
                {"name": "a", "agent": "echo", "input": {"x": 1}},
                {"name": "b", "agent": "echo", "input": {"y": 2}, "depends_on": ["a"]},
                {"name": "c", "agent": "echo", "input": "z", "depends_on": ["a", "b"]},
            ],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert [steps[n].result for n in "abc"] == [{"x": 1}, {"y": 2}, "z"]
    assert steps["a"].finished_at_ms <= steps["b"].started_at_ms  # type: ignore[operator]
    assert all(s.attempt == 1 for s in steps.values())
    assert h.metrics.claims._value.get() == 3
    assert await store.list_conflicts() == []


async def test_transient_failures_retry_then_succeed(store: MemoryStore) -> None:
    cfg = settings()
    doc = {"name": "r", "steps": [{"name": "f", "agent": "fail", "input": {"times": 2}}]}
    wf = await submit(store, doc, cfg)
    async with harness(store, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert steps["f"].attempt == 3 and steps["f"].result == {"attempt": 3}
    assert h.metrics.dead_letter._value.get() == 0


async def test_permanent_at_once_and_exhausted_after_max_attempts_go_to_dead_letter(
    store: MemoryStore,
) -> None:
    cfg = settings()
    wf = await submit(
        store,
        {
            "name": "d",
            "steps": [
                {
                    "name": "perm",
                    "agent": "fail",
                    "input": {"kind": "permanent"},
                    "retry": {"max_attempts": 5},
                },
                {"name": "tired", "agent": "fail", "input": {"kind": "transient"}},
                {"name": "after", "agent": "echo", "depends_on": ["perm"]},
            ],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.FAILED)
    assert steps["perm"].attempt == 1 and steps["perm"].error["kind"] == "permanent"
    assert steps["tired"].attempt == 3 and steps["tired"].error["attempt"] == 3
    assert steps["after"].status is StepStatus.PENDING
    assert h.metrics.dead_letter._value.get() == 2


async def test_claims_go_high_first_and_the_guard_forces_a_low_one(store: MemoryStore) -> None:
    proxy = ProxyStore(store)
    cfg = settings(worker={"slots": 1, "claim_batch": 1, "low_starvation_threshold": 3})
    await submit(store, {"name": "l", "steps": [{"name": "l", "agent": "echo", "priority": "low"}]})
    await submit(
        store,
        {
            "name": "h",
            "steps": [{"name": f"h{i}", "agent": "echo", "priority": "high"} for i in range(5)],
        },
    )
    async with harness(proxy, cfg) as h:
        h.start()
        await async_wait_until(holds(lambda: len(proxy.claims) == 6), WAIT_S, what="6 claims")
    assert [c.priority.label for c in proxy.claims] == ["high"] * 3 + ["low"] + ["high"] * 2
    assert h.metrics.low_starvation_count._value.get() == 1


@pytest.mark.parametrize("op", ["commit_success_many", "commit_failure"])
async def test_a_commit_the_store_refuses_is_kept_and_retried(store: MemoryStore, op: str) -> None:
    proxy = ProxyStore(store)
    proxy.fail[op] = 2
    cfg = settings()
    agent, doc_input = ("echo", 1) if op == "commit_success_many" else ("fail", {"times": 1})
    wf = await submit(
        store, {"name": "c", "steps": [{"name": "s", "agent": agent, "input": doc_input}]}
    )
    async with harness(proxy, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert proxy.fail[op] == 0 and proxy.calls[op] >= 3
    assert h.metrics.store_errors.labels(op.removesuffix("_many"))._value.get() == 2
    assert steps["s"].attempt == (1 if agent == "echo" else 2)
    assert await store.list_conflicts() == []


async def test_a_hard_cancel_kills_the_run_and_nothing_is_committed(store: MemoryStore) -> None:
    cfg = settings()
    doc = {"name": "k", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 60}}]}
    wf = await submit(store, doc, cfg)
    async with harness(store, cfg) as h:
        worker = h.start()
        await wait_step(store, wf, "s", StepStatus.RUNNING)
        await store.cancel_workflow(wf, "hard", "test")
        await async_wait_until(holds(lambda: not worker.running()), WAIT_S, what="run dropped")
    steps = await wait_workflow(store, wf, WorkflowStatus.CANCELLED)
    assert steps["s"].status is StepStatus.CANCELLED and steps["s"].result is None
    assert await store.list_conflicts() == []
