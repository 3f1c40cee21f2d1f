"""Idempotent submits and the workflow listing, on both stores."""

from __future__ import annotations

import asyncio

import pytest

from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.store import Store
from tests.integration.store.conftest import OpenMore, flat, step, workflow

pytestmark = pytest.mark.asyncio


async def test_a_repeated_key_returns_the_first_id_and_writes_nothing(store: Store) -> None:
    first = await store.submit_workflow_once(flat(2), "t", idempotency_key="k1")
    assert first.created
    audits_before = len(await store.query_audit(action="submit"))
    again = await store.submit_workflow_once(flat(5), "t", idempotency_key="k1")
    assert again.workflow_id == first.workflow_id and not again.created
    assert (await store.step_counts())[StepStatus.READY] == 2
    assert len(await store.query_audit(action="submit")) == audits_before
    other = await store.submit_workflow_once(flat(1), "t", idempotency_key="k2")
    assert other.created and other.workflow_id != first.workflow_id


async def test_twenty_concurrent_repeats_make_one_workflow(
    store: Store, open_more: OpenMore
) -> None:
    # 20 independent store objects (their own connections) race on one key.
    stores = [store, *[await open_more() for _ in range(19)]]
    outcomes = await asyncio.gather(
        *(s.submit_workflow_once(flat(3), "t", idempotency_key="race") for s in stores)
    )
    ids = {o.workflow_id for o in outcomes}
    assert len(ids) == 1
    assert sum(o.created for o in outcomes) == 1
    listed = await store.list_workflows(limit=100)
    assert [w.id for w in listed] == list(ids)
    assert (await store.step_counts())[StepStatus.READY] == 3
    assert len(await store.query_audit(action="submit")) == 1


async def test_the_submit_audit_names_the_key(store: Store) -> None:
    outcome = await store.submit_workflow_once(
        flat(1), "schedule:s", idempotency_key="schedule:s:1000", schedule="s", fire_at_ms=1000
    )
    (audit,) = await store.query_audit(action="submit")
    assert audit.actor == "schedule:s"
    assert audit.details["idempotency_key"] == "schedule:s:1000"
    fire = await store.last_schedule_fire("s")
    assert fire is not None and (fire.fire_at_ms, fire.workflow_id) == (1000, outcome.workflow_id)
    assert await store.last_schedule_fire("other") is None


async def test_list_workflows_filters_and_keyset_pages(store: Store) -> None:
    ids = [await store.submit_workflow(flat(1), "t") for _ in range(5)]
    keyed = await store.submit_workflow_once(
        workflow(step("a"), step("b", depends_on=("a",)), name="other"),
        "t",
        idempotency_key="kk",
    )
    everything = await store.list_workflows(limit=100)
    # Submitted last, so no older than any other; one made in the same millisecond may
    # sort before it (ties go by id).
    (mine,) = [w for w in everything if w.id == keyed.workflow_id]
    assert mine.created_at_ms == everything[0].created_at_ms
    assert mine.idempotency_key == "kk"
    assert mine.steps == {"READY": 1, "PENDING": 1}
    assert mine.finished_at_ms is None
    assert {w.id for w in everything} == {*ids, keyed.workflow_id}
    order = [(w.created_at_ms, w.id) for w in everything]
    assert order == sorted(order, reverse=True)
    pages: list[str] = []
    cursor: tuple[int, str] | None = None
    while True:
        page = await store.list_workflows(limit=2, before=cursor)
        if not page:
            break
        pages.extend(w.id for w in page)
        cursor = (page[-1].created_at_ms, page[-1].id)
    assert pages == [w.id for w in everything]
    assert [w.id for w in await store.list_workflows(name="other")] == [keyed.workflow_id]
    assert len(await store.list_workflows(status=WorkflowStatus.RUNNING)) == 6
    assert await store.list_workflows(status=WorkflowStatus.SUCCEEDED) == []
    late = await store.list_workflows(since_ms=everything[0].created_at_ms + 1)
    assert late == []
