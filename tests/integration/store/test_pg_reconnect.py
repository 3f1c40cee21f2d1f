"""PostgreSQL: the store rides through dropped connections (a restart or failover
looks the same to the client) and recovers by itself."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from relaymesh.exceptions import StoreUnavailableError
from relaymesh.store import open_store
from tests.conftest import async_wait_until, require_pg
from tests.integration.store.conftest import flat
from tests.pgutil import fresh_pg_database

pytestmark = [pytest.mark.asyncio, pytest.mark.pg]


async def _terminate_all(dsn: str, database: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        return len(
            await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
    finally:
        await admin.close()


async def test_recovers_after_connections_are_killed() -> None:
    dsn = require_pg()
    async with fresh_pg_database(dsn) as url:
        store = await open_store(url)
        other = await open_store(url)
        try:
            await store.submit_workflow(flat(3), "t")
            await store.wait_for_work(0)  # opens the LISTEN connection
            database = url.rsplit("/", 1)[1]
            assert await _terminate_all(dsn, database) >= 2

            async def works() -> bool:
                try:
                    await store.step_counts()
                    return True
                except StoreUnavailableError:
                    return False

            await async_wait_until(works, 10, 0.05, "the store to reconnect")
            claims = await store.claim_steps("n", limit=5, lease_ms=60_000)
            assert len(claims) == 3
            assert all(await store.commit_success_many("n", [(c.lease, 1) for c in claims]))

            # LISTEN comes back too: a submit elsewhere wakes the waiter.
            async def listening() -> bool:
                try:
                    await store.wait_for_work(0)
                    return True
                except StoreUnavailableError:
                    return False

            await async_wait_until(listening, 10, 0.05, "the listener to reconnect")
            await store.wait_for_work(0)
            waiter = asyncio.ensure_future(store.wait_for_work(20_000))
            await asyncio.sleep(0)

            async def submitted() -> bool:
                try:
                    await other.submit_workflow(flat(1), "t")
                    return True
                except StoreUnavailableError:
                    return False

            await async_wait_until(submitted, 10, 0.05, "the second store to reconnect")
            await asyncio.wait_for(waiter, 5)
        finally:
            await store.close()
            await other.close()


async def test_a_frozen_transaction_does_not_block_others_for_long() -> None:
    """A node frozen mid-transaction (SIGSTOP) holds row locks; the server ends its
    transaction after the idle-in-transaction timeout, so others are not blocked until
    it wakes."""
    dsn = require_pg()
    async with fresh_pg_database(dsn) as url:
        frozen = await open_store(url)
        other = await open_store(url)
        try:
            workflow_id = await frozen.submit_workflow(flat(2), "t")
            pool = frozen._pool  # type: ignore[attr-defined]
            conn = await pool.acquire()
            tx = conn.transaction()
            await tx.start()
            await conn.execute("SELECT 1 FROM workflows FOR UPDATE")
            # The "frozen" session now idles in its transaction, holding the lock.
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await asyncio.wait_for(other.cancel_workflow(workflow_id, "hard", "t"), 30)
            assert result.cancelled == 2
            # Without the server-side timeout the cancel would wait for the lock forever.
            assert loop.time() - started < 20
        finally:
            await frozen.close()
            await other.close()
