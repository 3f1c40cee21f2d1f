"""``/api/events`` over real HTTP: a stream ends when its client goes away, streams are
capped per token and overall (429), and a token removed by a reload ends its stream."""

from __future__ import annotations

import asyncio

import aiohttp

from relaymesh.store import Store
from relaymesh.web.api import Api
from tests.conftest import async_wait_until
from tests.integration.web.conftest import OTHER, READER, serve, tokens_settings


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def first_event(resp: aiohttp.ClientResponse) -> str:
    while True:
        line = (await resp.content.readline()).decode()
        assert line, "the stream ended before its first event"
        if line.startswith("event: "):
            return line.removeprefix("event: ").strip()


async def streams_closed(api: Api, total: int) -> None:
    async def check() -> bool:
        return api.streams.open_total == total

    await async_wait_until(check, 10, what=f"{total} open event streams")


async def test_stream_ends_when_the_client_leaves(sqlite_store: Store) -> None:
    interval_s = 0.5
    served = await serve(sqlite_store, tokens_settings("reader"), sse_interval_s=interval_s)
    polls = {"n": 0}
    real_step_counts = sqlite_store.step_counts

    async def counted_step_counts() -> object:
        polls["n"] += 1
        return await real_step_counts()

    sqlite_store.step_counts = counted_step_counts  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{served.base}/api/events", headers=bearer(READER))
            assert resp.status == 200
            assert await first_event(resp) == "stats"  # the first round has been sent
            assert served.api.streams.open_total == 1
            resp.close()  # drops the connection while the stream waits for its next round
            at_close = polls["n"]
        # The handler notices before it polls again, and frees its slot.
        await streams_closed(served.api, 0)
        assert polls["n"] == at_close
        # Not a wait for a condition but an observation window: a leftover loop would
        # have polled again within a few intervals.
        await asyncio.sleep(3 * interval_s)
        assert polls["n"] == at_close
    finally:
        await served.http.stop()


async def test_streams_are_capped_per_token_and_overall(sqlite_store: Store) -> None:
    served = await serve(
        sqlite_store, tokens_settings("reader", "other", max_streams=3, max_streams_per_token=2)
    )
    url = f"{served.base}/api/events"
    try:
        async with aiohttp.ClientSession() as session:
            open_ = [await session.get(url, headers=bearer(READER)) for _ in range(2)]
            assert [r.status for r in open_] == [200, 200]
            third = await session.get(url, headers=bearer(READER))
            assert third.status == 429
            assert "max_streams_per_token = 2" in (await third.json())["error"]
            other = await session.get(url, headers=bearer(OTHER))
            assert other.status == 200
            overall = await session.get(url, headers=bearer(OTHER))
            assert overall.status == 429
            assert "max_streams = 3" in (await overall.json())["error"]
            # Closing one frees its slot for the next stream of that token.
            open_[0].close()
            await streams_closed(served.api, 2)
            again = await session.get(url, headers=bearer(READER))
            assert again.status == 200
            for resp in (open_[1], other, again):
                resp.close()
        await streams_closed(served.api, 0)
    finally:
        await served.http.stop()


async def test_removed_token_ends_its_stream(sqlite_store: Store) -> None:
    served = await serve(sqlite_store, tokens_settings("reader", "other"))
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{served.base}/api/events", headers=bearer(READER))
            kept = await session.get(f"{served.base}/api/events", headers=bearer(OTHER))
            assert await first_event(resp) == "stats"
            served.settings = tokens_settings("other")  # a reload rotated "reader" out
            async with asyncio.timeout(20):  # the stream must end by itself
                rest = (await resp.content.read()).decode()
            assert "event: error" in rest
            assert "no longer valid" in rest
            await streams_closed(served.api, 1)  # the other token's stream goes on
            assert served.api.streams.open_for("other") == 1
            kept.close()
        await streams_closed(served.api, 0)
    finally:
        await served.http.stop()
