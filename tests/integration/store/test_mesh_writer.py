"""The node's mesh writer against a real store: only changed rows, bounded, heals.

The writer is ``Node._write_mesh`` (with ``ops/mesh_writer.MeshReport``) over a real
store; the member view is a list of ``state.Member`` records we control, so exactly
one member can change between two writes. Rows written are counted by the store
method's calls and, on SQLite, by a statement trace on the store's own connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from relaymesh.membership.config import SwimConfig
from relaymesh.membership.state import Member
from relaymesh.membership.wire import MAX_METADATA_BYTES
from relaymesh.model import MemberStatus, MeshNode
from relaymesh.node import Node
from relaymesh.settings import load_settings
from relaymesh.store import Store, open_store

LOCAL = "writer"


class View:
    """Stands in for ``MembershipService``: the writer only calls ``members()``."""

    def __init__(self, members: list[Member]) -> None:
        self.list = members

    def members(self) -> list[Member]:
        return [m.copy() for m in self.list]


class Spy:
    """Records the rows each ``upsert_mesh_nodes`` call carried, then lets it through."""

    def __init__(self, store: Store) -> None:
        self.calls: list[list[MeshNode]] = []
        self._real = store.upsert_mesh_nodes

    async def __call__(self, reporter: str, nodes: Any) -> None:
        self.calls.append(list(nodes))
        await self._real(reporter, nodes)

    def last_names(self) -> list[str]:
        return sorted(n.name for n in self.calls[-1])


def member(i: int, incarnation: int = 1, **metadata: str) -> Member:
    return Member(
        f"m{i:05d}", ("127.0.0.1", 20_000 + i), MemberStatus.ALIVE, incarnation, metadata, 1
    )


def writer_node(tmp_path: Path, store: Store, members: list[Member]) -> tuple[Node, Spy, View]:
    settings = load_settings(
        None,
        {
            "node": {"name": LOCAL, "bind": "127.0.0.1:0", "state_dir": str(tmp_path)},
            "worker": {"enabled": False},
        },
    )
    node = Node(settings)
    node.store = store
    view = View([Member(LOCAL, ("127.0.0.1", 7000), MemberStatus.ALIVE, 3, {"pid": "1"}, 1)])
    view.list.extend(members)
    node.membership = view
    spy = Spy(store)
    store.upsert_mesh_nodes = spy  # type: ignore[method-assign]
    return node, spy, view


async def trace_sqlite(store: Store) -> list[str]:
    """Every SQL statement the store's own SQLite connection runs from now on."""
    statements: list[str] = []

    def install(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await store._in_thread(install)  # type: ignore[attr-defined]
    return statements


def mesh_rows(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().startswith("INSERT INTO mesh_nodes")]


async def test_one_changed_member_is_one_row_written(store: Store, tmp_path: Path) -> None:
    node, spy, view = writer_node(tmp_path, store, [member(i) for i in range(200)])
    sqlite = store.url.startswith("sqlite")
    traced = await trace_sqlite(store) if sqlite else []

    await node._write_mesh()
    assert len(spy.calls[-1]) == 201  # the first write is the whole view
    assert len(await store.list_mesh_nodes()) == 201

    view.list[57] = member(56, incarnation=2, role="moved")
    traced.clear()
    await node._write_mesh()
    assert spy.last_names() == ["m00056"]
    if sqlite:
        assert len(mesh_rows(traced)) == 1, traced
    rows = {r.name: r for r in await store.list_mesh_nodes()}
    assert rows["m00056"].incarnation == 2 and rows["m00056"].metadata == {"role": "moved"}

    # Nothing changed: only our own row, as the store probe.
    await node._write_mesh()
    assert spy.last_names() == [LOCAL]


async def test_a_failed_write_is_followed_by_a_full_rewrite(tmp_path: Path) -> None:
    """A real outage: another connection holds SQLite's write lock past the busy timeout."""
    path = tmp_path / "outage.db"
    store = await open_store(f"sqlite:///{path}?busy_timeout_ms=100")
    try:
        node, spy, view = writer_node(tmp_path, store, [member(i) for i in range(50)])
        await node._write_mesh()
        view.list[11] = member(10, incarnation=5)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            await node._write_mesh()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert spy.last_names() == ["m00010"]  # the write that failed
        assert node.store_health.errors == 1
        assert {r.name: r.incarnation for r in await store.list_mesh_nodes()}["m00010"] == 1

        await node._write_mesh()
        assert len(spy.calls[-1]) == 51  # everything again: the store may have lost any of it
        assert {r.name: r.incarnation for r in await store.list_mesh_nodes()}["m00010"] == 5
        assert node.store_health.errors == 0

        await node._write_mesh()
        assert spy.last_names() == [LOCAL]
    finally:
        await store.close()


async def test_a_flood_of_fake_members_stays_bounded(store: Store, tmp_path: Path) -> None:
    max_rows = SwimConfig().max_members
    big = {f"k{j:02d}": "v" * 500 for j in range(40)}  # far over the wire's metadata cap
    fakes = [member(i, **big) for i in range(max_rows + 300)]
    node, spy, _ = writer_node(tmp_path, store, fakes)

    await node._write_mesh()
    written = spy.calls[-1]
    assert len(written) == max_rows
    assert LOCAL in {n.name for n in written}
    for row in written:
        assert sum(len(k) + len(str(v)) for k, v in row.metadata.items()) <= MAX_METADATA_BYTES
    assert len(await store.list_mesh_nodes()) == max_rows

    # The flood standing still costs one row per refresh, not the table.
    await node._write_mesh()
    assert spy.last_names() == [LOCAL]
