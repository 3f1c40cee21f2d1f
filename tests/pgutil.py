"""A fresh, empty PostgreSQL database per test, so parallel runs never share tables.

Usage (async test code)::

    from tests.pgutil import fresh_pg_database

    async with fresh_pg_database(require_pg()) as url:
        store = await open_store(url)

Synchronous code (subprocess/e2e tests) uses ``fresh_pg_database_sync`` the same way.
As a pytest fixture, import ``pg_store_url`` into a test module or conftest::

    from tests.pgutil import pg_store_url  # noqa: F401  (a fixture)

    async def test_x(pg_store_url: str) -> None: ...

Each database is ``rm_<random hex>`` created on the DSN's server and dropped (with its
connections forced closed) afterwards. Skips, or fails with RELAYMESH_REQUIRE_PG=1,
when RELAYMESH_TEST_PG_DSN is not set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import require_pg

__all__ = ["fresh_pg_database", "fresh_pg_database_sync", "pg_store_url", "with_database"]

T = TypeVar("T")


def with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database name replaced."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _create(dsn: str) -> str:
    name = f"rm_{secrets.token_hex(8)}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_pg_database(dsn: str) -> AsyncIterator[str]:
    """Create an empty database on ``dsn``'s server; yield its URL; drop it afterwards."""
    name = await _create(dsn)
    try:
        yield with_database(dsn, name)
    finally:
        await _drop(dsn, name)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""

    async def run() -> T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@contextlib.contextmanager
def fresh_pg_database_sync(dsn: str) -> Iterator[str]:
    """``fresh_pg_database`` for synchronous code."""
    name = _run(lambda: _create(dsn))
    try:
        yield with_database(dsn, name)
    finally:
        _run(lambda: _drop(dsn, name))


@pytest.fixture
def pg_store_url() -> Iterator[str]:
    """A fresh empty PostgreSQL database URL for this test (see the module docstring)."""
    with fresh_pg_database_sync(require_pg()) as url:
        yield url
