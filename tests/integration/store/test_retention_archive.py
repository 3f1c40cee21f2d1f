"""Archive before delete, and ``store restore`` of backups and archives, on both stores.

Rows are made old with plain SQL (``retention_helpers.age``), as in test_retention.py.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from relaymesh.exceptions import InvalidStateError
from relaymesh.ops.metrics import Metrics
from relaymesh.ops.restore import restore
from relaymesh.settings import RetentionSettings
from relaymesh.store import Store, open_store
from relaymesh.work.archive import ArchiveReader, archive_files
from relaymesh.work.retention import run_pass
from tests.conftest import async_wait_until, require_pg
from tests.integration.store.retention_helpers import (
    WEEK_MS,
    age,
    assert_gone,
    assert_whole,
    chain,
    count,
    drain,
    failed,
    finished,
    sql,
)
from tests.pgutil import fresh_pg_database

# sql_store: rows aged, tied or bulk-filled with SQL behind the store's back.
pytestmark = [pytest.mark.asyncio, pytest.mark.sql_store]


@asynccontextmanager
async def fresh_store(like_url: str, tmp_path: Path, name: str) -> AsyncIterator[Store]:
    """Another empty store of the same backend as ``like_url``."""
    if like_url.startswith("sqlite"):
        opened = await open_store(f"sqlite:///{tmp_path / name}.db")
        try:
            yield opened
        finally:
            await opened.close()
        return
    async with fresh_pg_database(require_pg()) as url:
        opened = await open_store(url)
        try:
            yield opened
        finally:
            await opened.close()


async def snapshot(store: Store, workflow_id: str) -> tuple[object, ...]:
    wf, steps = await store.get_workflow(workflow_id)
    return (
        (wf.id, wf.name, wf.status, wf.created_at_ms),
        sorted((s.id, s.name, s.status, s.attempt, s.lease_epoch, s.result) for s in steps),
    )


async def test_archived_workflows_round_trip_through_restore(
    store_url: str, store: Store, tmp_path: Path
) -> None:
    old = await finished(store, 3)
    keyed = await store.submit_workflow_once(chain(), "t", idempotency_key="k1")
    await drain(store)
    old.append(keyed.workflow_id)
    kept = await finished(store, 1)
    await age(store_url, old, 2 * WEEK_MS)
    before = {w: await snapshot(store, w) for w in old}
    events_before = await count(store_url, "ownership_events")
    archive_dir = tmp_path / "archive"
    settings = RetentionSettings(batch_size=2, archive_dir=str(archive_dir))

    report = await run_pass(store, settings, Metrics(), actor="node:m")

    assert report.archived == 4 and report.deleted["workflows"] == 4
    assert report.archive_error is None
    for workflow_id in old:
        await assert_gone(store_url, store, workflow_id)
    await assert_whole(store_url, store, kept[0])
    (file,) = archive_files(str(archive_dir))  # all finished the same UTC day
    assert Path(file).name.startswith("relaymesh-archive-")
    reader = ArchiveReader(file)
    docs = list(reader.documents())
    assert [d["workflow"]["id"] for d in docs] == old  # oldest first: the pass's order
    assert reader.damaged == 0
    assert all(len(d["steps"]) == 3 and len(d["step_deps"]) == 2 for d in docs)
    assert docs[-1]["workflow_keys"][0]["idempotency_key"] == "k1"
    with gzip.open(file, "rt") as lines:  # plain gzip JSON lines for any tool
        assert len([json.loads(line) for line in lines]) == 4

    result = await restore(store, str(archive_dir))

    assert (result["kind"], result["imported"], result["skipped"]) == ("archive", 4, 0)
    assert {w: await snapshot(store, w) for w in old} == before
    assert await count(store_url, "ownership_events") == events_before
    again = await store.submit_workflow_once(chain(), "t", idempotency_key="k1")
    assert not again.created and again.workflow_id == keyed.workflow_id
    # Idempotent: a second import skips every workflow and counts it.
    result = await restore(store, file)
    assert (result["imported"], result["skipped"]) == (0, 4)
    # Into another, empty store of the same backend: the same workflows.
    async with fresh_store(store_url, tmp_path, "other") as other:
        result = await restore(other, file)
        assert result["imported"] == 4
        assert {w: await snapshot(other, w) for w in old} == before


async def test_an_unwritable_archive_dir_deletes_nothing(
    store_url: str, store: Store, tmp_path: Path
) -> None:
    old = await finished(store, 2)
    held = await failed(store)
    await age(store_url, [*old, held], 100 * 86_400_000)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    # A directory under a regular file cannot be made, even by root.
    settings = RetentionSettings(
        archive_dir=str(blocker / "archive"), remove_dead_letters=True, dead_letter_after_s=1
    )
    metrics = Metrics()

    report = await run_pass(store, settings, metrics, actor="node:m")

    assert report.archive_error is not None and "cannot write retention archive" in (
        report.archive_error
    )
    assert "workflows" not in report.deleted
    for workflow_id in [*old, held]:
        await assert_whole(store_url, store, workflow_id)
    assert metrics.retention_archive_errors._value.get() == 1
    (audit,) = await store.query_audit(action="retention")
    assert audit.details["archive_error"] == report.archive_error


async def test_a_backup_restores_into_an_empty_store_only(
    store_url: str, store: Store, tmp_path: Path
) -> None:
    done = await finished(store, 2)
    held = await failed(store)
    waiting = await store.submit_workflow_once(chain(), "t", idempotency_key="k2")
    await store.record_audit("t", "note", None, {"n": 1})
    backup = tmp_path / "backup.db"
    await store.backup(str(backup))
    ids = [*done, held, waiting.workflow_id]
    before = {w: await snapshot(store, w) for w in ids}

    with pytest.raises(InvalidStateError, match="only into an empty store"):
        await restore(store, str(backup))
    assert {w: await snapshot(store, w) for w in ids} == before  # nothing half-done

    async with fresh_store(store_url, tmp_path, "target") as target:
        result = await restore(target, str(backup))
        assert result["rows"]["workflows"] == 4
        assert {w: await snapshot(target, w) for w in ids} == before
        assert [a.details for a in await target.query_audit(action="note")] == [{"n": 1}]
        again = await target.submit_workflow_once(chain(), "t", idempotency_key="k2")
        assert again.workflow_id == waiting.workflow_id
        # The restored queue runs: the READY step of the waiting workflow is claimable.
        (claim,) = await target.claim_steps("w", limit=5, lease_ms=60_000)
        assert claim.workflow_id == waiting.workflow_id
    # A PostgreSQL backup (a JSON dump) loads into SQLite too.
    if store_url.startswith("sqlite"):
        return
    copy = await open_store(f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        await restore(copy, str(backup))
        assert {w: await snapshot(copy, w) for w in ids} == before
    finally:
        await copy.close()


_KILLED_ARCHIVING_PASS = textwrap.dedent(
    """
    import asyncio, sys
    from relaymesh.ops.metrics import Metrics
    from relaymesh.settings import RetentionSettings
    from relaymesh.store import open_store
    from relaymesh.work.retention import run_pass

    async def main():
        store = await open_store(sys.argv[1])
        settings = RetentionSettings(batch_size=2, max_batches=1, archive_dir=sys.argv[2])
        print("ready", flush=True)
        while True:
            await run_pass(store, settings, Metrics(), actor="node:k")

    asyncio.run(main())
    """
)


async def test_a_killed_archiving_pass_deleted_only_what_it_archived(
    store_url: str, store: Store, tmp_path: Path
) -> None:
    ids = await finished(store, 24)
    await age(store_url, ids, 2 * WEEK_MS)
    before = {w: await snapshot(store, w) for w in ids}
    archive_dir = tmp_path / "archive"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_ARCHIVING_PASS, store_url, str(archive_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        async def some_gone() -> bool:
            return await count(store_url, "workflows") < len(ids)

        await async_wait_until(some_gone, 30, 0.001, "the pass to delete a batch")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    left = {r[0] for r in await sql(store_url, "SELECT id FROM workflows")}
    archived = {
        d["workflow"]["id"]
        for f in archive_files(str(archive_dir))
        for d in ArchiveReader(f).documents()
    }
    assert set(ids) - left  # something was deleted...
    assert set(ids) - left <= archived  # ...and only what is on disk
    result = await restore(store, str(archive_dir))
    assert result["imported"] == len(set(ids) - left)
    assert {w: await snapshot(store, w) for w in ids} == before


@pytest.mark.pg
async def test_a_sqlite_backup_restores_into_postgresql(tmp_path: Path) -> None:
    source = await open_store(f"sqlite:///{tmp_path / 'source.db'}")
    try:
        done = await finished(source, 2)
        held = await failed(source)
        waiting = await source.submit_workflow_once(chain(), "t", idempotency_key="k3")
        ids = [*done, held, waiting.workflow_id]
        before = {w: await snapshot(source, w) for w in ids}
        await source.backup(str(tmp_path / "backup.db"))
    finally:
        await source.close()
    async with fresh_pg_database(require_pg()) as url:
        target = await open_store(url)
        try:
            result = await restore(target, str(tmp_path / "backup.db"))
            assert result["kind"] == "sqlite database"
            assert {w: await snapshot(target, w) for w in ids} == before
            (claim,) = await target.claim_steps("w", limit=5, lease_ms=60_000)
            assert claim.workflow_id == waiting.workflow_id
        finally:
            await target.close()
