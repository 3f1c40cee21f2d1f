"""Opening, migrating, backing up, the clock and wake-ups."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from relaymesh.exceptions import StoreError
from relaymesh.model import WorkflowStatus
from relaymesh.store import Store, open_store
from relaymesh.store.queries import load_migrations
from tests.integration.store.conftest import OpenMore, flat

pytestmark = pytest.mark.asyncio

TABLES = {
    "workflows",
    "steps",
    "step_deps",
    "step_locks",
    "ownership_events",
    "lease_conflicts",
    "audit_log",
    "mesh_nodes",
    "settings_history",
    "leader_lease",
    "schema_version",
}


async def test_migrate_is_idempotent(store: Store) -> None:
    latest = len(load_migrations("sqlite"))
    assert await store.migrate() == latest
    assert await store.migrate() == latest


async def test_concurrent_migrations(store_url: str) -> None:
    stores = await asyncio.gather(*(open_store(store_url, migrate=False) for _ in range(4)))
    try:
        versions = await asyncio.gather(*(s.migrate() for s in stores))
        assert len(set(versions)) == 1 and versions[0] >= 1
        await stores[0].submit_workflow(flat(1), "t")
    finally:
        for s in stores:
            await s.close()


async def test_concurrent_migrations_from_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    code = (
        "import asyncio, sys\n"
        "from relaymesh.store import open_store\n"
        "async def m():\n"
        "    s = await open_store(sys.argv[1])\n"
        "    print(await s.migrate())\n"
        "    await s.close()\n"
        "asyncio.run(m())\n"
    )
    import sys

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, url, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(4)
    ]
    outs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {out.strip() for out, _ in outs} == {str(len(load_migrations("sqlite"))).encode()}


async def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = await open_store("sqlite:///rel.db")
    absolute = await open_store(f"sqlite:///{tmp_path}/abs.db")
    try:
        assert (tmp_path / "rel.db").exists() and (tmp_path / "abs.db").exists()
        assert relative.url == "sqlite:///rel.db"
    finally:
        await relative.close()
        await relative.close()  # idempotent
        await absolute.close()
    with pytest.raises(StoreError, match="unsupported store URL"):
        await open_store("mysql://x@y/z")


async def test_now_ms_is_the_store_clock(store: Store) -> None:
    t = await store.now_ms()
    assert abs(t - time.time() * 1000) < 5_000


async def test_wait_for_work_wakes_on_submit_from_another_store(
    store: Store, open_more: OpenMore
) -> None:
    other = await open_more()
    await store.wait_for_work(0)  # the first call may return at once (spurious is allowed)
    started = time.monotonic()
    await store.wait_for_work(50)  # nothing happens: returns after the timeout
    assert time.monotonic() - started >= 0.04
    waiter = asyncio.ensure_future(store.wait_for_work(20_000))
    await asyncio.sleep(0)
    await other.submit_workflow(flat(1), "t")
    await asyncio.wait_for(waiter, 5)


def read_backup(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table of a backup, as rows: a SQLite file or the PostgreSQL JSON dump."""
    if path.read_bytes()[:16] == b"SQLite format 3\x00":
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            ]
            return {n: [dict(r) for r in conn.execute(f'SELECT * FROM "{n}"')] for n in names}
        finally:
            conn.close()
    dump = json.loads(path.read_text())
    assert dump["format"] == "relaymesh-postgres-backup"
    tables: dict[str, list[dict[str, Any]]] = dump["tables"]
    return tables


async def store_steps(store: Store, workflow_id: str) -> set[tuple[str, str, int, str | None]]:
    _, steps = await store.get_workflow(workflow_id)
    return {(s.id, s.status.value, s.lease_epoch, s.owner_node) for s in steps}


def backup_steps(tables: dict[str, list[dict[str, Any]]]) -> set[tuple[str, str, int, str | None]]:
    return {(r["id"], r["status"], int(r["lease_epoch"]), r["owner_node"]) for r in tables["steps"]}


@pytest.mark.sql_store  # reads the backup as a SQLite file or a PostgreSQL dump
async def test_backup_is_a_readable_copy(store: Store, store_url: str, tmp_path: Path) -> None:
    wf = await store.submit_workflow(flat(3), "t")
    [c] = await store.claim_steps("n", limit=1, lease_ms=60_000)
    await store.commit_success(c.lease, "n", {"r": 1})
    target = tmp_path / "backup.out"
    await store.backup(str(target))
    tables = read_backup(target)
    assert set(tables) >= TABLES
    # The copy holds exactly the rows the store holds.
    assert backup_steps(tables) == await store_steps(store, wf)
    [done] = [r for r in tables["steps"] if r["id"] == c.step_id]
    assert json.loads(done["result"]) == {"r": 1}
    assert [(r["step_id"], r["event"]) for r in tables["ownership_events"]] == [
        (c.step_id, "claimed")
    ]
    assert [r["action"] for r in tables["audit_log"]] == ["submit"]
    if store_url.startswith("sqlite"):
        copy = await open_store(f"sqlite:///{target}")
        try:
            record, steps = await copy.get_workflow(wf)
            assert record.status is WorkflowStatus.RUNNING and len(steps) == 3
            assert (await copy.get_step(c.step_id)).result == {"r": 1}
        finally:
            await copy.close()


@pytest.mark.sql_store  # reads the backup as a SQLite file or a PostgreSQL dump
async def test_backup_while_writers_run(store: Store, open_more: OpenMore, tmp_path: Path) -> None:
    wf = await store.submit_workflow(flat(200), "t")
    other = await open_more()  # the writer has its own connections, as another node would

    halfway, first_backup = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        while claims := await other.claim_steps("n", limit=4, lease_ms=60_000):
            await other.commit_success_many("n", [(c.lease, None) for c in claims])
            if not halfway.is_set():  # on a loaded machine it could finish before any
                halfway.set()  # backup: one is taken half-way, then it runs on freely
                await first_backup.wait()

    task = asyncio.ensure_future(writer())
    succeeded_before, partial = 0, 0
    await halfway.wait()
    try:
        for i in range(100):  # backups for as long as the writer writes, bounded
            if task.done():
                break
            await store.backup(str(tmp_path / f"b{i}"))
            first_backup.set()
            tables = read_backup(tmp_path / f"b{i}")
            # One snapshot: a claim moves steps and writes their events in one
            # transaction, so every claimed step has its event in the same copy.
            assert len(tables["steps"]) == 200
            taken = {r["id"] for r in tables["steps"] if r["status"] != "READY"}
            claimed = [r["step_id"] for r in tables["ownership_events"]]
            assert sorted(claimed) == sorted(taken), f"backup {i} is not one snapshot"
            succeeded = sum(r["status"] == "SUCCEEDED" for r in tables["steps"])
            assert succeeded >= succeeded_before
            succeeded_before = succeeded
            partial += 0 < len(taken) < 200
    finally:
        await task
    assert partial >= 1, "no backup was taken while the writer was half-way"
    await store.backup(str(tmp_path / "final"))
    assert backup_steps(read_backup(tmp_path / "final")) == await store_steps(store, wf)


async def test_an_idle_sqlite_waiter_wakes_on_its_own_submit_at_once(tmp_path: Path) -> None:
    """Backed off to a long idle interval, a waiter still sees this process's own
    readying writes at once (its own commits do not move its ``data_version``)."""
    store = await open_store(f"sqlite:///{tmp_path}/idle.db?poll_ms=3&idle_poll_ms=60000")
    try:
        await store.wait_for_work(0)
        waiter = asyncio.ensure_future(store.wait_for_work(60_000))
        await asyncio.sleep(1.0)  # backed off: the next check is seconds away
        assert not waiter.done()
        await store.submit_workflow(flat(1), "t")
        await asyncio.wait_for(waiter, 0.5)
    finally:
        await store.close()
