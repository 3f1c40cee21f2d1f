"""Fencing: every write of a running step must carry its (token, epoch) and RUNNING."""

from __future__ import annotations

import asyncio

import pytest

from relaymesh.exceptions import LeaseLostError
from relaymesh.model import LeaseRef, StepStatus
from relaymesh.store import Store
from tests.integration.store.conftest import OpenMore, flat, step, workflow

pytestmark = pytest.mark.asyncio


async def one_claim(store: Store, node: str = "n1") -> tuple[str, LeaseRef]:
    wf = await store.submit_workflow(workflow(step("a", locks=("k",))), "t")
    [claim] = await store.claim_steps(node, limit=1, lease_ms=30_000)
    return wf, claim.lease


async def test_heartbeat_extends_the_lease(store: Store) -> None:
    _, lease = await one_claim(store)
    before = await store.now_ms()
    expires = await store.heartbeat(lease, "n1", 120_000)
    assert expires >= before + 120_000
    assert (await store.get_step(lease.step_id)).lease_expires_at_ms == expires


@pytest.mark.parametrize("event", ["heartbeat", "commit_success", "commit_failure", "release"])
@pytest.mark.parametrize("wrong", ["token", "epoch"])
async def test_mismatch_changes_nothing_and_records_a_conflict(
    store: Store, event: str, wrong: str
) -> None:
    _, lease = await one_claim(store)
    bad = (
        LeaseRef(lease.step_id, "f" * 32, lease.lease_epoch)
        if wrong == "token"
        else LeaseRef(lease.step_id, lease.lease_token, lease.lease_epoch + 7)
    )
    before = await store.get_step(lease.step_id)
    with pytest.raises(LeaseLostError):
        if event == "heartbeat":
            await store.heartbeat(bad, "n2", 99_000)
        elif event == "commit_success":
            await store.commit_success(bad, "n2", {"stale": True})
        elif event == "commit_failure":
            await store.commit_failure(bad, "n2", {"kind": "permanent"}, None)
        else:
            await store.release(bad, "n2", "drain")
    assert await store.get_step(lease.step_id) == before
    [conflict] = await store.list_conflicts()
    assert conflict.step_id == lease.step_id and conflict.node == "n2"
    assert conflict.event == event
    assert conflict.expected_epoch == bad.lease_epoch
    assert conflict.actual_epoch == lease.lease_epoch
    assert conflict.actual_status == "RUNNING"
    # The real owner is unaffected.
    await store.commit_success(lease, "n1", {"ok": True})
    assert (await store.get_step(lease.step_id)).result == {"ok": True}


async def test_stale_owner_after_reclaim_is_rejected(store: Store) -> None:
    wf = await store.submit_workflow(workflow(step("a")), "t")
    [old] = await store.claim_steps("n1", limit=1, lease_ms=1)

    async def expired() -> bool:
        return old.step_id in await store.reclaim_expired(10)

    from tests.conftest import async_wait_until

    await async_wait_until(expired, 10, 0.005, "the lease to expire")
    [new] = await store.claim_steps("n2", limit=1, lease_ms=30_000)
    assert new.step_id == old.step_id and new.lease_epoch == old.lease_epoch + 2
    assert await store.lost_leases([old.lease, new.lease]) == [old.step_id]
    with pytest.raises(LeaseLostError):
        await store.heartbeat(old.lease, "n1", 30_000)
    with pytest.raises(LeaseLostError):
        await store.commit_success(old.lease, "n1", "old")
    await store.commit_success(new.lease, "n2", "new")
    record = await store.get_step(new.step_id)
    assert record.result == "new" and record.status is StepStatus.SUCCEEDED
    conflicts = await store.list_conflicts()
    assert {(c.event, c.expected_epoch, c.actual_epoch) for c in conflicts} == {
        ("heartbeat", 1, 3),
        ("commit_success", 1, 3),
    }
    assert (await store.get_workflow(wf))[0].status.value == "SUCCEEDED"


async def test_exactly_one_success_under_concurrent_commits(
    store: Store, open_more: OpenMore
) -> None:
    others = [await open_more() for _ in range(3)]
    _, lease = await one_claim(store)
    stores = [store, *others]
    outcomes = await asyncio.gather(
        *(s.commit_success(lease, f"n{i}", i) for i, s in enumerate(stores)),
        return_exceptions=True,
    )
    ok = [o for o in outcomes if o is None]
    assert len(ok) == 1, outcomes
    assert all(isinstance(o, LeaseLostError) for o in outcomes if o is not None)
    record = await store.get_step(lease.step_id)
    assert record.status is StepStatus.SUCCEEDED
    assert record.result == outcomes.index(None)
    assert len(await store.list_conflicts()) == len(stores) - 1


async def test_commit_success_many_commits_matching_and_rejects_the_rest(store: Store) -> None:
    await store.submit_workflow(flat(4), "t")
    claims = await store.claim_steps("n", limit=4, lease_ms=30_000)
    stale = LeaseRef(claims[1].step_id, claims[1].lease_token, claims[1].lease_epoch - 1)
    items = [(claims[0].lease, 0), (stale, 1), (claims[2].lease, 2), (claims[3].lease, 3)]
    assert await store.commit_success_many("n", items) == [True, False, True, True]
    assert await store.commit_success_many("n", [(claims[0].lease, 9)]) == [False]
    statuses = [(await store.get_step(c.step_id)).status for c in claims]
    assert statuses == [
        StepStatus.SUCCEEDED,
        StepStatus.RUNNING,
        StepStatus.SUCCEEDED,
        StepStatus.SUCCEEDED,
    ]
    assert (await store.get_step(claims[0].step_id)).result == 0
    assert [c.event for c in await store.list_conflicts()] == ["commit_success"] * 2
    assert await store.commit_success_many("n", []) == []


async def test_heartbeat_many(store: Store) -> None:
    await store.submit_workflow(flat(3), "t")
    claims = await store.claim_steps("n", limit=3, lease_ms=30_000)
    await store.commit_success(claims[2].lease, "n", None)
    before = await store.now_ms()
    out = await store.heartbeat_many("n", [c.lease for c in claims], 90_000)
    assert out[claims[2].step_id] is None
    for c in claims[:2]:
        expires = out[c.step_id]
        assert expires is not None and expires >= before + 90_000
    [conflict] = await store.list_conflicts()
    assert conflict.event == "heartbeat" and conflict.actual_status == "SUCCEEDED"


async def test_commit_failure_dead_letter_keeps_error_and_frees_locks(store: Store) -> None:
    wf = await store.submit_workflow(
        workflow(step("a", locks=("k",)), step("b", depends_on=("a",)), step("c", locks=("k",))),
        "t",
    )
    [a] = await store.claim_steps("n", limit=1, lease_ms=30_000)
    assert a.name == "a"
    error = {"kind": "permanent", "message": "boom"}
    assert await store.commit_failure(a.lease, "n", error, None) is StepStatus.DEAD_LETTER
    record = await store.get_step(a.step_id)
    assert record.status is StepStatus.DEAD_LETTER and record.error == error
    [c] = await store.claim_steps("n", limit=5, lease_ms=30_000)
    assert c.name == "c"  # the lock k was released; b stays PENDING
    await store.commit_success(c.lease, "n", None)
    record_wf, steps = await store.get_workflow(wf)
    assert {s.name: s.status for s in steps}["b"] is StepStatus.PENDING
    assert record_wf.status.value == "FAILED"


async def test_release_gives_back_the_attempt(store: Store) -> None:
    _, lease = await one_claim(store)
    await store.release(lease, "n1", "drain")
    record = await store.get_step(lease.step_id)
    assert record.status is StepStatus.READY and record.attempt == 0 and record.owner_node is None
    events = await store.list_ownership_events()
    assert events[0].event == "released" and events[0].lease_epoch == lease.lease_epoch
    [again] = await store.claim_steps("n2", limit=1, lease_ms=30_000)
    assert again.attempt == 1 and again.lease_epoch == lease.lease_epoch + 1
    assert again.locks == ("k",)
    with pytest.raises(LeaseLostError):
        await store.release(lease, "n1", "drain")


async def test_lost_leases_is_read_only(store: Store) -> None:
    _, lease = await one_claim(store)
    missing = LeaseRef("nope", "x", 1)
    assert await store.lost_leases([lease, missing]) == ["nope"]
    assert await store.lost_leases([]) == []
    assert await store.list_conflicts() == []


async def test_leases_held_by_lists_a_nodes_running_leases(store: Store) -> None:
    await store.submit_workflow(flat(3), "t")
    mine = await store.claim_steps("n1", limit=2, lease_ms=30_000)
    theirs = await store.claim_steps("n2", limit=1, lease_ms=30_000)
    assert await store.leases_held_by("n1") == sorted(
        (c.lease for c in mine), key=lambda lease: lease.step_id
    )
    assert await store.leases_held_by("n2") == [theirs[0].lease]
    await store.commit_success(mine[0].lease, "n1", 0)
    assert await store.leases_held_by("n1") == [mine[1].lease]
    assert await store.leases_held_by("nobody") == []
