"""The dispatch_stats table (migration 0006): idempotent per-minute rows, grouped totals
over the window by the store's clock, old rows pruned by any writer."""

from __future__ import annotations

import pytest

from relaymesh.store import Store
from tests.integration.store.conftest import OpenMore

pytestmark = pytest.mark.asyncio

HOUR_MS = 3_600_000


async def test_rows_are_upserted_with_absolute_counts(store: Store) -> None:
    now = await store.now_ms()
    minute = now - now % 60_000
    await store.write_dispatch_stats(
        [("n1", "echo", minute, "ok", 3), ("n1", "echo", minute, "timeout", 1)], keep_ms=HOUR_MS
    )
    # The same minute written again with its new count replaces, never adds.
    await store.write_dispatch_stats([("n1", "echo", minute, "ok", 5)], keep_ms=HOUR_MS)
    await store.write_dispatch_stats(
        [("n1", "echo", minute - 60_000, "ok", 2), ("n1", "", minute, "guard_refused", 1)],
        keep_ms=HOUR_MS,
    )
    assert await store.dispatch_totals(HOUR_MS) == [
        ("n1", "", "guard_refused", 1),
        ("n1", "echo", "ok", 7),
        ("n1", "echo", "timeout", 1),
    ]


async def test_window_and_prune_follow_the_store_clock(store: Store, open_more: OpenMore) -> None:
    now = await store.now_ms()
    other = await open_more()
    await other.write_dispatch_stats(
        [("n2", "echo", now - 2 * HOUR_MS, "ok", 9), ("n2", "echo", now - 30 * 60_000, "ok", 4)],
        keep_ms=3 * HOUR_MS,
    )
    assert await store.dispatch_totals(HOUR_MS) == [("n2", "echo", "ok", 4)]
    assert await store.dispatch_totals(3 * HOUR_MS) == [("n2", "echo", "ok", 13)]
    # Any node's write prunes every node's old rows.
    await store.write_dispatch_stats([("n1", "echo", now, "ok", 1)], keep_ms=HOUR_MS)
    assert await store.dispatch_totals(3 * HOUR_MS) == [
        ("n1", "echo", "ok", 1),
        ("n2", "echo", "ok", 4),
    ]
    assert (await store.table_stats())["dispatch_stats"].rows == 2
