"""The worker through a SQLite outage shorter than its lease: another connection holds
the file's write lock (``BEGIN EXCLUSIVE``), so every heartbeat fails meanwhile
(``busy_timeout_ms=100``: each gives up quickly and is counted). The node keeps its
agent; once the lock is gone the lease is still its own, extended, and the result
commits under the lease it was claimed with: no conflict, no second run.

The outage longer than the lease is in ``test_pg_outage.py``: a lock on a SQLite file
stops every node at once, so which comes first when it goes, the cut-off node's
heartbeat or another node's reclaim, is a race; a proxy in front of PostgreSQL cuts
one node off while the others go on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relaymesh.model import StepStatus
from relaymesh.store import open_store
from tests.conftest import async_wait_until
from tests.integration.work.helpers import harness, holds, settings, submit, wait_step

pytestmark = pytest.mark.asyncio

WAIT_S = 20.0


async def test_a_write_lock_shorter_than_the_lease_keeps_the_agent(tmp_path: Path) -> None:
    db = tmp_path / "relaymesh.db"
    cfg = settings(worker={"lease_ms": 6000, "heartbeat_ms": 200})
    store = await open_store(f"sqlite:///{db}?busy_timeout_ms=100")
    try:
        wf = await submit(
            store,
            {"name": "o", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 2.5}}]},
            cfg,
        )
        async with harness(store, cfg) as h:
            h.start()
            running = await wait_step(store, wf, "s", StepStatus.RUNNING)
            locker = sqlite3.connect(db, timeout=10, isolation_level=None)
            try:
                locker.execute("BEGIN EXCLUSIVE")

                def failed() -> float:
                    return float(h.metrics.store_errors.labels("heartbeat")._value.get())

                # Heartbeats are failing now; the lease (6 s) outlives the outage. (A
                # worker that gave its agent up would stop heartbeating: then fail here.)
                assert h.worker is not None
                worker = h.worker
                await async_wait_until(
                    holds(lambda: failed() >= 3 or worker.running() != [running.id]),
                    WAIT_S,
                    what="failed heartbeats",
                )
                assert worker.running() == [running.id]
            finally:
                locker.rollback()
                locker.close()
            done = await wait_step(store, wf, "s", StepStatus.SUCCEEDED)
        assert (done.attempt, done.lease_epoch, done.owner_node) == (1, running.lease_epoch, "n1")
        assert await store.list_conflicts() == []
        assert [e.event for e in await store.list_ownership_events()] == ["claimed"]
        assert h.metrics.lease_conflicts.labels("heartbeat")._value.get() == 0
    finally:
        await store.close()
