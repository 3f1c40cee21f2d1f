"""Opening, migrating, backing up, the clock and wake-ups."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

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


async def test_backup_is_a_readable_copy(store: Store, store_url: str, tmp_path: Path) -> None:
    wf = await store.submit_workflow(flat(3), "t")
    [c] = await store.claim_steps("n", limit=1, lease_ms=60_000)
    await store.commit_success(c.lease, "n", {"r": 1})
    target = tmp_path / "backup.out"
    await store.backup(str(target))
    if store_url.startswith("sqlite"):
        copy = await open_store(f"sqlite:///{target}")
        try:
            record, steps = await copy.get_workflow(wf)
            assert record.status is WorkflowStatus.RUNNING and len(steps) == 3
            assert (await copy.get_step(c.step_id)).result == {"r": 1}
        finally:
            await copy.close()
        conn = sqlite3.connect(target)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    else:
        dump = json.loads(target.read_text())
        assert set(dump["tables"]) >= TABLES
        assert len(dump["tables"]["steps"]) == 3
        assert dump["schema_version"] >= 1


async def test_backup_while_writers_run(store: Store, tmp_path: Path) -> None:
    await store.submit_workflow(flat(200), "t")
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            claims = await store.claim_steps("n", limit=4, lease_ms=60_000)
            if not claims:
                return
            await store.commit_success_many("n", [(c.lease, None) for c in claims])

    task = asyncio.ensure_future(writer())
    try:
        for i in range(3):
            await store.backup(str(tmp_path / f"b{i}"))
            assert (tmp_path / f"b{i}").stat().st_size > 0
    finally:
        stop.set()
        await task


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
