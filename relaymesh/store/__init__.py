"""The store: everything RelayMesh keeps, behind the ``Store`` protocol (``base.py``).

``open_store(url)`` picks the backend from the URL (``url.py``): SQLite (``sqlite.py``),
PostgreSQL (``postgres.py``) or this process's memory (``memory.py``, ``memory://NAME``:
tests and one-process demos). Callers use only ``Store``; they never import a backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from relaymesh.exceptions import StoreError
from relaymesh.store.base import ConflictReport, LeaderLease, Store
from relaymesh.store.url import parse_store_url

__all__ = ["ConflictReport", "LeaderLease", "Store", "open_store", "store_session"]


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store at ``url`` and, unless ``migrate`` is False, bring its schema up to
    date. Raises ``StoreError`` for an unknown URL scheme and ``StoreUnavailableError``
    when the store cannot be reached."""
    parsed = parse_store_url(url)
    store: Store
    if parsed.backend == "sqlite":
        from relaymesh.store.sqlite import SqliteStore

        path, _, query = parsed.target.partition("?")
        sqlite_store = SqliteStore.from_url(path, url=parsed.display, query=query)
        await sqlite_store.connect()
        store = sqlite_store
    elif parsed.backend == "postgresql":
        from relaymesh.store.postgres import PostgresStore

        pg_store = PostgresStore(parsed.target, url=parsed.display)
        await pg_store.connect()
        store = pg_store
    elif parsed.backend == "memory":
        from relaymesh.store.memory import MemoryStore

        store = MemoryStore(parsed.target or None)
    else:  # pragma: no cover - parse_store_url knows only these
        raise StoreError(f"no backend for {parsed.display!r}")
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
    return store


@asynccontextmanager
async def store_session(url: str) -> AsyncIterator[Store]:
    """The store at ``url``, migrated, closed on the way out."""
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.close()
