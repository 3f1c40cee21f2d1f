"""The JSON API under ``/api`` (each node with ``--http``, and ``serve-web``).

Handlers parse the request, call one function of ``relaymesh.ops.services`` and
render JSON; they hold no logic. A GET never changes anything; every write is a
POST audited as ``web:<token name>@<client address>``.

``GET /`` serves the console, a static page whose script reads this API (and its SSE
stream ``/api/events``) with the caller's token.

Authentication (``[web] tokens`` in the settings, re-read on every request so a
reload rotates tokens without a restart): ``Authorization: Bearer <token>`` or the
console's ``relaymesh_token`` cookie; the token's SHA-256 (hex) is compared with
each configured ``token_sha256`` in constant time. Reads need ``readonly`` or
``admin``, writes ``admin``; any number of admin tokens may be valid at once, so a
new one is added before the old one is removed (rotation). With no token configured
at all, only loopback clients are served (as ``local``, admin) and everybody else
gets 401.

Writes must be ``Content-Type: application/json`` (415 otherwise): a page on another
site cannot send that without a CORS preflight, which this API never grants, so the
loopback-without-tokens mode and the cookie cannot be abused cross-site.

Errors: 400 bad input, 401 no valid token, 403 role too low, 404 unknown id,
409 not applicable in the current state, 415 a write that is not JSON, 503 store
unavailable; body
``{"error": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from relaymesh.exceptions import (
    InvalidStateError,
    NotFoundError,
    RelayMeshError,
    StoreUnavailableError,
    WorkflowError,
)
from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.ops import services, submits
from relaymesh.settings import Settings
from relaymesh.store.base import Store

__all__ = ["COOKIE_NAME", "Api", "Principal", "hash_token"]

COOKIE_NAME = "relaymesh_token"
_MAX_LIMIT = 10_000
_CONSOLE_HTML = (Path(__file__).parent / "static" / "console.html").read_text(encoding="utf-8")
_SSE_INTERVAL_S = 2.0


def hash_token(token: str) -> str:
    """The ``token_sha256`` to put in the settings for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    address: str

    @property
    def actor(self) -> str:
        return services.web_actor(self.name, self.address)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Api:
    """Routes over one store. ``settings`` is called per request (reloads apply). A node
    builds its ``Api`` before its store is open and ``attach``es the store later; until
    then every route but the OpenAPI document answers 503."""

    def __init__(self, store: Store | None, settings: Callable[[], Settings]) -> None:
        self._store_or_none = store
        self._settings = settings

    def attach(self, store: Store) -> None:
        self._store_or_none = store

    @property
    def _store(self) -> Store:
        if self._store_or_none is None:
            raise StoreUnavailableError("the store is not open yet")
        return self._store_or_none

    # -- wiring ------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        r = self._read
        w = self._write
        return [
            web.get("/", self.console),
            web.get("/api/openapi.json", self.openapi),
            web.get("/api/members", r(self.members)),
            web.get("/api/stats", r(self.stats)),
            web.get("/api/tasks", r(self.tasks)),
            web.get("/api/workflows/{workflow_id}", r(self.workflow)),
            web.get("/api/dead", r(self.dead)),
            web.get("/api/conflicts", r(self.conflicts)),
            web.get("/api/audit-query", r(self.audit_query)),
            web.get("/api/events", r(self.events)),
            web.post("/api/cancel", w(self.cancel)),
            web.post("/api/replay", w(self.replay)),
            web.post("/api/replay-batch", w(self.replay_batch)),
            web.post("/api/reload-settings", w(self.reload_settings)),
            *self._workflow_routes(),
        ]

    def authenticate(self, request: web.Request) -> Principal:
        """The caller, or ``HTTPUnauthorized``."""
        address = request.remote or "?"
        tokens = self._settings().web.tokens
        if not tokens:
            if _is_loopback(address):
                return Principal("local", "admin", address)
            raise _error(web.HTTPUnauthorized, "no tokens configured: loopback clients only")
        presented = _presented_token(request)
        if presented is None:
            raise _error(web.HTTPUnauthorized, "a bearer token is required")
        digest = hash_token(presented)
        for token in tokens:
            if hmac.compare_digest(digest, token.token_sha256.lower()):
                return Principal(token.name, token.role, address)
        raise _error(web.HTTPUnauthorized, "invalid token")

    def _read(self, handler: Callable[[web.Request, Principal], Awaitable[Any]]) -> Handler:
        return self._guarded(handler, write=False)

    def _write(self, handler: Callable[[web.Request, Principal], Awaitable[Any]]) -> Handler:
        return self._guarded(handler, write=True)

    def _guarded(
        self, handler: Callable[[web.Request, Principal], Awaitable[Any]], *, write: bool
    ) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            principal = self.authenticate(request)
            if write and principal.role != "admin":
                raise _error(web.HTTPForbidden, "an admin token is required for writes")
            if write and request.content_type != "application/json":
                # A cross-site page can send text/plain POSTs without a CORS preflight;
                # requiring JSON makes the browser ask first, and nobody answers it.
                raise _error(web.HTTPUnsupportedMediaType, "writes take application/json")
            try:
                result = await handler(request, principal)
            except NotFoundError as exc:
                raise _error(web.HTTPNotFound, str(exc)) from exc
            except (WorkflowError, ValueError) as exc:
                raise _error(web.HTTPBadRequest, str(exc)) from exc
            except InvalidStateError as exc:
                raise _error(web.HTTPConflict, str(exc)) from exc
            except StoreUnavailableError as exc:
                raise _error(web.HTTPServiceUnavailable, str(exc)) from exc
            except RelayMeshError as exc:
                raise _error(web.HTTPInternalServerError, str(exc)) from exc
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(result, dumps=_dumps)

        return wrapped

    # -- reads ---------------------------------------------------------------------------

    async def console(self, request: web.Request) -> web.Response:
        """The console page; it holds no data, its script calls the API with the caller's
        token (cookie), so serving it needs no token."""
        return web.Response(text=_CONSOLE_HTML, content_type="text/html")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI, dumps=_dumps)

    async def members(self, request: web.Request, who: Principal) -> Any:
        return [m.to_json() for m in await services.list_members(self._store)]

    async def stats(self, request: web.Request, who: Principal) -> Any:
        return (await services.stats(self._store)).to_json()

    async def tasks(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        steps = await services.list_tasks(
            self._store,
            status=_status(q.get("status")),
            workflow_id=q.get("workflow") or q.get("workflow_id") or None,
            agent=q.get("agent") or None,
            limit=_limit(q.get("limit"), 100),
        )
        return [s.to_json() for s in steps]

    async def workflow(self, request: web.Request, who: Principal) -> Any:
        wf, steps = await services.workflow_status(self._store, request.match_info["workflow_id"])
        return {"workflow": wf.to_json(), "steps": [s.to_json() for s in steps]}

    async def dead(self, request: web.Request, who: Principal) -> Any:
        steps = await services.list_dead(self._store, limit=_limit(request.query.get("limit"), 100))
        return [s.to_json() for s in steps]

    async def conflicts(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        since_ms = _time(q.get("since"))
        limit = _limit(q.get("limit"), 100)
        if q.get("report") in ("1", "true", "yes"):
            rep = await services.conflict_report(self._store, since_ms=since_ms, top=limit)
            return {
                "total": rep.total,
                "by_step": [{"step_id": k, "count": n} for k, n in rep.by_step],
                "by_node": [{"node": k, "count": n} for k, n in rep.by_node],
                "by_event": [{"event": k, "count": n} for k, n in rep.by_event],
            }
        rows = await services.list_conflicts(self._store, since_ms=since_ms, limit=limit)
        return [c.to_json() for c in rows]

    async def audit_query(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        rows = await services.query_audit(
            self._store,
            task_id=q.get("task_id") or None,
            action=q.get("action") or None,
            from_ms=_time(q.get("from")),
            to_ms=_time(q.get("to")),
            limit=_limit(q.get("limit"), 100),
        )
        return [r.to_json() for r in rows]

    async def events(self, request: web.Request, who: Principal) -> web.StreamResponse:
        """Server-sent events: ``stats``, ``members``, ``conflicts`` when they change."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        last: dict[str, str] = {}
        while True:
            stats = (await services.stats(self._store)).to_json()
            stats.pop("at", None)  # changes every time; not a change worth sending
            docs: dict[str, Any] = {
                "stats": stats,
                "members": [m.to_json() for m in await services.list_members(self._store)],
                "conflicts": [c.to_json() for c in await services.list_conflicts(self._store)],
            }
            for event, doc in docs.items():
                body = _dumps(doc)
                if last.get(event) != body:
                    last[event] = body
                    await response.write(f"event: {event}\ndata: {body}\n\n".encode())
            await asyncio.sleep(_SSE_INTERVAL_S)

    # -- writes --------------------------------------------------------------------------

    async def cancel(self, request: web.Request, who: Principal) -> Any:
        body = await _body(request)
        workflow_id = _required(body, "workflow_id")
        mode = str(body.get("mode", "soft"))
        result = await services.cancel_workflow(self._store, workflow_id, mode, who.actor)
        return {
            "workflow_id": workflow_id,
            "mode": mode,
            "cancelled": result.cancelled,
            "fenced_running": list(result.fenced_running),
        }

    async def replay(self, request: web.Request, who: Principal) -> Any:
        body = await _body(request)
        step = await services.replay_step(self._store, _required(body, "step_id"), who.actor)
        return step.to_json()

    async def replay_batch(self, request: web.Request, who: Principal) -> Any:
        body = await _body(request)
        status = _status(str(body.get("status", StepStatus.DEAD_LETTER.value)))
        assert status is not None
        count = await services.replay_batch(
            self._store,
            status=status,
            limit=_limit(body.get("limit"), 100),
            actor=who.actor,
            agent=body.get("agent") or None,
            workflow_id=body.get("workflow_id") or body.get("workflow") or None,
        )
        return {"replayed": count}

    async def reload_settings(self, request: web.Request, who: Principal) -> Any:
        body = await _body(request)
        node = body.get("node") or None
        req = await services.request_reload(
            self._store, node=None if node is None else str(node), actor=who.actor
        )
        return {"request_id": req.id, "node": req.target, "at": req.at_ms}

    # -- submit over HTTP and the workflow listing -----------------------------------------

    def _workflow_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/workflows", self._read(self.list_workflows)),
            web.post("/api/workflows", self._write(self.submit_workflow)),
            web.get("/api/schedules", self._read(self.schedules)),
        ]

    async def submit_workflow(self, request: web.Request, who: Principal) -> Any:
        """The workflow file's JSON as the body; 201 when new, 200 for a repeated
        ``Idempotency-Key`` (the first workflow's id, nothing written)."""
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("request body is not UTF-8") from None
        spec = submits.parse_submitted_workflow(text, self._settings())
        key = request.headers.get("Idempotency-Key")
        outcome = await submits.submit_workflow_once(self._store, spec, who.actor, key)
        status = 201 if outcome.created else 200
        return web.json_response({"id": outcome.workflow_id}, status=status, dumps=_dumps)

    async def list_workflows(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        page, following = await submits.list_workflows(
            self._store,
            status=_workflow_status(q.get("status")),
            name=q.get("name") or None,
            since_ms=_time(q.get("since")),
            cursor=q.get("cursor") or None,
            limit=_limit(q.get("limit"), 100),
        )
        headers = {"X-Next-Cursor": following} if following else {}
        return web.json_response([w.to_json() for w in page], headers=headers, dumps=_dumps)

    async def schedules(self, request: web.Request, who: Principal) -> Any:
        from relaymesh.ops.schedules import list_schedules

        return await list_schedules(self._store, self._settings())


# -- helpers ---------------------------------------------------------------------------


def _dumps(doc: Any) -> str:
    return json.dumps(doc, default=str, separators=(",", ":"))


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=_dumps({"error": message}), content_type="application/json")


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie or None


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("request body must be a JSON object")
    return doc


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {key!r} is required")
    return value


def _status(value: str | None) -> StepStatus | None:
    if not value:
        return None
    try:
        return StepStatus(value.upper())
    except ValueError:
        allowed = ", ".join(s.value for s in StepStatus)
        raise ValueError(f"unknown status {value!r} (expected one of {allowed})") from None


def _workflow_status(value: str | None) -> WorkflowStatus | None:
    if not value:
        return None
    try:
        return WorkflowStatus(value.upper())
    except ValueError:
        allowed = ", ".join(s.value for s in WorkflowStatus)
        raise ValueError(f"unknown status {value!r} (expected one of {allowed})") from None


def _limit(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"limit must be an integer, got {value!r}") from None
    if not 1 <= n <= _MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {_MAX_LIMIT}")
    return n


def _time(value: str | None) -> int | None:
    return None if not value else services.parse_time_ms(value)


def _op(summary: str, *, write: bool = False, params: list[str] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK"},
            "401": {"description": "no valid token"},
            **({"403": {"description": "admin token required"}} if write else {}),
        },
    }
    if params:
        op["parameters"] = [
            {"name": p, "in": "query", "required": False, "schema": {"type": "string"}}
            for p in params
        ]
    if write:
        op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return op


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "RelayMesh API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/api/members": {"get": _op("Members as the mesh last reported them")},
        "/api/stats": {"get": _op("Step counts, queue lag, members by status")},
        "/api/tasks": {"get": _op("List steps", params=["status", "workflow", "agent", "limit"])},
        "/api/workflows/{workflow_id}": {
            "get": {
                **_op("A workflow and its steps"),
                "parameters": [
                    {
                        "name": "workflow_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            }
        },
        "/api/dead": {"get": _op("Dead letters", params=["limit"])},
        "/api/conflicts": {
            "get": _op("Lease conflicts (report=1 aggregates)", params=["since", "limit", "report"])
        },
        "/api/audit-query": {
            "get": _op("Audit trail", params=["task_id", "action", "from", "to", "limit"])
        },
        "/api/events": {"get": _op("Server-sent events: stats, members, conflicts")},
        "/api/cancel": {"post": _op("Cancel a workflow {workflow_id, mode}", write=True)},
        "/api/replay": {"post": _op("Replay one dead letter {step_id}", write=True)},
        "/api/replay-batch": {
            "post": _op("Replay many {status, limit, agent, workflow_id}", write=True)
        },
        "/api/reload-settings": {"post": _op("Ask node(s) to reload {node}", write=True)},
        "/api/schedules": {
            "get": _op("Configured schedules: expression, next fire, last fire and its workflow")
        },
        "/api/workflows": {
            "get": _op(
                "List workflows, newest first; the X-Next-Cursor header pages on",
                params=["status", "name", "since", "limit", "cursor"],
            ),
            "post": {
                **_op(
                    "Submit a workflow (the workflow file's JSON as the body); 201 {id} when "
                    "new, 200 {id} of the first for a repeated Idempotency-Key, 400 {error}",
                    write=True,
                ),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
            },
        },
    },
}
