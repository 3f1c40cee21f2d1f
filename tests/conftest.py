"""Shared test fixtures: PostgreSQL availability and condition waiting."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import pytest

PG_DSN = os.environ.get("RELAYMESH_TEST_PG_DSN")
REQUIRE_PG = os.environ.get("RELAYMESH_REQUIRE_PG") == "1"


def require_pg() -> str:
    """The PostgreSQL DSN for tests; skip (or fail, when RELAYMESH_REQUIRE_PG=1) without it."""
    if not PG_DSN:
        reason = "RELAYMESH_TEST_PG_DSN is not set: no PostgreSQL server to test against"
        if REQUIRE_PG:
            pytest.fail(reason + " (RELAYMESH_REQUIRE_PG=1 makes this a failure)")
        pytest.skip(reason)
    return PG_DSN


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05, what: str = ""
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


async def async_wait_until(
    predicate: Callable[[], Awaitable[bool]],
    timeout_s: float,
    interval_s: float = 0.05,
    what: str = "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await predicate():
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)
