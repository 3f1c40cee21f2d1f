"""Helpers for the retention tests: rows made old behind the store's back, and the
workflow shapes they remove or keep."""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg
import pytest

from relaymesh.exceptions import NotFoundError
from relaymesh.model import WorkflowStatus
from relaymesh.store import Store
from tests.integration.store.conftest import step, workflow

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


async def sql(store_url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database behind the store's back."""
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return [tuple(r) for r in conn.execute(statement).fetchall()]
        finally:
            conn.close()
    pg = await asyncpg.connect(store_url)
    try:
        return [tuple(r) for r in await pg.fetch(statement)]
    finally:
        await pg.close()


def _in(ids: list[str]) -> str:
    return "(" + ", ".join(f"'{i}'" for i in ids) + ")"


async def age(store_url: str, workflow_ids: list[str], by_ms: int) -> None:
    """Move a workflow's every date ``by_ms`` into the past, as if that long ago."""
    wf = _in(workflow_ids)
    steps = f"(SELECT id FROM steps WHERE workflow_id IN {wf})"
    await sql(
        store_url, f"UPDATE ownership_events SET at_ms = at_ms - {by_ms} WHERE step_id IN {steps}"
    )
    await sql(
        store_url,
        f"UPDATE steps SET created_at_ms = created_at_ms - {by_ms},"
        f" updated_at_ms = updated_at_ms - {by_ms} WHERE workflow_id IN {wf}",
    )
    await sql(
        store_url,
        f"UPDATE workflows SET created_at_ms = created_at_ms - {by_ms},"
        f" updated_at_ms = updated_at_ms - {by_ms} WHERE id IN {wf}",
    )


async def count(store_url: str, table: str, where: str = "") -> int:
    return int((await sql(store_url, f"SELECT count(*) FROM {table} {where}"))[0][0])


def chain() -> Any:
    """Three steps a -> b, a -> c: rows in steps, step_deps and ownership_events."""
    return workflow(step("a"), step("b", depends_on=("a",)), step("c", depends_on=("a",)))


async def drain(store: Store) -> None:
    """Claim and succeed every step until nothing is claimable."""
    while True:
        claims = await store.claim_steps("w", limit=50, lease_ms=60_000)
        if not claims:
            break
        await store.commit_success_many("w", [(c.lease, {"ok": 1}) for c in claims])


async def finished(store: Store, n: int) -> list[str]:
    """``n`` SUCCEEDED workflows of ``chain()``."""
    ids = [await store.submit_workflow(chain(), "t") for _ in range(n)]
    await drain(store)
    for workflow_id in ids:
        assert (await store.get_workflow(workflow_id))[0].status is WorkflowStatus.SUCCEEDED
    return ids


async def failed(store: Store) -> str:
    """A FAILED workflow: ``a`` a dead letter, its dependents PENDING."""
    workflow_id = await store.submit_workflow(chain(), "t")
    (claim,) = await store.claim_steps("w", limit=1, lease_ms=60_000)
    await store.commit_failure(claim.lease, "w", {"kind": "permanent"}, None)
    assert (await store.get_workflow(workflow_id))[0].status is WorkflowStatus.FAILED
    return workflow_id


async def running(store: Store) -> str:
    """A RUNNING workflow: ``a`` claimed and not committed."""
    workflow_id = await store.submit_workflow(chain(), "t")
    assert await store.claim_steps("w", limit=1, lease_ms=60_000)
    return workflow_id


async def assert_whole(store_url: str, store: Store, workflow_id: str) -> None:
    _, steps = await store.get_workflow(workflow_id)
    assert len(steps) == 3
    assert (
        await count(store_url, "step_deps", f"WHERE step_id IN {_in([s.id for s in steps])}") == 2
    )


async def assert_gone(store_url: str, store: Store, workflow_id: str) -> None:
    with pytest.raises(NotFoundError):
        await store.get_workflow(workflow_id)
    steps = f"(SELECT id FROM steps WHERE workflow_id = '{workflow_id}')"
    assert await count(store_url, "steps", f"WHERE workflow_id = '{workflow_id}'") == 0
    assert await count(store_url, "step_deps", f"WHERE step_id IN {steps}") == 0
