"""POST /api/workflows and GET /api/workflows over a real socket, on both stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaymesh.model import StepStatus
from relaymesh.ops import services
from relaymesh.settings import Settings, TokenSettings, WebSettings
from relaymesh.store import Store
from relaymesh.web.api import Api, hash_token

pytestmark = pytest.mark.asyncio

ADMIN, READER = "admin-secret", "reader-secret"
WORKFLOW = {
    "name": "etl",
    "steps": [{"name": "a", "agent": "echo"}, {"name": "b", "agent": "echo", "depends_on": ["a"]}],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[TestClient]:
    settings = Settings(
        web=WebSettings(
            tokens=[
                TokenSettings(name="ci-bot", token_sha256=hash_token(ADMIN), role="admin"),
                TokenSettings(name="grafana", token_sha256=hash_token(READER), role="readonly"),
            ]
        )
    )
    app = web.Application()
    app.add_routes(Api(store, lambda: settings).routes())
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    try:
        yield test_client
    finally:
        await test_client.close()


async def post(
    client: TestClient, doc: object, key: str | None = None, token: str = ADMIN
) -> tuple[int, dict[str, str]]:
    headers = {**bearer(token), "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = await client.post("/api/workflows", data=json.dumps(doc), headers=headers)
    return resp.status, await resp.json()


async def test_submit_is_201_then_200_for_a_repeated_key(client: TestClient, store: Store) -> None:
    status, body = await post(client, WORKFLOW, key="order-17")
    assert status == 201
    wid = body["id"]
    assert await post(client, WORKFLOW, key="order-17") == (200, {"id": wid})
    (audit,) = await services.query_audit(store, action="submit")
    assert audit.actor == "web:ci-bot@127.0.0.1" and audit.target == wid
    assert (await store.step_counts())[StepStatus.READY] == 1
    without_key = await post(client, WORKFLOW)
    assert without_key[0] == 201 and without_key[1]["id"] != wid


async def test_twenty_concurrent_posts_with_one_key_make_one_workflow(
    client: TestClient, store: Store
) -> None:
    results = await asyncio.gather(*(post(client, WORKFLOW, key="same") for _ in range(20)))
    assert sorted(status for status, _ in results) == [200] * 19 + [201]
    assert len({body["id"] for _, body in results}) == 1
    assert len(await store.list_workflows()) == 1


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"name": "x", "steps": [{"name": "a", "agent": "nosuchagent"}]}, "nosuchagent"),
        ({"name": "x", "steps": [{"name": "a", "agent": "echo", "depends_on": ["a"]}]}, "a"),
        (["not", "an", "object"], ""),
    ],
)
async def test_an_invalid_workflow_is_400_one_line_and_writes_nothing(
    client: TestClient, store: Store, doc: object, needle: str
) -> None:
    status, body = await post(client, doc, key="bad")
    assert status == 400
    assert set(body) == {"error"} and "\n" not in body["error"] and needle in body["error"]
    assert await store.list_workflows() == []
    assert await services.query_audit(store, action="submit") == []
    # The key was not consumed by the failed submit.
    assert (await post(client, WORKFLOW, key="bad"))[0] == 201


async def test_a_reader_cannot_submit(client: TestClient, store: Store) -> None:
    status, body = await post(client, WORKFLOW, token=READER)
    assert status == 403 and "error" in body
    assert await store.list_workflows() == []


async def test_get_workflows_lists_newest_first_and_pages(client: TestClient) -> None:
    ids = [(await post(client, WORKFLOW, key=f"k{i}"))[1]["id"] for i in range(3)]
    resp = await client.get("/api/workflows", params={"limit": "2"}, headers=bearer(READER))
    assert resp.status == 200
    first = await resp.json()
    assert [w["id"] for w in first] == ids[::-1][:2]
    assert first[0]["idempotency_key"] == "k2"
    assert first[0]["steps"] == {"READY": 1, "PENDING": 1}
    assert set(first[0]) == {
        "id",
        "name",
        "status",
        "created_at",
        "finished_at",
        "idempotency_key",
        "schedule",
        "steps",
    }
    cursor = resp.headers["X-Next-Cursor"]
    rest = await client.get(
        "/api/workflows", params={"limit": "2", "cursor": cursor}, headers=bearer(READER)
    )
    assert [w["id"] for w in await rest.json()] == ids[:1]
    assert "X-Next-Cursor" not in rest.headers
    bad = await client.get("/api/workflows", params={"status": "nope"}, headers=bearer(READER))
    assert bad.status == 400
