"""Operator actions on workflows and steps, each audited in its own transaction."""

from __future__ import annotations

import pytest

from relaymesh.exceptions import InvalidStateError, LeaseLostError, NotFoundError, WorkflowError
from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.store import Store
from tests.conftest import async_wait_until
from tests.integration.store.conftest import flat, step, workflow

pytestmark = pytest.mark.asyncio


async def test_get_and_list(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(step("a", "echo", input={"k": [1, 2]}), step("b", "sleep"), name="nightly"),
        "cli:u",
    )
    record, steps = await store.get_workflow(wf)
    assert record.id == wf and record.name == "nightly" and record.status is WorkflowStatus.RUNNING
    assert [s.name for s in steps] == ["a", "b"]
    assert steps[0].input == {"k": [1, 2]} and steps[0].max_attempts == 3
    assert await store.get_step(steps[1].id) == steps[1]
    with pytest.raises(NotFoundError):
        await store.get_workflow("missing")
    with pytest.raises(NotFoundError):
        await store.get_step("missing")
    other = await store.submit_workflow(flat(2, "sleep"), "cli:u")
    assert len(await store.list_steps()) == 4
    assert {s.name for s in await store.list_steps(workflow_id=wf)} == {"a", "b"}
    assert len(await store.list_steps(agent="sleep")) == 3
    assert len(await store.list_steps(agent="sleep", workflow_id=other)) == 2
    assert len(await store.list_steps(limit=3)) == 3
    # The claim must land in a later millisecond than the submits for "updated last"
    # to be an order (ties go by insertion, which would put `other` first).
    latest_ms = max(s.updated_at_ms for s in await store.list_steps())
    await async_wait_until(
        lambda: _after(store, latest_ms), 5, interval_s=0.001, what="the clock to move"
    )
    [claim] = await store.claim_steps("n", limit=1, lease_ms=10_000, agents=["echo"])
    running = await store.list_steps(status=StepStatus.RUNNING)
    assert [s.id for s in running] == [claim.step_id]
    # Newest first by updated_at: the claimed step was updated last (steps submitted
    # in the same millisecond tie with it, in no promised order).
    listed = await store.list_steps()
    times = [s.updated_at_ms for s in listed]
    assert times == sorted(times, reverse=True)
    claimed = next(s for s in listed if s.id == claim.step_id)
    assert claimed.updated_at_ms == listed[0].updated_at_ms


async def test_submit_is_audited_and_rejects_unknown_dependency(store: Store) -> None:
    wf = await store.submit_workflow(flat(2), "cli:alice")
    [audit] = await store.query_audit(action="submit")
    assert audit.actor == "cli:alice" and audit.target == wf and audit.details["steps"] == 2
    with pytest.raises(WorkflowError):
        await store.submit_workflow(workflow(step("a", depends_on=("ghost",))), "cli:alice")
    assert len(await store.query_audit(action="submit")) == 1


async def test_empty_workflow_is_done(store: Store) -> None:
    wf = await store.submit_workflow(workflow(), "t")
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.SUCCEEDED


async def test_success_readies_dependents_in_the_same_commit(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(
            step("a"),
            step("b"),
            step("c", depends_on=("a", "b")),
            step("d", depends_on=("c",)),
        ),
        "t",
    )
    claims = {c.name: c for c in await store.claim_steps("n", limit=10, lease_ms=10_000)}
    await store.commit_success(claims["a"].lease, "n", 1)
    _, steps = await store.get_workflow(wf)
    assert {s.name: s.status for s in steps}["c"] is StepStatus.PENDING
    assert await store.commit_success_many("n", [(claims["b"].lease, 2)]) == [True]
    _, steps = await store.get_workflow(wf)
    by = {s.name: s for s in steps}
    assert by["c"].status is StepStatus.READY and by["c"].ready_at_ms is not None
    assert by["d"].status is StepStatus.PENDING
    [c] = await store.claim_steps("n", limit=10, lease_ms=10_000)
    await store.commit_success(c.lease, "n", 3)
    [d] = await store.claim_steps("n", limit=10, lease_ms=10_000)
    assert d.upstream == {"c": 3}
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.RUNNING
    await store.commit_success(d.lease, "n", 4)
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.SUCCEEDED


async def test_soft_cancel_leaves_running_steps(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(step("a"), step("b", depends_on=("a",)), step("c", agent="other")), "cli:u"
    )
    [a] = await store.claim_steps("n", limit=1, lease_ms=10_000, agents=["echo"])
    result = await store.cancel_workflow(wf, "soft", "cli:u")
    assert result.cancelled == 2 and result.fenced_running == ()
    _, steps = await store.get_workflow(wf)
    assert {s.name: s.status for s in steps} == {
        "a": StepStatus.RUNNING,
        "b": StepStatus.CANCELLED,
        "c": StepStatus.CANCELLED,
    }
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.RUNNING
    await store.commit_success(a.lease, "n", "done")
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.CANCELLED
    [audit] = await store.query_audit(action="cancel")
    assert audit.target == wf and audit.details["mode"] == "soft"


async def test_hard_cancel_fences_running_steps_and_frees_locks(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(step("a", locks=("k",)), step("b", depends_on=("a",))), "cli:u"
    )
    other = await store.submit_workflow(workflow(step("x", locks=("k",))), "cli:u")
    [a] = await store.claim_steps("n", limit=5, lease_ms=10_000)
    assert a.name == "a"
    result = await store.cancel_workflow(wf, "hard", "cli:u")
    assert result.cancelled == 2 and result.fenced_running == (a.step_id,)
    record = await store.get_step(a.step_id)
    assert record.status is StepStatus.CANCELLED and record.lease_epoch == a.lease_epoch + 1
    assert await store.lost_leases([a.lease]) == [a.step_id]
    with pytest.raises(LeaseLostError):
        await store.commit_success(a.lease, "n", "late")
    assert (await store.get_step(a.step_id)).result is None
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.CANCELLED
    [x] = await store.claim_steps("n", limit=5, lease_ms=10_000)
    assert x.workflow_id == other  # the lock was released by the cancel
    with pytest.raises(InvalidStateError):
        await store.cancel_workflow(wf, "sideways", "cli:u")
    with pytest.raises(NotFoundError):
        await store.cancel_workflow("missing", "hard", "cli:u")


async def test_replay_dead_letter(store: Store) -> None:
    wf = await store.submit_workflow(workflow(step("a"), step("b", depends_on=("a",))), "t")
    [a] = await store.claim_steps("n", limit=1, lease_ms=10_000)
    await store.commit_failure(a.lease, "n", {"kind": "permanent"}, None)
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.FAILED
    with pytest.raises(InvalidStateError):
        _, steps = await store.get_workflow(wf)
        await store.replay_step(next(s.id for s in steps if s.name == "b"), "cli:u")
    record = await store.replay_step(a.step_id, "cli:u")
    # The attempt counter is kept, the budget granted again, the replay recorded.
    assert record.status is StepStatus.READY and record.attempt == 1
    assert record.max_attempts == 1 + a.max_attempts
    [entry] = record.replays
    assert (entry["from_status"], entry["from_attempt"], entry["actor"]) == (
        "DEAD_LETTER",
        1,
        "cli:u",
    )
    assert entry["error"] == {"kind": "permanent"}
    assert (await store.get_workflow(wf))[0].status is WorkflowStatus.RUNNING
    with pytest.raises(InvalidStateError):
        await store.replay_step(a.step_id, "cli:u")
    with pytest.raises(NotFoundError):
        await store.replay_step("missing", "cli:u")
    [again] = await store.claim_steps("n", limit=1, lease_ms=10_000)
    assert again.step_id == a.step_id and again.attempt == 2
    [audit] = await store.query_audit(action="replay")
    assert audit.target == a.step_id and audit.actor == "cli:u"
    assert [e.event for e in await store.list_ownership_events(limit=2)] == ["claimed", "replayed"]


async def test_replay_batch_is_idempotent_and_filtered(store: Store) -> None:
    wf = await store.submit_workflow(flat(5, "fail"), "t")
    await store.submit_workflow(flat(2, "echo"), "t")
    for c in await store.claim_steps("n", limit=10, lease_ms=10_000):
        await store.commit_failure(c.lease, "n", {"kind": "permanent"}, None)
    assert len(await store.list_steps(status=StepStatus.DEAD_LETTER)) == 7
    assert (
        await store.replay_batch(
            status=StepStatus.DEAD_LETTER, limit=100, actor="cli:u", agent="fail", workflow_id=wf
        )
        == 5
    )
    assert (
        await store.replay_batch(
            status=StepStatus.DEAD_LETTER, limit=100, actor="cli:u", agent="fail", workflow_id=wf
        )
        == 0
    )
    assert await store.replay_batch(status=StepStatus.DEAD_LETTER, limit=1, actor="cli:u") == 1
    assert len(await store.list_steps(status=StepStatus.READY)) == 6
    audits = await store.query_audit(action="replay-batch")
    assert [a.details["count"] for a in audits] == [1, 0, 5]
    with pytest.raises(InvalidStateError):
        await store.replay_batch(status=StepStatus.RUNNING, limit=1, actor="cli:u")


async def _after(store: Store, ms: int) -> bool:
    return bool(await store.now_ms() > ms)
