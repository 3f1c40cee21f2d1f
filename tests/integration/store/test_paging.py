"""Keyset paging of tasks, dead, audit-query and ownership-events on both stores:
every row exactly once, in order, also across ties of ``updated_at_ms``; and the
same over HTTP (X-Next-Cursor) and the CLI (--cursor, the next one on stderr)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaymesh.exceptions import WorkflowError
from relaymesh.model import StepStatus
from relaymesh.ops import paging
from relaymesh.settings import Settings
from relaymesh.store import Store
from relaymesh.web.api import Api
from tests.e2e.harness import RELAYMESH
from tests.integration.store.conftest import step, workflow
from tests.integration.store.retention_helpers import sql

# sql_store: rows aged, tied or bulk-filled with SQL behind the store's back.
pytestmark = [pytest.mark.asyncio, pytest.mark.sql_store]

Page = Callable[[str | None], Awaitable[tuple[list[Any], str | None]]]


async def walk(page: Page) -> tuple[list[Any], int]:
    """Every page from the first: the rows in order, and how many pages."""
    out: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        rows, cursor = await page(cursor)
        out.extend(rows)
        pages += 1
        if cursor is None:
            return out, pages
        assert pages < 100, "paging does not end"


@pytest.fixture
async def filled(store_url: str, store: Store) -> Store:
    """23 workflows of 3 steps (69 steps, 17 dead letters), many updated_at ties."""
    for _ in range(23):
        await store.submit_workflow(workflow(step("a"), step("b"), step("c")), "t")
    for _ in range(17):
        (claim,) = await store.claim_steps("w", limit=1, lease_ms=60_000)
        await store.commit_failure(claim.lease, "w", {"kind": "permanent"}, None)
    # Ties: most steps share one of three update times, so the id breaks them.
    await sql(store_url, "UPDATE steps SET updated_at_ms = 1000 + (length(id) % 3)")
    for i in range(30):
        await store.record_audit("t", "note", None, {"i": i})
    return store


async def test_tasks_pages_every_step_once_in_order(filled: Store) -> None:
    everything = await filled.list_steps(limit=1000)
    assert len(everything) == 69
    got, pages = await walk(lambda c: paging.page_tasks(filled, cursor=c, limit=7))
    assert [s.id for s in got] == [s.id for s in everything]
    assert pages == 10  # 69 rows: 9 full pages and one of 6
    order = [(s.updated_at_ms, s.id) for s in got]
    assert order == sorted(order, reverse=True)


async def test_each_filter_pages_every_row_once(filled: Store) -> None:
    dead, _ = await walk(lambda c: paging.page_dead(filled, cursor=c, limit=4))
    assert len({s.id for s in dead}) == len(dead) == 17
    assert {s.status for s in dead} == {StepStatus.DEAD_LETTER}
    ready, _ = await walk(
        lambda c: paging.page_tasks(filled, status=StepStatus.READY, cursor=c, limit=5)
    )
    assert len({s.id for s in ready}) == len(ready) == 69 - 17
    one = dead[0].workflow_id
    steps, _ = await walk(lambda c: paging.page_tasks(filled, workflow_id=one, cursor=c, limit=1))
    assert sorted(s.id for s in steps) == sorted(
        s.id for s in (await filled.get_workflow(one))[1]
    )
    echo, _ = await walk(lambda c: paging.page_tasks(filled, agent="echo", cursor=c, limit=9))
    assert len(echo) == 69


async def test_audit_and_ownership_events_page_by_id(filled: Store) -> None:
    notes, _ = await walk(lambda c: paging.page_audit(filled, action="note", cursor=c, limit=7))
    assert [a.details["i"] for a in notes] == list(range(29, -1, -1))
    every = await filled.list_ownership_events(limit=1000)
    events, _ = await walk(lambda c: paging.page_ownership_events(filled, cursor=c, limit=6))
    assert [e.id for e in events] == [e.id for e in every]
    assert len(events) == 17


async def test_bad_cursors_are_one_line_errors(store: Store) -> None:
    with pytest.raises(WorkflowError, match="bad cursor"):
        await paging.page_tasks(store, cursor="nope")
    with pytest.raises(WorkflowError, match="bad cursor"):
        await paging.page_audit(store, cursor="1:x")


@pytest.fixture
async def client(filled: Store) -> AsyncIterator[TestClient]:
    app = web.Application()
    app.add_routes(Api(filled, Settings).routes())
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    try:
        yield test_client
    finally:
        await test_client.close()


@pytest.mark.parametrize(
    ("path", "total"),
    [("/api/tasks", 69), ("/api/dead", 17), ("/api/ownership-events", 17)],
)
async def test_http_pages_with_x_next_cursor(client: TestClient, path: str, total: int) -> None:
    seen: list[str] = []
    params = {"limit": "8"}
    while True:
        resp = await client.get(path, params=params)
        assert resp.status == 200, await resp.text()
        seen += [str(row["id"]) for row in await resp.json()]
        cursor = resp.headers.get("X-Next-Cursor")
        if cursor is None:
            break
        params = {"limit": "8", "cursor": cursor}
    assert len(seen) == len(set(seen)) == total
    bad = await client.get(path, params={"cursor": "x:"})
    assert bad.status == 400


async def test_cli_pages_with_cursor_on_stderr(store_url: str, filled: Store) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RELAYMESH, "--store", store_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    seen: list[str] = []
    extra: list[str] = []
    while True:
        done = run("tasks", "--limit", "30", "--json", *extra)
        assert done.returncode == 0, done.stderr
        seen += [s["id"] for s in json.loads(done.stdout)]  # stdout: the list alone
        if "next page: --cursor " not in done.stderr:
            break
        extra = ["--cursor", done.stderr.split("next page: --cursor ", 1)[1].split()[0]]
    assert len(seen) == len(set(seen)) == 69
    human = run("audit-query", "--action", "note", "--limit", "5")
    assert human.returncode == 0 and "next page: --cursor " in human.stderr
