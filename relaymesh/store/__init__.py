"""The store: everything RelayMesh keeps, behind the ``Store`` protocol (``base.py``).

``open_store(url)`` picks the backend from the URL (``url.py``): SQLite (``sqlite.py``),
PostgreSQL (``postgres.py``) or this process's memory (``memory.py``, ``memory://NAME``:
tests and one-process demos). Callers use only ``Store``; they never import a backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from relaymesh.exceptions import StoreError
from relaymesh.store.base import ConflictReport, LeaderLease, Store
from relaymesh.store.url import parse_store_url

__all__ = [
    "ConflictReport",
    "LeaderLease",
    "Store",
    "missing_store_error",
    "open_store",
    "store_session",
]


def missing_store_error(url: str) -> str | None:
    """Why ``url`` names no store yet, when it is a SQLite file that does not exist in a
    directory that does (a mistyped path); None otherwise. A missing directory is not
    this error: it is a volume not mounted yet, which a node waits for."""
    parsed = parse_store_url(url)
    if parsed.backend != "sqlite":
        return None  # PostgreSQL says by itself that a database does not exist
    path = parsed.target.partition("?")[0]
    if path == ":memory:" or os.path.exists(path):
        return None
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return None
    return (
        f"no store at {os.path.abspath(path)} (mistyped --store?): "
        "`relaymesh store migrate` creates one"
    )


async def open_store(url: str, *, migrate: bool = True, create: bool = True) -> Store:
    """Open the store at ``url`` and, unless ``migrate`` is False, bring its schema up to
    date. With ``create`` False a SQLite file that does not exist is refused
    (``missing_store_error``) instead of created empty. Raises ``StoreError`` for an
    unknown URL scheme and ``StoreUnavailableError`` when the store cannot be reached."""
    parsed = parse_store_url(url)
    store: Store
    if parsed.backend == "sqlite":
        from relaymesh.store.sqlite import SqliteStore

        missing = None if create else missing_store_error(url)
        if missing is not None:
            raise StoreError(missing)
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
async def store_session(url: str, *, create: bool = False) -> AsyncIterator[Store]:
    """The store at ``url``, migrated, closed on the way out. A SQLite file that does
    not exist is refused with one line unless ``create`` (a mistyped ``--store`` must
    not answer from a new empty store)."""
    store = await open_store(url, create=create)
    try:
        yield store
    finally:
        await store.close()
