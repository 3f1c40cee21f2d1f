"""A store that cannot be reached raises StoreUnavailableError, never a driver error."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from relaymesh.exceptions import StoreError, StoreUnavailableError
from relaymesh.store import open_store
from tests.integration.store.conftest import flat

pytestmark = pytest.mark.asyncio


async def test_sqlite_write_lock_held_past_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = await open_store(f"sqlite:///{path}?busy_timeout_ms=150")
    try:
        await store.submit_workflow(flat(2), "t")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailableError):
                await store.claim_steps("n", limit=1, lease_ms=1000)
            with pytest.raises(StoreUnavailableError):
                await store.submit_workflow(flat(1), "t")
            # Reads still work in WAL mode while a writer holds the lock.
            assert len(await store.list_steps()) == 2
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert len(await store.claim_steps("n", limit=5, lease_ms=1000)) == 2
    finally:
        await store.close()


async def test_sqlite_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await open_store(f"sqlite:///{tmp_path}/nope/x.db")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.pg
async def test_postgres_closed_port() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nothing"
    with pytest.raises(StoreUnavailableError):
        await open_store(url)
    store = await open_store(url, migrate=False)
    try:
        with pytest.raises(StoreUnavailableError):
            await store.claim_steps("n", limit=1, lease_ms=1000)
        with pytest.raises(StoreUnavailableError):
            await store.wait_for_work(10)
    finally:
        await store.close()
