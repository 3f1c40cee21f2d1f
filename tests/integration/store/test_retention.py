"""Retention on both stores: what is past its time goes in bounded batches, whole.

Rows are made old by moving their ``*_at_ms`` columns back with plain SQL (the store's
clock then sees them as old) instead of waiting.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from relaymesh.exceptions import StoreError
from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.ops.metrics import Metrics
from relaymesh.settings import RetentionSettings
from relaymesh.store import Store
from relaymesh.work.retention import preview, run_pass
from tests.conftest import async_wait_until
from tests.integration.store.conftest import step, workflow
from tests.integration.store.retention_helpers import (
    DAY_MS,
    WEEK_MS,
    _in,
    age,
    assert_gone,
    assert_whole,
    chain,
    count,
    drain,
    failed,
    finished,
    running,
    sql,
)

# sql_store: ages rows and counts them with SQL behind the store's back.
pytestmark = [pytest.mark.asyncio, pytest.mark.sql_store]


async def test_finished_workflows_past_retention_go_in_batches(
    store_url: str, store: Store
) -> None:
    old = await finished(store, 5)
    fresh = (await finished(store, 1))[0]
    held = await failed(store)
    busy = await running(store)
    old_steps = [s.id for wf in old for s in (await store.get_workflow(wf))[1]]
    await age(store_url, [*old, held, busy], 2 * WEEK_MS)
    events_before = await count(store_url, "ownership_events")
    assert await count(store_url, "ownership_events", f"WHERE step_id IN {_in(old_steps)}") == 15

    batches = [
        await store.retention_delete_workflows(
            WorkflowStatus.SUCCEEDED, older_than_ms=WEEK_MS, limit=2
        )
        for _ in range(4)
    ]

    assert [b["workflows"] for b in batches] == [2, 2, 1, 0]
    assert [b["steps"] for b in batches] == [6, 6, 3, 0]
    assert [b["step_deps"] for b in batches] == [4, 4, 2, 0]
    assert [b["ownership_events"] for b in batches] == [6, 6, 3, 0]
    for workflow_id in old:
        await assert_gone(store_url, store, workflow_id)
    assert await count(store_url, "ownership_events", f"WHERE step_id IN {_in(old_steps)}") == 0
    assert await count(store_url, "ownership_events") == events_before - 15
    # Not old enough, not final, or holding a dead letter: untouched.
    for workflow_id in (fresh, held, busy):
        await assert_whole(store_url, store, workflow_id)
    assert [s.status for s in await store.list_steps(status=StepStatus.DEAD_LETTER)] == [
        StepStatus.DEAD_LETTER
    ]
    # Asked for directly, a RUNNING workflow is never removed, even when old.
    assert (
        await store.retention_delete_workflows(
            WorkflowStatus.RUNNING, older_than_ms=WEEK_MS, limit=10
        )
    )["workflows"] == 0
    await assert_whole(store_url, store, busy)


async def test_keys_go_with_their_workflow_but_each_schedule_keeps_its_last_fire(
    store_url: str, store: Store
) -> None:
    ids = []
    for key, schedule, fire_ms in (
        ("plain", None, None),
        ("schedule:s:1000", "s", 1000),
        ("schedule:s:2000", "s", 2000),
        ("schedule:t:1000", "t", 1000),
    ):
        outcome = await store.submit_workflow_once(
            chain(), "t", idempotency_key=key, schedule=schedule, fire_at_ms=fire_ms
        )
        ids.append(outcome.workflow_id)
    await drain(store)
    await age(store_url, ids, 2 * WEEK_MS)

    counts = await store.retention_delete_workflows(
        WorkflowStatus.SUCCEEDED, older_than_ms=WEEK_MS, limit=10
    )

    assert counts["workflows"] == 4
    assert counts["workflow_keys"] == 2
    kept = await sql(store_url, "SELECT idempotency_key FROM workflow_keys ORDER BY 1")
    assert kept == [("schedule:s:2000",), ("schedule:t:1000",)]
    # The scheduler still sees the last fires (their workflows are gone), so a tick
    # already fired is never fired again.
    fire = await store.last_schedule_fire("s")
    assert fire is not None and (fire.fire_at_ms, fire.workflow_id) == (2000, ids[2])
    again = await store.submit_workflow_once(
        chain(), "t", idempotency_key="schedule:s:2000", schedule="s", fire_at_ms=2000
    )
    assert not again.created and again.workflow_id == ids[2]


async def test_a_replayed_dead_letter_keeps_its_workflow(store_url: str, store: Store) -> None:
    held = await failed(store)
    await age(store_url, [held], 60 * DAY_MS)
    dead = (await store.list_steps(status=StepStatus.DEAD_LETTER))[0]
    await store.replay_step(dead.id, "t")  # its workflow is RUNNING again
    await age(store_url, [held], 60 * DAY_MS)
    for status in WorkflowStatus:
        outcome = await store.retention_delete_workflows(status, older_than_ms=DAY_MS, limit=10)
        assert outcome["workflows"] == 0
    await assert_whole(store_url, store, held)


async def test_the_pass_counts_audits_and_keeps_dead_letters(store_url: str, store: Store) -> None:
    old = await finished(store, 3)
    held = await failed(store)
    await age(store_url, [*old, held], 100 * DAY_MS)
    await store.record_audit("t", "note", None, {})
    await store.record_settings_change("n1", ["worker.slots"])
    await sql(store_url, f"UPDATE audit_log SET at_ms = at_ms - {100 * DAY_MS}")
    await sql(store_url, f"UPDATE settings_history SET at_ms = at_ms - {100 * DAY_MS}")
    old_audit = await count(store_url, "audit_log")
    settings = RetentionSettings(batch_size=2)
    metrics = Metrics()
    assert await preview(store, settings) == {
        "workflows:SUCCEEDED": 3,
        "workflows:CANCELLED": 0,
        "lease_conflicts": 0,
        "audit_log": old_audit,
        "settings_history": 1,
    }

    report = await run_pass(store, settings, metrics, actor="node:m")

    assert report.deleted == {
        "workflows": 3,
        "steps": 9,
        "step_deps": 6,
        "ownership_events": 9,
        "audit_log": old_audit,
        "settings_history": 1,
    }
    for table, n in report.deleted.items():
        assert metrics.retention_deleted.labels(table)._value.get() == n
    (summary,) = await store.query_audit(action="retention")
    assert summary.actor == "node:m"
    assert summary.details["deleted"] == report.deleted
    assert await count(store_url, "audit_log") == 1  # the summary alone is left
    await assert_whole(store_url, store, held)  # dead letters stay by default
    # A pass with nothing to do writes no audit row.
    assert (await run_pass(store, settings, metrics, actor="node:m")).deleted == {}
    assert len(await store.query_audit(action="retention")) == 1
    # Unless configured: then FAILED workflows go after dead_letter_after_s.
    allow = RetentionSettings(remove_dead_letters=True, dead_letter_after_s=30 * 86400)
    assert (await run_pass(store, allow, metrics, actor="node:m")).deleted["workflows"] == 1
    await assert_gone(store_url, store, held)


async def test_a_failing_batch_removes_nothing_of_its_workflows(
    store_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await finished(store, 2)
    await age(store_url, old, 2 * WEEK_MS)
    events = await count(store_url, "ownership_events")
    backend = "sqlite" if store_url.startswith("sqlite") else "postgres"
    queries = __import__(f"relaymesh.store.{backend}", fromlist=["Q"]).Q
    # The last statement of the batch fails after steps, deps and events were deleted.
    monkeypatch.setitem(queries, "retention_delete_workflows", "DELETE FROM no_such_table")

    with pytest.raises(StoreError):
        await store.retention_delete_workflows(
            WorkflowStatus.SUCCEEDED, older_than_ms=WEEK_MS, limit=10
        )

    for workflow_id in old:
        await assert_whole(store_url, store, workflow_id)
    assert await count(store_url, "ownership_events") == events


async def test_trail_tables_go_in_batches(store_url: str, store: Store) -> None:
    for i in range(5):
        await store.record_audit("t", "note", str(i), {})
    await sql(store_url, f"UPDATE audit_log SET at_ms = at_ms - {100 * DAY_MS} WHERE target <> '4'")
    got = [
        await store.retention_delete_rows("audit_log", older_than_ms=90 * DAY_MS, limit=2)
        for _ in range(3)
    ]
    assert got == [2, 2, 0]
    assert [r.target for r in await store.query_audit()] == ["4"]
    with pytest.raises(StoreError):
        await store.retention_delete_rows("workflows", older_than_ms=0, limit=1)


async def test_store_stats(store_url: str, store: Store) -> None:
    (workflow_id,) = await finished(store, 1)
    await age(store_url, [workflow_id], DAY_MS)
    oldest = int((await sql(store_url, "SELECT min(created_at_ms) FROM steps"))[0][0])

    stats = await store.table_stats()

    assert stats["workflows"].rows == 1 and stats["steps"].rows == 3
    assert stats["step_deps"].rows == 2 and stats["ownership_events"].rows == 3
    assert stats["steps"].oldest_ms == oldest
    assert stats["step_locks"].rows == 0 and stats["step_locks"].oldest_ms is None
    assert stats["mesh_nodes"].oldest_ms is None
    assert all(t.bytes is not None and t.bytes > 0 for t in stats.values())


async def test_sqlite_gives_space_back(store_url: str, store: Store) -> None:
    if not store_url.startswith("sqlite"):
        assert await store.reclaim_space(100) == 0  # PostgreSQL: autovacuum's job
        return
    path = store_url.removeprefix("sqlite:///")
    assert (await sql(store_url, "PRAGMA auto_vacuum"))[0][0] == 2  # INCREMENTAL
    big = workflow(*(step(f"s{i}", input={"pad": "x" * 4000}) for i in range(50)))
    ids = [await store.submit_workflow(big, "t") for _ in range(4)]
    await store.cancel_workflow(ids[0], "soft", "t")
    for workflow_id in ids[1:]:
        await store.cancel_workflow(workflow_id, "soft", "t")
    await age(store_url, ids, 2 * WEEK_MS)
    await sql(store_url, "PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = os.path.getsize(path)
    settings = RetentionSettings(batch_size=1, vacuum_pages=20, vacuum_max_steps=1000)

    report = await run_pass(store, settings, Metrics(), actor="t")

    assert report.deleted["workflows"] == 4
    assert report.reclaimed_pages > 20  # several bounded steps
    assert (await sql(store_url, "PRAGMA freelist_count"))[0][0] == 0
    await sql(store_url, "PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = (await sql(store_url, "PRAGMA page_size"))[0][0]
    assert os.path.getsize(path) <= size_before - report.reclaimed_pages * page_size


async def in_transaction(store_url: str) -> bool:
    """Whether another process is inside a write transaction on the store right now."""
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:  # locked: the writer holds it
            return True
        finally:
            conn.close()
    found = await sql(
        store_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'relaymesh' AND xact_start IS NOT NULL"
        " AND query LIKE '%DELETE%'",
    )
    return bool(found[0][0])


_KILLED_PASS = textwrap.dedent(
    """
    import asyncio, sys
    from relaymesh.model import WorkflowStatus
    from relaymesh.store import open_store

    async def main():
        store = await open_store(sys.argv[1])
        print("ready", flush=True)
        while True:
            await store.retention_delete_workflows(
                WorkflowStatus.SUCCEEDED, older_than_ms=1000, limit=3
            )

    asyncio.run(main())
    """
)


async def test_a_pass_killed_midway_leaves_whole_workflows(store_url: str, store: Store) -> None:
    big = workflow(
        step("root"), *(step(f"s{i}", depends_on=("root",)) for i in range(40)), name="big"
    )
    ids = [await store.submit_workflow(big, "t") for _ in range(30)]
    while claims := await store.claim_steps("w", limit=200, lease_ms=60_000):
        await store.commit_success_many("w", [(c.lease, {"ok": 1}) for c in claims])
    await age(store_url, ids, 2 * WEEK_MS)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PASS, store_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        async def mid_pass() -> bool:
            """Some workflows gone, and the pass inside its next batch's transaction."""
            return 0 < await count(store_url, "workflows") < len(ids) and await in_transaction(
                store_url
            )

        await async_wait_until(mid_pass, 30, 0.0005, "the pass to be inside a batch")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    left = {r[0] for r in await sql(store_url, "SELECT id FROM workflows")}
    assert len(ids) - len(left) > 0
    for workflow_id in ids:
        if workflow_id in left:
            _, steps = await store.get_workflow(workflow_id)
            assert len(steps) == 41
            step_ids = _in([s.id for s in steps])
            assert await count(store_url, "step_deps", f"WHERE step_id IN {step_ids}") == 40
            assert await count(store_url, "ownership_events", f"WHERE step_id IN {step_ids}") == 41
        else:
            await assert_gone(store_url, store, workflow_id)
    # No orphans anywhere: every step's workflow, every event's step exists.
    assert (
        await count(store_url, "steps", "WHERE workflow_id NOT IN (SELECT id FROM workflows)") == 0
    )
    assert (
        await count(store_url, "ownership_events", "WHERE step_id NOT IN (SELECT id FROM steps)")
        == 0
    )
    assert await count(store_url, "step_deps", "WHERE step_id NOT IN (SELECT id FROM steps)") == 0
