"""The authorization matrix on a real ``relaymesh serve-web`` process: every operation
of ``OPENAPI`` x every kind of caller → the expected status.

Callers: no credentials, a bearer token of each role, a wrong token, a cleared session
cookie (what ``/api/logout`` leaves), an expired one (a cookie for a token no longer
configured) and a live login cookie. A caller without valid credentials gets 401; one
whose role is below the route's ``x-role`` gets 403; anyone else gets the route's own
answer (the ``OK`` table; an operation missing from it must at least not be refused
for authorization, so a new route is checked as soon as it is documented).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from relaymesh.web.api import COOKIE_NAME, OPENAPI
from tests.integration.web.conftest import WEB_TOKENS

# The expected ranking, written out here rather than taken from the code under test.
RANK = {"readonly": 0, "submitter": 1, "admin": 2}
WRONG = "not-a-configured-token"
EXPIRED = "a-token-removed-by-a-reload"
WORKFLOW = {"name": "matrix", "steps": [{"name": "a", "agent": "echo"}]}

# (method, documented path) -> (concrete path, JSON body, statuses a permitted caller gets)
OK: dict[tuple[str, str], tuple[str, Any, set[int]]] = {
    ("get", "/api/members"): ("/api/members", None, {200}),
    ("get", "/api/stats"): ("/api/stats", None, {200}),
    ("get", "/api/tasks"): ("/api/tasks", None, {200}),
    ("get", "/api/workflows"): ("/api/workflows", None, {200}),
    ("get", "/api/workflows/{workflow_id}"): ("/api/workflows/nosuch", None, {404}),
    ("get", "/api/dead"): ("/api/dead", None, {200}),
    ("get", "/api/conflicts"): ("/api/conflicts", None, {200}),
    ("get", "/api/audit-query"): ("/api/audit-query", None, {200}),
    ("get", "/api/schedules"): ("/api/schedules", None, {200}),
    ("get", "/api/events"): ("/api/events", None, {200}),
    ("post", "/api/workflows"): ("/api/workflows", WORKFLOW, {200, 201}),
    ("post", "/api/cancel"): ("/api/cancel", {"workflow_id": "nosuch", "mode": "soft"}, {404}),
    ("post", "/api/replay"): ("/api/replay", {"step_id": "nosuch"}, {404}),
    ("post", "/api/replay-batch"): (
        "/api/replay-batch",
        {"status": "DEAD_LETTER", "limit": 1},
        {200},
    ),
    ("post", "/api/reload-settings"): ("/api/reload-settings", {}, {200}),
}
CALLERS = (
    "none",
    "readonly",
    "submitter",
    "admin",
    "wrong",
    "cleared-cookie",
    "expired-cookie",
    "login-submitter",
)
OPERATIONS = sorted(
    (method, path)
    for path, ops in OPENAPI["paths"].items()
    for method in ops
    if path not in ("/api/login", "/api/logout")
)


def _cookie(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def credentials(base: str, caller: str) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(headers, cookies, role) for ``caller``; role None when it has no valid credential."""
    if caller in WEB_TOKENS:
        return {"Authorization": f"Bearer {WEB_TOKENS[caller]}"}, {}, caller
    if caller == "wrong":
        return {"Authorization": f"Bearer {WRONG}"}, {}, None
    if caller == "cleared-cookie":
        return {}, {COOKIE_NAME: ""}, None
    if caller == "expired-cookie":
        return {}, {COOKIE_NAME: _cookie(EXPIRED)}, None
    if caller == "login-submitter":
        answer = requests.post(
            f"{base}/api/login", json={"token": WEB_TOKENS["submitter"]}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return {}, {COOKIE_NAME: answer.cookies[COOKIE_NAME]}, "submitter"
    return {}, {}, None


def call(base: str, method: str, path: str, caller: str) -> requests.Response:
    headers, cookies, _ = credentials(base, caller)
    concrete, body, _ = OK.get((method, path), (path.replace("{", "").replace("}", ""), {}, set()))
    if method == "post":
        headers = {**headers, "Content-Type": "application/json", "Idempotency-Key": "matrix"}
        data = json.dumps(body if body is not None else {})
        return requests.post(
            f"{base}{concrete}", data=data, headers=headers, cookies=cookies, timeout=10
        )
    # stream: /api/events answers its status at once and then streams; close it then.
    with requests.get(
        f"{base}{concrete}", headers=headers, cookies=cookies, timeout=10, stream=True
    ) as response:
        if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
            response.content  # noqa: B018 - read the body before the connection closes
        return response


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_authorization_matrix(serve_web: str, method: str, path: str, caller: str) -> None:
    need = OPENAPI["paths"][path][method]["x-role"]
    _, _, role = credentials(serve_web, caller)
    response = call(serve_web, method, path, caller)
    where = f"{caller} {method.upper()} {path}: {response.status_code}"
    if role is None:
        assert response.status_code == 401, where
    elif RANK[role] < RANK[need]:
        assert response.status_code == 403, where
        assert need in response.json()["error"], where
    elif (method, path) in OK:
        assert response.status_code in OK[(method, path)][2], f"{where} {response.text[:200]}"
    else:
        assert response.status_code not in (401, 403) and response.status_code < 500, where


def test_only_submit_is_open_to_submitters() -> None:
    """The role table itself: submitters may write exactly one thing."""
    sessions = ("/api/login", "/api/logout")
    writes = {
        p: ops["post"]["x-role"]
        for p, ops in OPENAPI["paths"].items()
        if "post" in ops and p not in sessions
    }
    assert writes.pop("/api/workflows") == "submitter"
    assert set(writes.values()) == {"admin"}
    reads = {ops["get"]["x-role"] for ops in OPENAPI["paths"].values() if "get" in ops}
    assert reads == {"readonly"}


@pytest.mark.parametrize(
    ("caller", "status"),
    [("admin", 200), ("submitter", 200), ("readonly", 200), ("wrong", 401), ("none", 400)],
)
def test_login_by_role(serve_web: str, caller: str, status: int) -> None:
    token = WEB_TOKENS.get(caller, WRONG if caller == "wrong" else None)
    body = {"token": token} if token else {}
    answer = requests.post(f"{serve_web}/api/login", json=body, timeout=10)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["role"] == caller
    logout = requests.post(f"{serve_web}/api/logout", timeout=10)
    assert logout.status_code == 200
    assert logout.cookies.get(COOKIE_NAME) in (None, "")
