"""Retention on the maintenance leader: hooked into ``run_once``, due every
``retention.interval_s``, and hot-reloadable (each pass reads the settings again)."""

from __future__ import annotations

from typing import Any

import pytest

from relaymesh.clock import FakeClock
from relaymesh.ops.metrics import Metrics
from relaymesh.settings import Settings
from relaymesh.work.maintenance import Maintenance
from tests.integration.store.retention_helpers import WEEK_MS, age, count, finished
from tests.integration.work.helpers import settings

pytestmark = pytest.mark.asyncio


async def test_maintenance_runs_retention_with_the_settings_of_the_moment(
    store_url: str, store: Any
) -> None:
    old = await finished(store, 3)
    await age(store_url, old, 2 * WEEK_MS)
    current: list[Settings] = [settings(retention={"finished_after_s": 0, "interval_s": 60})]
    clock = FakeClock()
    m = Maintenance(
        store=store, node="m", settings=lambda: current[0], metrics=Metrics(), clock=clock
    )

    assert (await m.run_once())["retention"] == {}  # retention of finished work is off
    assert await count(store_url, "workflows") == 3
    # A reload turns it on; the next pass that is due uses it.
    current[0] = settings(retention={"finished_after_s": 604800, "interval_s": 60, "batch_size": 2})
    assert (await m.run_once())["retention"] is None  # not due yet
    clock.advance(60_000)
    report = (await m.run_once())["retention"]
    assert report is not None and report["workflows"] == 3
    assert await count(store_url, "workflows") == 0
    assert m.metrics.retention_deleted.labels("steps")._value.get() == 9
    (summary,) = await store.query_audit(action="retention")
    assert summary.actor == "node:m" and summary.details["batches"] >= 2
