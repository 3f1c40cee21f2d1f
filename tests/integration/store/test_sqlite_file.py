"""The SQLite store and its file: a file moved away, replaced or deleted under an open
store is refused (``StoreGoneError``), never written behind the operator's back; the
same file back at its path is used again. A full disk is a transient error."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from relaymesh.exceptions import StoreGoneError, StoreUnavailableError
from relaymesh.store import open_store
from relaymesh.store.sqlite import _translate
from tests.integration.store.conftest import flat


async def test_a_file_moved_away_is_refused_until_it_is_back(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        wid = await store.submit_workflow(flat(1), "test")
        os.rename(path, tmp_path / "aside.db")
        with pytest.raises(StoreGoneError, match="was deleted or moved away under this node"):
            await store.submit_workflow(flat(1), "test")
        with pytest.raises(StoreGoneError):
            await store.list_mesh_nodes()  # reads too: they would show a stale file
        assert not path.exists()  # and no new empty file made at the path
        os.rename(tmp_path / "aside.db", path)
        await store.submit_workflow(flat(1), "test")
        workflow, steps = await store.get_workflow(wid)
        assert workflow.id == wid and len(steps) == 1
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM workflows").fetchone()[0] == 2


async def test_a_replaced_file_is_refused_with_its_new_inode(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        os.rename(path, tmp_path / "old.db")
        sqlite3.connect(path).close()  # someone made a fresh file there
        new_inode = os.stat(path).st_ino
        with pytest.raises(StoreGoneError, match=f"was replaced \\(inode {new_inode}\\)"):
            await store.submit_workflow(flat(1), "test")
        with sqlite3.connect(path) as conn:  # the new file got nothing from us
            assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        await store.close()


async def test_a_deleted_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        path.unlink()
        with pytest.raises(StoreGoneError) as info:
            await store.submit_workflow(flat(1), "test")
        assert isinstance(info.value, StoreUnavailableError)  # callers back off and retry
        assert "put it back, or restart the node" in str(info.value)
    finally:
        await store.close()


def test_a_full_disk_is_transient_and_says_so() -> None:
    error = _translate(sqlite3.OperationalError("database or disk is full"))
    assert isinstance(error, StoreUnavailableError)
    assert str(error) == ("sqlite store unavailable: database or disk is full (no space left)")


async def test_a_missing_directory_is_transient(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await open_store(f"sqlite:///{tmp_path / 'not-mounted' / 's.db'}")
