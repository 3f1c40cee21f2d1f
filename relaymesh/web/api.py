"""The JSON API under ``/api`` (each node with ``--http``, and ``serve-web``).

Handlers parse the request, call one function of ``relaymesh.ops.services`` and
render JSON; they hold no logic. A GET never changes anything; every write is a
POST audited as ``web:<token name>@<client address>`` with the client's user agent
in the audit row's details.

``GET /`` serves the console, a static page whose script reads this API (and its SSE
stream ``/api/events``) with the caller's session cookie.

Authentication (``[web] tokens`` in the settings, re-read on every request so a
reload rotates tokens without a restart): ``Authorization: Bearer <token>`` or the
``relaymesh_session`` cookie that ``POST /api/login`` sets (HttpOnly, SameSite=Strict:
page scripts cannot read it, other sites cannot send it); the token's SHA-256 (hex)
is compared with each configured ``token_sha256`` in constant time. Roles are ranked
``readonly`` < ``submitter`` < ``admin`` and every route names the least role it needs
(``authorize``, the one rule; the OpenAPI document carries it as ``x-role``): reads
need ``readonly``, ``POST /api/workflows`` needs ``submitter``, every other write
``admin``. Any number of tokens may be valid at once, so a new one is added before
the old one is removed (rotation). With no token configured
at all, only loopback clients are served (as ``local``, admin) and everybody else
gets 401; a node refuses to serve HTTP beyond loopback without tokens
(``relaymesh.exposure``).

Cross-site defences, on top of the ``Host`` check every route sits behind
(``relaymesh.web.origin``, 421): a write whose ``Origin`` is present and not the
console's own origin is refused (403), and writes must be ``Content-Type:
application/json`` (415 otherwise), which a page on another site cannot send
without a CORS preflight that this API never grants.

``/api/events`` streams are capped (``[web] max_streams``, ``max_streams_per_token``;
429 beyond), end when the client goes away, and re-check the caller's token on every
round, so a token removed by a reload ends its streams.

Errors: 400 bad input, 401 no valid token, 403 role too low or foreign origin, 404
unknown id, 409 not applicable in the current state, 415 a write that is not JSON,
421 unknown Host, 429 too many streams, 503 store unavailable, 500 a bug (logged,
never a traceback in the answer); body ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
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
from relaymesh.exposure import is_loopback_host
from relaymesh.logging import get_logger
from relaymesh.model import Actor, StepStatus, WorkflowStatus
from relaymesh.ops import paging, services, submits
from relaymesh.settings import Settings
from relaymesh.store.base import Store
from relaymesh.web import params
from relaymesh.web.origin import origin_allowed
from relaymesh.web.streams import StreamSlots

__all__ = ["COOKIE_NAME", "OPENAPI", "ROLES", "Api", "Principal", "authorize", "hash_token"]

log = get_logger(__name__)

COOKIE_NAME = "relaymesh_session"
MAX_TOKEN_CHARS = 4096
SSE_INTERVAL_S = 2.0
"""How often an event stream polls the store and re-checks the caller's token."""
GOSSIP_SYNC_TIMEOUT_MS = 10_000
"""How long POST /api/gossip-sync waits for another node's answer (it polls every 2 s)."""
_CONSOLE_HTML = (Path(__file__).parent / "static" / "console.html").read_text(encoding="utf-8")


ROLES = ("readonly", "submitter", "admin")
"""Token roles, weakest first: a role may do what every role before it may."""


def authorize(role: str, need: str) -> str | None:
    """The authorization rule: None when ``role`` may call a route needing ``need``,
    else the one-line refusal (403). An unknown role may do nothing."""
    if role in ROLES and ROLES.index(role) >= ROLES.index(need):
        return None
    return f"a {need} token is required for this route (this token is {role})"


def hash_token(token: str) -> str:
    """The ``token_sha256`` to put in the settings for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    address: str
    user_agent: str | None = None

    @property
    def actor(self) -> Actor:
        return services.web_actor(self.name, self.address, self.user_agent)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request, Principal], Awaitable[Any]]


class Api:
    """Routes over one store. ``settings`` is called per request (reloads apply). A node
    builds its ``Api`` before its store is open and ``attach``es the store later; until
    then every route but the OpenAPI document answers 503."""

    def __init__(
        self,
        store: Store | None,
        settings: Callable[[], Settings],
        *,
        sse_interval_s: float = SSE_INTERVAL_S,
        local_node: str | None = None,
        gossip_sync: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._store_or_none = store
        self._settings = settings
        self._local_node = local_node
        self._gossip_sync = gossip_sync
        """The serving node's own exchange: a gossip-sync for it runs here, directly."""
        self._sse_interval_s = sse_interval_s
        self.streams = StreamSlots(
            lambda: (settings().web.max_streams, settings().web.max_streams_per_token)
        )

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
            web.post("/api/login", self.login),
            web.post("/api/logout", self.logout),
            web.get("/api/members", r(self.members)),
            web.get("/api/stats", r(self.stats)),
            web.get("/api/tasks", r(self.tasks)),
            web.get("/api/workflows/{workflow_id}", r(self.workflow)),
            web.get("/api/dead", r(self.dead)),
            web.get("/api/conflicts", r(self.conflicts)),
            web.get("/api/audit-query", r(self.audit_query)),
            web.get("/api/ownership-events", r(self.ownership_events)),
            web.get("/api/events", r(self.events)),
            web.post("/api/cancel", w(self.cancel)),
            web.post("/api/replay", w(self.replay)),
            web.post("/api/replay-batch", w(self.replay_batch)),
            web.post("/api/reload-settings", w(self.reload_settings)),
            web.post("/api/gossip-sync", w(self.gossip_sync)),
            *self._workflow_routes(),
        ]

    def authenticate(self, request: web.Request) -> Principal:
        """The caller, or ``HTTPUnauthorized``."""
        address = request.remote or "?"
        user_agent = request.headers.get("User-Agent")
        tokens = self._settings().web.tokens
        if not tokens:
            if is_loopback_host(address):
                return Principal("local", "admin", address, user_agent)
            raise _error(web.HTTPUnauthorized, "no tokens configured: loopback clients only")
        presented = _presented_token(request)
        if presented is None:
            raise _error(web.HTTPUnauthorized, "a bearer token or a login session is required")
        principal = self._match(presented, address, user_agent)
        if principal is None:
            raise _error(web.HTTPUnauthorized, "invalid token")
        return principal

    def _match(self, presented: str, address: str, user_agent: str | None) -> Principal | None:
        digest = hash_token(presented)
        found: Principal | None = None
        # Every configured digest is compared (constant time each), match or not.
        for token in self._settings().web.tokens:
            if hmac.compare_digest(digest, token.token_sha256.lower()) and found is None:
                found = Principal(token.name, token.role, address, user_agent)
        return found

    def _read(self, handler: Route) -> Handler:
        return self._guarded(handler, write=False, need="readonly")

    def _write(self, handler: Route) -> Handler:
        return self._guarded(handler, write=True, need="admin")

    def _submit(self, handler: Route) -> Handler:
        return self._guarded(handler, write=True, need="submitter")

    def _guarded(self, handler: Route, *, write: bool, need: str) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if write:
                _check_origin(request)
            principal = self.authenticate(request)
            refused = authorize(principal.role, need)
            if refused is not None:
                raise _error(web.HTTPForbidden, refused)
            if write and request.content_type != "application/json":
                # A cross-site page can send text/plain POSTs without a CORS preflight;
                # requiring JSON makes the browser ask first, and nobody answers it.
                raise _error(web.HTTPUnsupportedMediaType, "writes take application/json")
            result = await _answer(request, lambda: handler(request, principal))
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(result, dumps=_dumps)

        return wrapped

    # -- sessions ------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        """``token`` as a form field or in a JSON object: sets the session cookie."""
        _check_origin(request)

        async def check() -> tuple[Principal, str]:
            token = await _login_token(request)
            if not self._settings().web.tokens:
                raise ValueError("no tokens configured: loopback clients need no login")
            principal = self._match(token, request.remote or "?", request.headers.get("User-Agent"))
            if principal is None:
                raise _error(web.HTTPUnauthorized, "invalid token")
            return principal, token

        principal, token = await _answer(request, check)
        response = web.json_response({"name": principal.name, "role": principal.role})
        response.set_cookie(
            COOKIE_NAME,
            _encode_cookie(token),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        _check_origin(request)
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE_NAME, path="/")
        return response

    # -- reads ---------------------------------------------------------------------------

    async def console(self, request: web.Request) -> web.Response:
        """The console page; it holds no data, its script calls the API with the caller's
        session cookie, so serving it needs no token."""
        return web.Response(text=_CONSOLE_HTML, content_type="text/html")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI, dumps=_dumps)

    async def members(self, request: web.Request, who: Principal) -> Any:
        return [m.to_json() for m in await services.list_members(self._store)]

    async def stats(self, request: web.Request, who: Principal) -> Any:
        return (await services.stats(self._store)).to_json()

    async def tasks(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        steps, following = await paging.page_tasks(
            self._store,
            status=params.status(q.get("status")),
            workflow_id=params.text(q.get("workflow") or q.get("workflow_id"), "workflow"),
            agent=params.text(q.get("agent"), "agent"),
            cursor=params.text(q.get("cursor"), "cursor"),
            limit=params.limit(q.get("limit"), 100),
        )
        return _paged([s.to_json() for s in steps], following)

    async def workflow(self, request: web.Request, who: Principal) -> Any:
        workflow_id = params.text(request.match_info["workflow_id"], "workflow_id", required=True)
        assert workflow_id is not None
        wf, steps = await services.workflow_status(self._store, workflow_id)
        return {"workflow": wf.to_json(), "steps": [s.to_json() for s in steps]}

    async def dead(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        steps, following = await paging.page_dead(
            self._store,
            cursor=params.text(q.get("cursor"), "cursor"),
            limit=params.limit(q.get("limit"), 100),
        )
        return _paged([s.to_json() for s in steps], following)

    async def conflicts(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        since_ms = params.time_ms(q.get("since"), "since")
        limit = params.limit(q.get("limit"), 100)
        if params.flag(q.get("report"), "report"):
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
        from_ms = params.time_ms(q.get("from"), "from")
        to_ms = params.time_ms(q.get("to"), "to")
        if from_ms is not None and to_ms is not None and from_ms > to_ms:
            raise ValueError("from is after to")
        rows, following = await paging.page_audit(
            self._store,
            task_id=params.text(q.get("task_id"), "task_id"),
            action=params.text(q.get("action"), "action"),
            from_ms=from_ms,
            to_ms=to_ms,
            cursor=params.text(q.get("cursor"), "cursor"),
            limit=params.limit(q.get("limit"), 100),
        )
        return _paged([r.to_json() for r in rows], following)

    async def ownership_events(self, request: web.Request, who: Principal) -> Any:
        q = request.query
        rows, following = await paging.page_ownership_events(
            self._store,
            since_ms=params.time_ms(q.get("since"), "since"),
            cursor=params.text(q.get("cursor"), "cursor"),
            limit=params.limit(q.get("limit"), 100),
        )
        return _paged([e.to_json() for e in rows], following)

    async def events(self, request: web.Request, who: Principal) -> web.StreamResponse:
        """Server-sent events: ``stats``, ``members``, ``conflicts`` when they change.

        Ends when the client has gone (checked before every store poll), when the
        caller's token stops being valid (re-checked every round: a reload that removes
        it ends the stream with an ``error`` event), or on a write error."""
        refused = self.streams.try_open(who.name)
        if refused is not None:
            raise _error(web.HTTPTooManyRequests, refused)
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            await self._stream(request, response)
            return response
        finally:
            self.streams.close(who.name)

    async def _stream(self, request: web.Request, response: web.StreamResponse) -> None:
        last: dict[str, str] = {}
        while not _client_gone(request):
            try:
                self.authenticate(request)
            except web.HTTPUnauthorized:
                message = _dumps({"error": "the token of this stream is no longer valid"})
                await _send(response, f"event: error\ndata: {message}\n\n")
                return
            try:
                docs = await self._event_docs()
            except RelayMeshError as exc:
                docs = {"error": {"error": str(exc)}}
            sent = False
            for event, doc in docs.items():
                body = _dumps(doc)
                if last.get(event) != body:
                    last[event] = body
                    sent = True
                    if not await _send(response, f"event: {event}\ndata: {body}\n\n"):
                        return
            # A comment line costs nothing and makes a dead peer show up as a write error.
            if not sent and not await _send(response, ": idle\n\n"):
                return
            await asyncio.sleep(self._sse_interval_s)

    async def _event_docs(self) -> dict[str, Any]:
        stats = (await services.stats(self._store)).to_json()
        stats.pop("at", None)  # changes every time; not a change worth sending
        return {
            "stats": stats,
            "members": [m.to_json() for m in await services.list_members(self._store)],
            "conflicts": [c.to_json() for c in await services.list_conflicts(self._store)],
        }

    # -- writes --------------------------------------------------------------------------

    async def cancel(self, request: web.Request, who: Principal) -> Any:
        body = params.only_fields(await params.json_body(request), ("workflow_id", "mode"))
        workflow_id = params.text(body.get("workflow_id"), "workflow_id", required=True)
        assert workflow_id is not None
        mode = params.text(body.get("mode"), "mode") or "soft"
        if mode not in ("hard", "soft"):
            raise ValueError(f"mode must be hard or soft, got {mode!r}")
        result = await services.cancel_workflow(self._store, workflow_id, mode, who.actor)
        return {
            "workflow_id": workflow_id,
            "mode": mode,
            "cancelled": result.cancelled,
            "fenced_running": list(result.fenced_running),
        }

    async def replay(self, request: web.Request, who: Principal) -> Any:
        body = params.only_fields(await params.json_body(request), ("step_id",))
        step_id = params.text(body.get("step_id"), "step_id", required=True)
        assert step_id is not None
        step = await services.replay_step(self._store, step_id, who.actor)
        return step.to_json()

    async def replay_batch(self, request: web.Request, who: Principal) -> Any:
        body = params.only_fields(
            await params.json_body(request), ("status", "limit", "agent", "workflow_id", "workflow")
        )
        status = params.status(body.get("status")) or StepStatus.DEAD_LETTER
        workflow_id = params.text(body.get("workflow_id"), "workflow_id") or params.text(
            body.get("workflow"), "workflow"
        )
        count = await services.replay_batch(
            self._store,
            status=status,
            limit=params.limit(body.get("limit"), 100),
            actor=who.actor,
            agent=params.text(body.get("agent"), "agent"),
            workflow_id=workflow_id,
        )
        return {"replayed": count}

    async def reload_settings(self, request: web.Request, who: Principal) -> Any:
        body = params.only_fields(await params.json_body(request), ("node",))
        node = params.text(body.get("node"), "node")
        req = await services.request_reload(self._store, node=node, actor=who.actor)
        return {"request_id": req.id, "node": req.target, "at": req.at_ms}

    async def gossip_sync(self, request: web.Request, who: Principal) -> Any:
        """One anti-entropy exchange on ``node`` now; its merges. Run here when ``node``
        is the serving node, else asked through the store (``services``)."""
        body = params.only_fields(await params.json_body(request), ("node",))
        node = params.text(body.get("node"), "node")
        if node is None:
            raise ValueError("node is required")
        if node == self._local_node and self._gossip_sync is not None:
            return await self._gossip_sync()
        req = await services.request_gossip_sync(self._store, node=node, actor=who.actor)
        return await services.wait_gossip_sync(self._store, req, timeout_ms=GOSSIP_SYNC_TIMEOUT_MS)

    # -- submit over HTTP and the workflow listing -----------------------------------------

    def _workflow_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/workflows", self._read(self.list_workflows)),
            web.post("/api/workflows", self._submit(self.submit_workflow)),
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
            status=params.workflow_status(q.get("status")),
            name=params.text(q.get("name"), "name"),
            since_ms=params.time_ms(q.get("since"), "since"),
            cursor=params.text(q.get("cursor"), "cursor"),
            limit=params.limit(q.get("limit"), 100),
        )
        headers = {"X-Next-Cursor": following} if following else {}
        return web.json_response([w.to_json() for w in page], headers=headers, dumps=_dumps)

    async def schedules(self, request: web.Request, who: Principal) -> Any:
        from relaymesh.ops.schedules import list_schedules

        return await list_schedules(self._store, self._settings())


# -- helpers ---------------------------------------------------------------------------


async def _answer(request: web.Request, call: Callable[[], Awaitable[Any]]) -> Any:
    """Run a route; translate the project's errors to statuses, anything else to a logged
    500 with one line (a bug must not hand the client a traceback)."""
    try:
        return await call()
    except web.HTTPException:
        raise
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
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("api_error", path=request.path, method=request.method)
        raise _error(web.HTTPInternalServerError, "internal error (logged by the node)") from exc


def _dumps(doc: Any) -> str:
    return json.dumps(doc, default=str, separators=(",", ":"))


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=_dumps({"error": message}), content_type="application/json")


def _check_origin(request: web.Request) -> None:
    if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
        raise _error(web.HTTPForbidden, "cross-origin write refused (Origin is not this console)")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _send(response: web.StreamResponse, text: str) -> bool:
    """Write to an event stream; False when the client has gone."""
    try:
        await response.write(text.encode())
    except (ConnectionError, RuntimeError):
        return False
    return True


def _encode_cookie(token: str) -> str:
    # base64url: only characters a cookie value may hold unquoted, whatever the token has.
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _decode_cookie(value: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return raw.decode() or None
    except (binascii.Error, ValueError):
        return None


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return _decode_cookie(cookie) if cookie else None


async def _login_token(request: web.Request) -> str:
    if request.content_type == "application/json":
        body = params.only_fields(await params.json_body(request), ("token",))
        token: Any = body.get("token")
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        token = (await request.post()).get("token")
    else:
        raise ValueError("login takes a JSON object or a form with the field token")
    if not isinstance(token, str) or not token:
        raise ValueError("token is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"token is longer than {MAX_TOKEN_CHARS} characters")
    return token


def _paged(items: list[Any], following: str | None) -> web.Response:
    """A list page; the next page's cursor in ``X-Next-Cursor`` (as GET /api/workflows)."""
    headers = {"X-Next-Cursor": following} if following else {}
    return web.json_response(items, headers=headers, dumps=_dumps)


def _query(name: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind, **extra}}


_LIMIT = _query("limit", "integer", minimum=1, maximum=params.MAX_LIMIT)
_STATUS = _query("status", enum=[s.value for s in StepStatus])
_CURSOR = _query("cursor")


def _op(
    summary: str,
    *,
    write: bool = False,
    role: str | None = None,
    query: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    need = role or ("admin" if write else "readonly")
    op: dict[str, Any] = {
        "summary": summary,
        "x-role": need,
        "security": [{"bearer": []}, {"session": []}],
        "responses": {
            "200": {"description": "OK"},
            "400": {"description": "bad input"},
            "401": {"description": "no valid token"},
            **(
                {"403": {"description": f"{need} token required, or foreign Origin"}}
                if write
                else {}
            ),
        },
    }
    if query:
        op["parameters"] = query
    if write:
        schema = {"type": "object", "additionalProperties": False, "properties": body or {}}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return op


_ID = {"type": "string", "minLength": 1, "maxLength": params.MAX_TEXT_CHARS}
_TEXT = {"type": "string", "maxLength": params.MAX_TEXT_CHARS}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "RelayMesh API", "version": "1"},
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME},
        }
    },
    "paths": {
        "/api/login": {
            "post": {
                "summary": "Set the HttpOnly session cookie from a token (JSON or form field)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": {"type": "string"}},
                            }
                        },
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": {"type": "string"}},
                            }
                        },
                    },
                },
                "responses": {
                    "200": {"description": "cookie set; {name, role}"},
                    "400": {"description": "bad input"},
                    "401": {"description": "invalid token"},
                    "403": {"description": "foreign Origin"},
                },
            }
        },
        "/api/logout": {
            "post": {
                "summary": "Clear the session cookie",
                "responses": {"200": {"description": "cookie cleared"}},
            }
        },
        "/api/members": {"get": _op("Members as the mesh last reported them")},
        "/api/stats": {
            "get": _op("Step counts, queue lag, members by status, the dispatch window")
        },
        "/api/tasks": {
            "get": _op(
                "List steps, newest first; the X-Next-Cursor header pages on",
                query=[_STATUS, _query("workflow"), _query("agent"), _LIMIT, _CURSOR],
            )
        },
        "/api/workflows/{workflow_id}": {
            "get": {
                **_op("A workflow and its steps"),
                "parameters": [
                    {"name": "workflow_id", "in": "path", "required": True, "schema": _ID}
                ],
            }
        },
        "/api/dead": {
            "get": _op(
                "Dead letters, newest first; the X-Next-Cursor header pages on",
                query=[_LIMIT, _CURSOR],
            )
        },
        "/api/conflicts": {
            "get": _op(
                "Lease conflicts (report=1 aggregates)",
                query=[_query("since"), _LIMIT, _query("report", enum=["0", "1", "true", "false"])],
            )
        },
        "/api/audit-query": {
            "get": _op(
                "Audit trail, newest first (from/to: ISO-8601 or epoch ms); the "
                "X-Next-Cursor header pages on",
                query=[
                    _query("task_id"),
                    _query("action"),
                    _query("from"),
                    _query("to"),
                    _LIMIT,
                    _CURSOR,
                ],
            )
        },
        "/api/ownership-events": {
            "get": _op(
                "Claims, releases, reclaims and expiries, newest first; the X-Next-Cursor "
                "header pages on",
                query=[_query("since"), _LIMIT, _CURSOR],
            )
        },
        "/api/events": {"get": _op("Server-sent events: stats, members, conflicts")},
        "/api/cancel": {
            "post": _op(
                "Cancel a workflow",
                write=True,
                body={"workflow_id": _ID, "mode": {"type": "string", "enum": ["hard", "soft"]}},
            )
        },
        "/api/replay": {"post": _op("Replay one dead letter", write=True, body={"step_id": _ID})},
        "/api/replay-batch": {
            "post": _op(
                "Replay many",
                write=True,
                body={
                    "status": {"type": "string", "enum": ["DEAD_LETTER", "CANCELLED"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": params.MAX_LIMIT},
                    "agent": _TEXT,
                    "workflow_id": _TEXT,
                },
            )
        },
        "/api/reload-settings": {
            "post": _op("Ask node(s) to reload", write=True, body={"node": _TEXT})
        },
        "/api/gossip-sync": {
            "post": _op(
                "Ask a node to run one anti-entropy exchange now; its merges",
                write=True,
                body={"node": _TEXT},
            )
        },
        "/api/schedules": {
            "get": _op("Configured schedules: expression, next fire, last fire and its workflow")
        },
        "/api/workflows": {
            "get": _op(
                "List workflows, newest first; the X-Next-Cursor header pages on",
                query=[
                    _query("status", enum=[s.value for s in WorkflowStatus]),
                    _query("name"),
                    _query("since"),
                    _LIMIT,
                    _query("cursor"),
                ],
            ),
            "post": {
                **_op(
                    "Submit a workflow (the workflow file's JSON as the body); 201 {id} when "
                    "new, 200 {id} of the first for a repeated Idempotency-Key, 400 {error}",
                    write=True,
                    role="submitter",
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
