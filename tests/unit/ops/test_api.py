"""The JSON API: token roles, loopback-only without tokens, audited writes, shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaymesh.ops import services
from relaymesh.settings import Settings, TokenSettings, WebSettings
from relaymesh.store import Store, open_store
from relaymesh.web.api import Api, hash_token
from relaymesh.work.workflow import parse_workflow

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_OLD, ADMIN_NEW, READER = "old-admin-secret", "new-admin-secret", "reader-secret"


def settings_with_tokens() -> Settings:
    return Settings(
        web=WebSettings(
            tokens=[
                TokenSettings(name="admin-2025", token_sha256=hash_token(ADMIN_OLD), role="admin"),
                TokenSettings(name="admin-2026", token_sha256=hash_token(ADMIN_NEW), role="admin"),
                TokenSettings(name="grafana", token_sha256=hash_token(READER), role="readonly"),
            ]
        )
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield s
    finally:
        await s.close()


@web.middleware
async def pretend_remote(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve the request as if it came from ``X-Test-Remote`` (as a reverse proxy that sets
    the client address would): the test client itself can only connect over loopback."""
    remote = request.headers.get("X-Test-Remote")
    return await handler(request.clone(remote=remote) if remote else request)


async def client_for(store: Store, settings: Settings) -> TestClient:
    app = web.Application(middlewares=[pretend_remote])
    app.add_routes(Api(store, lambda: settings).routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def submit(store: Store) -> str:
    settings = Settings()
    spec = parse_workflow(
        '{"name": "w", "steps": [{"name": "a", "agent": "echo"}]}',
        known_agents=services.known_agents(settings),
        settings=settings,
    )
    return await services.submit_workflow(store, spec, "cli:test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_roles_and_rotation(store: Store) -> None:
    wid = await submit(store)
    client = await client_for(store, settings_with_tokens())
    try:
        assert (await client.get("/api/stats")).status == 401
        assert (await client.get("/api/stats", headers=bearer("wrong"))).status == 401
        ok = await client.get("/api/stats", headers=bearer(READER))
        assert ok.status == 200
        assert (await ok.json())["steps"]["READY"] == 1
        denied = await client.post(
            "/api/cancel", json={"workflow_id": wid, "mode": "soft"}, headers=bearer(READER)
        )
        assert denied.status == 403
        for token in (ADMIN_OLD, ADMIN_NEW):  # two admin tokens valid at once
            resp = await client.post("/api/reload-settings", json={}, headers=bearer(token))
            assert resp.status == 200
        unknown = await client.post(
            "/api/reload-settings", json={"node": "n1"}, headers=bearer(ADMIN_NEW)
        )
        assert unknown.status == 404  # n1 is not in the mesh
        assert "not in the mesh" in (await unknown.json())["error"]
        resp = await client.post(
            "/api/cancel", json={"workflow_id": wid, "mode": "soft"}, headers=bearer(ADMIN_NEW)
        )
        assert resp.status == 200
        assert (await resp.json())["cancelled"] == 1
        login = await client.post("/api/login", json={"token": READER})
        assert login.status == 200
        cookie = await client.get(f"/api/workflows/{wid}")  # the session cookie, no header
        assert cookie.status == 200
        assert (await cookie.json())["workflow"]["status"] == "CANCELLED"
    finally:
        await client.close()
    audit = await services.query_audit(store, task_id=wid, action="cancel")
    assert audit[0].actor == "web:admin-2026@127.0.0.1"


async def test_no_tokens_means_loopback_only(store: Store) -> None:
    client = await client_for(store, Settings())
    try:
        resp = await client.get("/api/members")
        assert resp.status == 200  # the test client connects over loopback
        assert await resp.json() == []
        for loopback in ("127.0.0.2", "::1", "::ffff:127.0.0.1"):
            resp = await client.get("/api/members", headers={"X-Test-Remote": loopback})
            assert resp.status == 200, loopback
        for remote in ("192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"):
            resp = await client.get("/api/members", headers={"X-Test-Remote": remote})
            assert resp.status == 401, remote
            assert "loopback clients only" in (await resp.json())["error"]
            write = await client.post(
                "/api/reload-settings", json={}, headers={"X-Test-Remote": remote}
            )
            assert write.status == 401, remote
    finally:
        await client.close()
    assert await services.query_audit(store, action=services.RELOAD_REQUEST_ACTION) == []


async def test_errors_are_json_lines(store: Store) -> None:
    client = await client_for(store, Settings())
    try:
        missing = await client.get("/api/workflows/nope")
        assert missing.status == 404
        assert "nope" in (await missing.json())["error"]
        bad = await client.get("/api/tasks?status=SIDEWAYS")
        assert bad.status == 400
        bad_body = await client.post(
            "/api/replay", data=b"not json", headers={"Content-Type": "application/json"}
        )
        assert bad_body.status == 400
        form = await client.post("/api/replay", data=b'{"step_id": "x"}')  # text/plain-ish
        assert form.status == 415
        page = await client.get("/")
        assert page.status == 200
        assert "RelayMesh console" in await page.text()
        spec = await client.get("/api/openapi.json")
        assert "/api/replay-batch" in (await spec.json())["paths"]
    finally:
        await client.close()


async def test_replay_batch_over_http_is_idempotent(store: Store) -> None:
    wid = await submit(store)
    await services.cancel_workflow(store, wid, "soft", "cli:test")
    client = await client_for(store, Settings())
    try:
        body = {"status": "CANCELLED", "limit": 10}
        first = await (await client.post("/api/replay-batch", json=body)).json()
        second = await (await client.post("/api/replay-batch", json=body)).json()
        assert first == {"replayed": 1}
        assert second == {"replayed": 0}
    finally:
        await client.close()


async def test_events_stream_pushes_stats_members_and_conflicts(store: Store) -> None:
    client = await client_for(store, Settings())
    try:
        resp = await client.get("/api/events")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        seen: set[str] = set()
        while len(seen) < 3:
            line = (await resp.content.readline()).decode()
            if line.startswith("event: "):
                seen.add(line.removeprefix("event: ").strip())
        assert seen == {"stats", "members", "conflicts"}
        resp.close()
    finally:
        await client.close()


async def test_gossip_sync_is_an_admin_write(store: Store) -> None:
    """Direct on the serving node; readonly refused; no node, or an unknown one, is one line."""
    calls: list[int] = []

    async def sync_here() -> dict[str, object]:
        calls.append(1)
        return {"node": "n1", "peer": "n2@127.0.0.1:7947", "merged_here": 1, "merged_there": 0}

    settings = settings_with_tokens()
    app = web.Application()
    app.add_routes(Api(store, lambda: settings, local_node="n1", gossip_sync=sync_here).routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        body = {"node": "n1"}
        refused = await client.post("/api/gossip-sync", json=body, headers=bearer(READER))
        assert refused.status == 403 and calls == []
        ok = await client.post("/api/gossip-sync", json=body, headers=bearer(ADMIN_NEW))
        assert ok.status == 200 and (await ok.json())["merged_here"] == 1 and calls == [1]
        missing = await client.post("/api/gossip-sync", json={}, headers=bearer(ADMIN_NEW))
        assert missing.status == 400 and (await missing.json()) == {"error": "node is required"}
        unknown = await client.post(
            "/api/gossip-sync", json={"node": "zz"}, headers=bearer(ADMIN_NEW)
        )
        assert unknown.status == 404
        assert (await unknown.json())["error"] == "no member named 'zz' in the mesh table"
        stats = await (await client.get("/api/stats", headers=bearer(READER))).json()
        assert stats["dispatch"]["rate"] is None and stats["dispatch"]["total"] == 0
    finally:
        await client.close()
