"""PostgreSQL faults from outside, on real servers: a connection killed under a call, a
commit whose outcome the client never learns, a hung server, and a failover of a
primary with a synchronous replica (``tests/pgcluster.py``, ports 55436-55437)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from relaymesh.exceptions import StoreUnavailableError
from relaymesh.model import StepStatus
from relaymesh.store import open_store
from relaymesh.store.postgres import PostgresStore
from tests.conftest import async_wait_until, require_pg
from tests.integration.store.conftest import flat
from tests.integration.store.pgproxy import PgProxy, silent_listener
from tests.pgcluster import PgCluster
from tests.pgutil import fresh_pg_database

pytestmark = [pytest.mark.asyncio, pytest.mark.pg]

DEADLINE_S = 1.0
SLACK_S = 1.5
"""Scheduling slack on a loaded 2-core machine; far below a wedge (forever)."""


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_pg_database(require_pg()) as url:
        yield url


def _via(url: str, port: int) -> str:
    """``url`` pointed at 127.0.0.1:``port`` instead of its own host."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return f"{parts.scheme}://{user}@127.0.0.1:{port}{parts.path}"


async def _store(url: str, **kwargs: Any) -> PostgresStore:
    store = PostgresStore(url, **kwargs)
    await store.connect()
    return store


async def test_a_connection_reset_mid_query_is_unavailable_not_an_error(pg_url: str) -> None:
    """The driver hands a connection that died mid-query back to the pool itself;
    terminating it again raised "cannot call Connection.terminate(): connection has been
    released back to the pool", a StoreError the worker took for a bad request (a
    result it then turned into a permanent failure) rather than an outage."""
    direct = await open_store(pg_url)
    upstream = urlsplit(pg_url)
    proxy = await PgProxy(upstream.hostname or "", upstream.port or 5432).start()
    store = await open_store(_via(pg_url, proxy.port), migrate=False)
    try:

        async def slow(conn: Any) -> None:
            await conn.execute("SELECT pg_sleep(30)")

        call = asyncio.ensure_future(store._run(slow, tx=False))  # type: ignore[attr-defined]

        async def sleeping() -> bool:
            found = await direct._run(  # type: ignore[attr-defined]
                lambda conn: conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
                ),
                tx=False,
            )
            return bool(found)

        await async_wait_until(sleeping, 10, 0.02, "the query to run")
        proxy.reset_clients()
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(call, 10)

        async def works() -> bool:
            try:
                return await store.now_ms() > 0
            except StoreUnavailableError:
                return False

        await async_wait_until(works, 10, 0.05, "the next call to work")
    finally:
        await store.close()
        await direct.close()
        await proxy.close()


@pytest.mark.parametrize("write", ["commit_success", "commit_failure", "release"])
async def test_a_retried_write_whose_first_try_landed_is_not_a_conflict(
    pg_url: str, write: str
) -> None:
    """The connection dies right after the server got COMMIT: the client sees an outage,
    the write landed. Its retry finds its own result in place and is done, not fenced."""
    direct = await open_store(pg_url)
    upstream = urlsplit(pg_url)
    proxy = await PgProxy(upstream.hostname or "", upstream.port or 5432).start()
    store = await open_store(_via(pg_url, proxy.port), migrate=False)
    try:
        await direct.submit_workflow(flat(1), "t")
        [claim] = await store.claim_steps("n1", limit=1, lease_ms=60_000)
        error = {"kind": "transient", "reason": "x", "attempt": 1, "node": "n1"}

        async def do_write() -> object:
            if write == "commit_success":
                return await store.commit_success_many("n1", [(claim.lease, {"r": 1})])
            if write == "commit_failure":
                return await store.commit_failure(claim.lease, "n1", error, 60_000)
            return await store.release(claim.lease, "n1", "drain")

        proxy.cut_after_commit()
        with pytest.raises(StoreUnavailableError):
            await do_write()
        assert proxy.commits_cut == 1
        expected = {
            "commit_success": StepStatus.SUCCEEDED,
            "commit_failure": StepStatus.RETRY_WAIT,
            "release": StepStatus.READY,
        }[write]

        async def first_try_landed() -> bool:
            # The server may still be finishing the COMMIT the client never heard of.
            return (await direct.get_step(claim.step_id)).status is expected

        await async_wait_until(first_try_landed, 10, 0.02, "the cut COMMIT to land")
        landed = await direct.get_step(claim.step_id)

        async def retried() -> object:
            try:
                return await do_write()
            except StoreUnavailableError:
                return "unavailable"

        outcome: dict[str, object] = {}

        async def answered() -> bool:
            outcome["v"] = await retried()
            return outcome["v"] != "unavailable"

        await async_wait_until(answered, 10, 0.05, "the store to reconnect")
        assert (
            outcome["v"]
            == {
                "commit_success": [True],
                "commit_failure": StepStatus.RETRY_WAIT,
                "release": None,
            }[write]
        )
        assert await direct.list_conflicts() == []
        assert await direct.get_step(claim.step_id) == landed  # applied once
    finally:
        await store.close()
        await direct.close()
        await proxy.close()


async def test_a_stale_commit_after_an_outage_is_still_fenced(pg_url: str) -> None:
    """Idempotence is for one's own lease only: a different result, or a newer epoch,
    is a conflict as before."""
    store = await open_store(pg_url)
    try:
        await store.submit_workflow(flat(1), "t")
        [claim] = await store.claim_steps("n1", limit=1, lease_ms=60_000)
        assert await store.commit_success_many("n1", [(claim.lease, 1)]) == [True]
        assert await store.commit_success_many("n1", [(claim.lease, 1)]) == [True]
        assert await store.commit_success_many("n2", [(claim.lease, 2)]) == [False]
        [conflict] = await store.list_conflicts()
        assert (conflict.node, conflict.event) == ("n2", "commit_success")
    finally:
        await store.close()


async def _raises_within(call: Any, deadline_s: float) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(call, deadline_s + 30)  # the wait_for only guards the test
    return time.monotonic() - started


async def test_a_server_that_never_answers_cannot_hold_a_call_past_its_deadline() -> None:
    async with silent_listener() as port:
        store = await _store(
            f"postgresql://postgres@127.0.0.1:{port}/x",
            call_deadline_s=DEADLINE_S,
            connect_timeout_s=30,
        )
        try:
            assert await _raises_within(store.now_ms(), DEADLINE_S) < DEADLINE_S + SLACK_S
            assert await _raises_within(store.wait_for_work(0), DEADLINE_S) < (DEADLINE_S + SLACK_S)
        finally:
            await store.close()


async def test_a_connection_that_hangs_mid_call_is_dropped_at_the_deadline(pg_url: str) -> None:
    """A pooled connection to a host that vanished (no RST, no FIN: blackholed)."""
    upstream = urlsplit(pg_url)
    proxy = await PgProxy(upstream.hostname or "", upstream.port or 5432).start()
    await (await open_store(pg_url)).close()  # migrated
    store = await _store(_via(pg_url, proxy.port), call_deadline_s=DEADLINE_S)
    try:
        await store.submit_workflow(flat(2), "t")
        await store.wait_for_work(0)  # a LISTEN connection through the proxy
        proxy.hang()
        took = await _raises_within(store.claim_steps("n", limit=2, lease_ms=1000), DEADLINE_S)
        assert took < DEADLINE_S + SLACK_S
        took = await _raises_within(store.step_counts(), DEADLINE_S)
        assert took < DEADLINE_S + SLACK_S
        # The hung LISTEN connection went with the rest: waiting for work reconnects
        # (and times out here) instead of listening on a dead line forever.
        took = await _raises_within(store.wait_for_work(0), DEADLINE_S)
        assert took < DEADLINE_S + SLACK_S
    finally:
        await store.close()
        await proxy.close()


async def test_each_host_gets_its_own_connect_timeout(pg_url: str) -> None:
    """A blackholed first host must not use up the time the second one needs."""
    await (await open_store(pg_url)).close()  # migrated
    parts = urlsplit(pg_url)
    async with silent_listener() as port:
        multi = (
            f"postgresql://postgres@127.0.0.1:{port},{parts.hostname}:{parts.port}"
            f"{parts.path}?target_session_attrs=read-write"
        )
        store = await _store(multi, call_deadline_s=10, connect_timeout_s=1)
        try:
            assert await store.now_ms() > 0
        finally:
            await store.close()


async def test_failover_reconnects_to_the_new_primary_and_listens_there() -> None:
    with PgCluster((55436, 55437)) as pg:
        pg.create_database("relay")
        store = await open_store(pg.url("relay"))
        other = await open_store(pg.url("relay"))
        try:
            await store.submit_workflow(flat(2), "t")
            claims = await store.claim_steps("n", limit=2, lease_ms=60_000)
            await store.wait_for_work(0)  # the LISTEN connection is open
            await asyncio.to_thread(pg.stop_primary, "immediate")
            await asyncio.to_thread(pg.promote)

            async def beats() -> bool:
                try:
                    got = await store.heartbeat_many("n", [c.lease for c in claims], 60_000)
                except StoreUnavailableError:
                    return False
                return all(v is not None for v in got.values())

            # The leases were replicated synchronously: the new primary has them.
            await async_wait_until(beats, 20, 0.1, "heartbeats on the new primary")
            assert await store.commit_success_many("n", [(claims[0].lease, 0)]) == [True]

            async def listening() -> bool:
                try:
                    await store.wait_for_work(0)
                    return True
                except StoreUnavailableError:
                    return False

            await async_wait_until(listening, 20, 0.1, "LISTEN on the new primary")
            await store.wait_for_work(0)
            waiter = asyncio.ensure_future(store.wait_for_work(30_000))
            await asyncio.sleep(0)

            async def submitted() -> bool:
                try:
                    await other.submit_workflow(flat(1), "t")
                    return True
                except StoreUnavailableError:
                    return False

            await async_wait_until(submitted, 20, 0.1, "the second store to reconnect")
            await asyncio.wait_for(waiter, 10)

            # A new synchronous replica from the new primary, then a failover back.
            await asyncio.to_thread(pg.rebuild_replica)
            sync = await asyncio.to_thread(
                pg.sql, pg.primary, "SELECT sync_state FROM pg_stat_replication"
            )
            assert sync == "sync"
            await asyncio.to_thread(pg.stop_primary, "immediate")
            await asyncio.to_thread(pg.promote)

            async def beats_second() -> bool:
                try:
                    got = await store.heartbeat_many("n", [claims[1].lease], 60_000)
                except StoreUnavailableError:
                    return False
                return got[claims[1].step_id] is not None

            await async_wait_until(beats_second, 20, 0.1, "heartbeats after a second failover")
            assert await store.commit_success_many("n", [(claims[1].lease, 1)]) == [True]
            assert await store.list_conflicts() == []
        finally:
            await store.close()
            await other.close()
