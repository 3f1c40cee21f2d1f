"""The worker against a real store: DAGs, retries, dead letters, cancel, drain."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaymesh.exceptions import LeaseLostError
from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.settings import AgentSettings
from tests.conftest import async_wait_until
from tests.integration.work.helpers import (
    ProxyStore,
    harness,
    holds,
    settings,
    steps_by_name,
    submit,
    wait_step,
    wait_workflow,
)

COLLECT = (
    "import json, sys; step = json.load(sys.stdin); "
    "print(json.dumps({'input': step['input'], 'upstream': step['upstream'], "
    "'attempt': step['attempt']}))"
)


async def test_three_step_dag_with_upstream_results(store: Any) -> None:
    cfg = settings(agents={"collect": AgentSettings(command=[sys.executable, "-c", COLLECT])})
    wf = await submit(
        store,
        {
            "name": "dag",
            "steps": [
                {"name": "a", "agent": "echo", "input": {"x": 1}},
                {"name": "b", "agent": "echo", "input": {"y": 2}, "depends_on": ["a"]},
                {"name": "c", "agent": "collect", "input": "z", "depends_on": ["a", "b"]},
            ],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert steps["a"].result == {"x": 1}
    assert steps["b"].result == {"y": 2}
    assert steps["c"].result == {
        "input": "z",
        "upstream": {"a": {"x": 1}, "b": {"y": 2}},
        "attempt": 1,
    }
    assert all(s.attempt == 1 for s in steps.values())
    assert h.metrics.claims._value.get() == 3
    assert await store.list_conflicts() == []


async def test_transient_failures_retry_then_succeed(store: Any) -> None:
    cfg = settings()
    wf = await submit(
        store,
        {
            "name": "r",
            "steps": [{"name": "f", "agent": "fail", "input": {"kind": "transient", "times": 2}}],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert steps["f"].attempt == 3
    assert steps["f"].result == {"attempt": 3}
    assert h.metrics.dead_letter._value.get() == 0


async def test_exhausted_and_permanent_go_to_dead_letter(store: Any) -> None:
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
        await wait_step(store, wf, "perm", StepStatus.DEAD_LETTER)
        await wait_step(store, wf, "tired", StepStatus.DEAD_LETTER)
        steps = await wait_workflow(store, wf, WorkflowStatus.FAILED)
    perm, tired = steps["perm"], steps["tired"]
    assert perm.attempt == 1  # permanent: no retry despite max_attempts=5
    assert perm.error["kind"] == "permanent"
    assert "permanent failure on attempt 1" in perm.error["message"]
    assert tired.attempt == 3
    assert tired.error["kind"] == "transient" and tired.error["attempt"] == 3
    assert steps["after"].status is StepStatus.PENDING
    assert h.metrics.dead_letter._value.get() == 2


async def test_replay_runs_a_dead_letter_again(store: Any, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    code = (
        f"import os, sys; sys.exit(2) if not os.path.exists({str(flag)!r}) "
        "else print('{\"fixed\": true}')"
    )
    cfg = settings(agents={"flaky": AgentSettings(command=[sys.executable, "-c", code])})
    wf = await submit(store, {"name": "p", "steps": [{"name": "s", "agent": "flaky"}]}, cfg)
    async with harness(store, cfg) as h:
        h.start()
        dead = await wait_step(store, wf, "s", StepStatus.DEAD_LETTER)
        assert dead.error["reason"] == "exit_code" and dead.error["exit_code"] == 2
        flag.write_text("yes")
        await store.replay_step(dead.id, "test")
        steps = await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    assert steps["s"].result == {"fixed": True}


async def test_hard_cancel_kills_running_agent_and_fences_late_commit(store: Any) -> None:
    proxy = ProxyStore(store)
    cfg = settings()
    wf = await submit(
        store,
        {"name": "h", "steps": [{"name": "slow", "agent": "sleep", "input": {"seconds": 60}}]},
        cfg,
    )
    async with harness(proxy, cfg) as h:
        worker = h.start()
        running = await wait_step(store, wf, "slow", StepStatus.RUNNING)
        await async_wait_until(holds(lambda: bool(worker.running())), 5, what="held")
        with capture_logs() as logs:
            result = await store.cancel_workflow(wf, "hard", "test")
            assert result.fenced_running == (running.id,)
            # The watch loop sees the lost lease and kills the agent within a poll or two.
            await async_wait_until(holds(lambda: not worker.running()), 5, what="agent killed")
        lost = [e for e in logs if e["event"] == "lease_lost"]
        assert lost and lost[0]["step_id"] == running.id
        assert h.metrics.running_steps._value.get() == 0
    claim = proxy.claims[0]
    with pytest.raises(LeaseLostError):
        await store.commit_success(claim.lease, "n1", {"late": True})
    steps = await steps_by_name(store, wf)
    assert steps["slow"].status is StepStatus.CANCELLED
    assert steps["slow"].result is None
    conflicts = await store.list_conflicts()
    # A heartbeat may have raced the cancel too; the late commit is certainly recorded.
    assert {(c.step_id, c.expected_epoch) for c in conflicts} == {(running.id, claim.lease_epoch)}
    assert "commit_success" in {c.event for c in conflicts}
    assert {c.event for c in conflicts} <= {"commit_success", "heartbeat"}
    assert conflicts[0].actual_epoch is not None and conflicts[0].actual_epoch > claim.lease_epoch


def _forking_agent(pid_file: Path) -> AgentSettings:
    """A script that starts a grandchild ``sleep`` and writes "script_pid child_pid"
    before hanging: killing only the script would leave the grandchild running."""
    code = (
        "import os, subprocess, time, pathlib; "
        "child = subprocess.Popen(['sleep', '300'], stdin=subprocess.DEVNULL, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        f"tmp = pathlib.Path({str(pid_file)!r} + '.tmp'); "
        "tmp.write_text(f'{os.getpid()} {child.pid}'); "
        f"tmp.rename({str(pid_file)!r}); time.sleep(60)"
    )
    return AgentSettings(command=[sys.executable, "-c", code])


@pytest.mark.parametrize("how", ["hard_cancel", "drain"])
async def test_hard_cancel_and_drain_kill_a_script_process_group(
    store: Any, tmp_path: Path, how: str
) -> None:
    pid_file = tmp_path / "pids"
    cfg = settings(agents={"hang": _forking_agent(pid_file)})
    wf = await submit(store, {"name": "k", "steps": [{"name": "s", "agent": "hang"}]}, cfg)
    async with harness(store, cfg) as h:
        worker = h.start()
        await async_wait_until(holds(pid_file.exists), 10, what="script started")
        pids = [int(p) for p in pid_file.read_text().split()]
        assert all(_alive(p) for p in pids)
        if how == "hard_cancel":
            await store.cancel_workflow(wf, "hard", "test")
        else:
            await worker.drain(0.2)
        await async_wait_until(holds(lambda: not worker.running()), 5, what="agent killed")
        await async_wait_until(
            holds(lambda: not any(_alive(p) for p in pids)), 5, what="script and its child gone"
        )
    step = (await steps_by_name(store, wf))["s"]
    assert step.status is (StepStatus.CANCELLED if how == "hard_cancel" else StepStatus.READY)


async def test_soft_cancel_lets_running_steps_finish(store: Any) -> None:
    cfg = settings()
    wf = await submit(
        store,
        {
            "name": "s",
            "steps": [
                {"name": "a", "agent": "sleep", "input": {"seconds": 0.5}},
                {"name": "b", "agent": "echo", "depends_on": ["a"]},
                {"name": "c", "agent": "echo", "locks": ["held"], "depends_on": ["a"]},
            ],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()
        await wait_step(store, wf, "a", StepStatus.RUNNING)
        result = await store.cancel_workflow(wf, "soft", "test")
        assert result.fenced_running == ()
        a = await wait_step(store, wf, "a", StepStatus.SUCCEEDED)
    steps = await steps_by_name(store, wf)
    assert a.result == {"slept_s": 0.5}
    assert steps["b"].status is StepStatus.CANCELLED
    assert steps["c"].status is StepStatus.CANCELLED


async def test_priorities_high_first(store: Any) -> None:
    proxy = ProxyStore(store)
    cfg = settings(worker={"slots": 1, "claim_batch": 1})
    for prio in ("low", "normal", "high"):
        await submit(
            store, {"name": prio, "steps": [{"name": "s", "agent": "echo", "priority": prio}]}, cfg
        )
    async with harness(proxy, cfg) as h:
        h.start()
        await async_wait_until(holds(lambda: len(proxy.claims) == 3), WAIT_S, what="3 claims")
    assert [c.priority.label for c in proxy.claims] == ["high", "normal", "low"]


async def test_starvation_guard_forces_a_low_claim(store: Any) -> None:
    proxy = ProxyStore(store)
    cfg = settings(worker={"slots": 1, "claim_batch": 1, "low_starvation_threshold": 3})
    await submit(
        store, {"name": "low", "steps": [{"name": "l", "agent": "echo", "priority": "low"}]}, cfg
    )
    await submit(
        store,
        {
            "name": "high",
            "steps": [{"name": f"h{i}", "agent": "echo", "priority": "high"} for i in range(8)],
        },
        cfg,
    )
    async with harness(proxy, cfg) as h:
        h.start()
        await async_wait_until(holds(lambda: len(proxy.claims) == 9), WAIT_S, what="9 claims")
    labels = [c.priority.label for c in proxy.claims]
    assert labels == ["high"] * 3 + ["low"] + ["high"] * 5
    assert h.metrics.low_starvation_count._value.get() == 1


async def test_per_agent_concurrency(store: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    code = (
        "import time; "
        f"f = open({str(log)!r}, 'a'); f.write(f'start {{time.time()}}\\n'); f.flush(); "
        "time.sleep(0.2); "
        "f.write(f'end {time.time()}\\n'); f.close(); print('{}')"
    )
    cfg = settings(
        worker={"slots": 8},
        agents={"one": AgentSettings(command=[sys.executable, "-c", code], concurrency=1)},
    )
    wf = await submit(
        store,
        {
            "name": "c",
            "steps": [{"name": f"s{i}", "agent": "one"} for i in range(3)]
            + [{"name": "e", "agent": "echo"}],
        },
        cfg,
    )
    async with harness(store, cfg) as h:
        h.start()
        await wait_workflow(store, wf, WorkflowStatus.SUCCEEDED)
    events = [line.split() for line in log.read_text().splitlines()]
    depth = peak = 0
    for kind, _ in sorted(events, key=lambda e: float(e[1])):
        depth += 1 if kind == "start" else -1
        peak = max(peak, depth)
    assert peak == 1
    assert len(events) == 6


async def test_heartbeats_keep_a_long_step_past_its_lease(store: Any) -> None:
    from relaymesh.clock import SystemClock
    from relaymesh.ops.metrics import Metrics
    from relaymesh.work.maintenance import Maintenance

    cfg = settings(worker={"lease_ms": 400, "heartbeat_ms": 100})
    wf = await submit(
        store,
        {"name": "hb", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 1.2}}]},
        cfg,
    )
    maint = Maintenance(
        store=store, node="m", settings=lambda: cfg, metrics=Metrics(), clock=SystemClock()
    )
    async with harness(store, cfg) as h:
        h.start()
        await wait_step(store, wf, "s", StepStatus.RUNNING)
        reclaimed: list[str] = []

        async def finished() -> bool:
            reclaimed.extend((await maint.run_once())["expired"])
            return bool((await steps_by_name(store, wf))["s"].status == StepStatus.SUCCEEDED)

        await async_wait_until(finished, WAIT_S, interval_s=0.05, what="step to succeed")
    assert reclaimed == []
    events = [e.event for e in await store.list_ownership_events()]
    assert "lease_expired" not in events


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


WAIT_S = 15.0
_ = asyncio


async def test_late_commit_of_a_taken_over_step_is_rejected_and_counted(store: Any) -> None:
    """A worker that stalls past its lease (no heartbeats, blind to lost leases) finishes
    after another node took the step over: its commit is fenced, counted and dropped."""
    from relaymesh.clock import SystemClock
    from relaymesh.ops.metrics import Metrics
    from relaymesh.work.maintenance import Maintenance

    stalled_cfg = settings(worker={"lease_ms": 300, "heartbeat_ms": 60_000})
    cfg = settings()
    wf = await submit(
        store,
        {"name": "late", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 1.0}}]},
        cfg,
    )
    blind = ProxyStore(store)
    blind.fail = {"lost_leases": 10**9}
    maint = Maintenance(
        store=store, node="m", settings=lambda: cfg, metrics=Metrics(), clock=SystemClock()
    )
    alive = True
    async with harness(blind, stalled_cfg, node="stalled", local_alive=lambda: alive) as ha:
        ha.start()
        await wait_step(store, wf, "s", StepStatus.RUNNING)
        alive = False  # it claims nothing more; only its stale run goes on

        async def reclaimed() -> bool:
            return bool((await maint.run_once())["expired"])

        await async_wait_until(reclaimed, WAIT_S, interval_s=0.05, what="expiry")
        async with harness(store, cfg, node="rescuer") as hb:
            hb.start()
            conflicts = ha.metrics.lease_conflicts.labels("commit_success")
            await async_wait_until(
                holds(lambda: conflicts._value.get() == 1), WAIT_S, what="late commit fenced"
            )
            step = await wait_step(store, wf, "s", StepStatus.SUCCEEDED)
    assert step.owner_node == "rescuer"
    rows = await store.list_conflicts()
    assert [(c.node, c.event) for c in rows] == [("stalled", "commit_success")]
    assert rows[0].actual_epoch is not None and rows[0].actual_epoch > rows[0].expected_epoch
