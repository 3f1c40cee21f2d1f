"""Every parameter of every route is checked: bad values get 400 and one line, never a
500, a traceback or a database driver's message; and every write over HTTP puts the
client's user agent in its audit row. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from relaymesh.ops import services
from relaymesh.settings import Settings
from relaymesh.store import Store
from relaymesh.work.workflow import parse_workflow
from tests.integration.web.conftest import serve

BAD_GETS = [
    "/api/conflicts?since=99999999999999999999999",
    "/api/conflicts?since=" + "9" * 5000,
    "/api/conflicts?since=-5",
    "/api/conflicts?since=99999-01-01",
    "/api/conflicts?since=0001-01-01T00:00:00%2B14:00",
    "/api/conflicts?since=%C2%B2",
    "/api/conflicts?report=maybe",
    "/api/conflicts?limit=0",
    "/api/audit-query?from=2030-01-01&to=2020-01-01",
    "/api/audit-query?to=1e400",
    "/api/audit-query?action=%00",
    "/api/audit-query?task_id=" + "x" * 201,
    "/api/tasks?status=SIDEWAYS",
    "/api/tasks?limit=1.5",
    "/api/tasks?limit=-1",
    "/api/tasks?limit=99999999999999999999",
    "/api/tasks?agent=a%00b",
    "/api/tasks?workflow=%01",
    "/api/dead?limit=true",
    "/api/workflows/a%00b",
]

BAD_POSTS: list[tuple[str, Any]] = [
    ("/api/replay-batch", {"agent": ["echo"]}),
    ("/api/replay-batch", {"agent": {"$ne": 1}}),
    ("/api/replay-batch", {"workflow_id": 5}),
    ("/api/replay-batch", {"limit": True}),
    ("/api/replay-batch", {"limit": 2.5}),
    ("/api/replay-batch", {"limit": "ten"}),
    ("/api/replay-batch", {"status": 3}),
    ("/api/replay-batch", {"status": "NOPE"}),
    ("/api/replay-batch", {"surprise": 1}),
    ("/api/replay", {"step_id": None}),
    ("/api/replay", {"step_id": 12}),
    ("/api/replay", {"step_id": "\ud800"}),
    ("/api/replay", ["step"]),
    ("/api/cancel", {"workflow_id": "w", "mode": 1}),
    ("/api/cancel", {"workflow_id": "w", "mode": "sideways"}),
    ("/api/cancel", {"workflow_id": {"a": 1}}),
    ("/api/reload-settings", {"node": ["a", "b"]}),
    ("/api/reload-settings", {"node": "x" * 500}),
]


async def test_bad_input_is_a_400_with_one_line(
    store: Store, client: aiohttp.ClientSession
) -> None:
    served = await serve(store, Settings())
    try:
        for path in BAD_GETS:
            resp = await client.get(served.base + path)
            await _assert_one_line_400(resp, path)
        for path, body in BAD_POSTS:
            resp = await client.post(served.base + path, json=body)
            await _assert_one_line_400(resp, f"{path} {body!r}")
        raw = await client.post(
            served.base + "/api/replay",
            data=b'{"step_id": "\\ud800"}',
            headers={"Content-Type": "application/json"},
        )
        await _assert_one_line_400(raw, "lone surrogate")
        deep = await client.post(
            served.base + "/api/replay",
            data=b"[" * 100_000 + b"]" * 100_000,
            headers={"Content-Type": "application/json"},
        )
        await _assert_one_line_400(deep, "deeply nested JSON")
    finally:
        await served.http.stop()
    assert await services.query_audit(store) == []  # nothing was written


async def _assert_one_line_400(resp: aiohttp.ClientResponse, what: str) -> None:
    text = await resp.text()
    assert resp.status == 400, f"{what}: {resp.status} {text}"
    error = (await resp.json())["error"]
    assert "\n" not in error and "Traceback" not in error, what
    assert "binding" not in error.lower() and "sqlite" not in error.lower(), what


async def test_every_http_write_audits_the_user_agent(
    store: Store, client: aiohttp.ClientSession
) -> None:
    settings = Settings()
    spec = parse_workflow(
        '{"name": "w", "steps": [{"name": "a", "agent": "echo"}]}',
        known_agents=services.known_agents(settings),
        settings=settings,
    )
    wid = await services.submit_workflow(store, spec, "cli:test")
    served = await serve(store, settings)
    agent = {"User-Agent": "rm-console/1.0\t(test)"}
    try:
        base = served.base
        cancel = await client.post(
            f"{base}/api/cancel", json={"workflow_id": wid, "mode": "soft"}, headers=agent
        )
        assert cancel.status == 200
        step_id = (await services.workflow_status(store, wid))[1][0].id
        assert (
            await client.post(f"{base}/api/replay", json={"step_id": step_id}, headers=agent)
        ).status == 200
        await services.cancel_workflow(store, wid, "soft", "cli:test")
        batch = await client.post(
            f"{base}/api/replay-batch", json={"status": "CANCELLED"}, headers=agent
        )
        assert (await batch.json()) == {"replayed": 1}
        reload = await client.post(f"{base}/api/reload-settings", json={}, headers=agent)
        assert reload.status == 200
    finally:
        await served.http.stop()
    rows = [r for r in await services.query_audit(store) if r.actor.startswith("web:")]
    assert sorted(r.action for r in rows) == sorted(
        ["cancel", "replay", "replay-batch", services.RELOAD_REQUEST_ACTION]
    )
    for row in rows:
        assert row.actor == "web:local@127.0.0.1"
        # Control characters are dropped; the rest is kept as sent.
        assert row.details["user_agent"] == "rm-console/1.0(test)", row.action
    assert all(
        "user_agent" not in r.details for r in await services.query_audit(store) if r not in rows
    )


@pytest.mark.parametrize("value", ["9" * 30, "10000-01-01"])
def test_parse_time_refuses_out_of_range(value: str) -> None:
    with pytest.raises(ValueError, match=r"out of range|ISO-8601"):
        services.parse_time_ms(value)
