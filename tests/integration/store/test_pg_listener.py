"""PostgreSQL: the LISTEN connection behind ``wait_for_work`` never leaks.

Node shutdown can cancel ``wait_for_work`` at any await inside the listener's setup
(connect, LISTEN). A connection dropped half-made used to surface much later as
"Connection.__del__" ResourceWarning, which ``filterwarnings = error`` turns into a
failure of an unrelated test. Here every cancellation point is hit, then the store is
closed, the garbage collected and the server asked which backends are left.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from relaymesh.exceptions import StoreError
from relaymesh.store import Store, open_store
from tests.conftest import async_wait_until, require_pg
from tests.pgutil import fresh_pg_database

pytestmark = [pytest.mark.asyncio, pytest.mark.pg]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_pg_database(require_pg()) as url:
        yield url


async def _backends(url: str, *, query_like: str = "%") -> int:
    """Connections to ``url``'s database other than the one asking (whose last query
    is like ``query_like``)."""
    admin = await asyncpg.connect(url)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE $1",
                query_like,
            )
        )
    finally:
        await admin.close()


async def _assert_nothing_left(url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]

    async def gone() -> bool:
        return await _backends(url) == 0

    await async_wait_until(gone, 10, 0.02, "every store connection to be closed")


async def _cancel_after(store: Store, pause: Callable[[], Any]) -> None:
    waiter = asyncio.ensure_future(store.wait_for_work(10_000))
    await pause()
    waiter.cancel()
    try:
        await waiter
    except asyncio.CancelledError:
        pass


async def test_cancelled_on_the_very_first_call_leaks_nothing(pg_url: str) -> None:
    for turns in range(6):  # cancelled before, at and just after the connect starts
        store = await open_store(pg_url)

        async def pause(turns: int = turns) -> None:
            for _ in range(turns):
                await asyncio.sleep(0)

        await _cancel_after(store, pause)
        await store.close()
        await _assert_nothing_left(pg_url)


async def test_cancelled_at_any_point_of_setup_leaks_nothing(pg_url: str) -> None:
    store = await open_store(pg_url)
    try:
        for i in range(14):  # 0.25 ms .. ~2 s: across connect, LISTEN and the wait
            await _cancel_after(store, lambda i=i: asyncio.sleep(0.00025 * 2**i))
        await store.wait_for_work(0)  # still usable afterwards
    finally:
        await store.close()
    await _assert_nothing_left(pg_url)


async def test_cancelled_between_connect_and_listen_closes_the_connection(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window of the original bug: connected, not yet listening."""
    listening = asyncio.Event()

    async def stuck_add_listener(self: Any, channel: str, callback: Any) -> None:
        listening.set()
        await asyncio.Event().wait()

    store = await open_store(pg_url)
    monkeypatch.setattr(asyncpg.Connection, "add_listener", stuck_add_listener)
    try:
        await _cancel_after(store, lambda: asyncio.wait_for(listening.wait(), 10))
    finally:
        monkeypatch.undo()
        await store.close()
    await _assert_nothing_left(pg_url)


async def test_close_during_setup_closes_the_new_connection(pg_url: str) -> None:
    store = await open_store(pg_url)
    waiters = [asyncio.ensure_future(store.wait_for_work(10_000)) for _ in range(3)]
    await asyncio.sleep(0)
    await store.close()
    for waiter in waiters:
        try:
            await asyncio.wait_for(waiter, 10)
        except StoreError:
            pass
    await _assert_nothing_left(pg_url)


async def test_concurrent_waiters_share_one_listener(pg_url: str) -> None:
    store = await open_store(pg_url)
    try:
        await asyncio.gather(*(store.wait_for_work(0) for _ in range(5)))
        assert await _backends(pg_url, query_like="LISTEN%") == 1
    finally:
        await store.close()
    await _assert_nothing_left(pg_url)
