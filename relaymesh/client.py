"""A small typed client for RelayMesh's HTTP API, for scripts and other programs.

Synchronous and standard library only (``urllib``), so a cron job or a CI step needs
nothing but ``relaymesh`` itself::

    from relaymesh.client import Client

    client = Client("http://127.0.0.1:8701", token="...")
    submitted = client.submit(workflow, idempotency_key="nightly-2026-12-02")
    done = client.wait(submitted.id, timeout_s=600)
    print(done.status, [s.result for s in done.steps])

Every refusal is an ``ApiError`` carrying the HTTP status and the server's one-line
error (``{"error": ...}``); a node that cannot be reached is an ``ApiError`` with
``status`` None. ``wait`` past its deadline raises ``WaitTimeout`` with the last
status seen. A ``submitter`` token may submit and read; cancel and replay need
``admin`` (docs/http.md).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from relaymesh.exceptions import RelayMeshError

__all__ = [
    "FINAL_WORKFLOW_STATUSES",
    "ApiError",
    "Client",
    "Page",
    "Step",
    "Submitted",
    "WaitTimeout",
    "Workflow",
    "WorkflowStatus",
]

FINAL_WORKFLOW_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
"""Workflow statuses that do not change any more (unless a step is replayed)."""
_MAX_ERROR_CHARS = 500


class ApiError(RelayMeshError):
    """The server refused (``status`` its HTTP status) or could not be reached
    (``status`` None); ``message`` is the server's one-line error."""

    def __init__(self, status: int | None, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status or 'unreachable'}: {message}")


class WaitTimeout(RelayMeshError):
    """``Client.wait`` reached its deadline; ``last`` is the status it saw last."""

    def __init__(self, workflow_id: str, last: WorkflowStatus | None, timeout_s: float) -> None:
        self.workflow_id = workflow_id
        self.last = last
        state = last.status if last is not None else "unknown"
        super().__init__(f"workflow {workflow_id} still {state} after {timeout_s:g}s")


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    created: bool
    """False when the idempotency key had been used: ``id`` is the first workflow's."""


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    name: str
    agent: str
    status: str
    attempt: int
    max_attempts: int
    result: Any
    error: Any
    raw: dict[str, Any] = field(repr=False)
    """The whole step document (every field ``status --json`` shows)."""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Step:
        return cls(
            id=doc["id"],
            name=doc["name"],
            agent=doc["agent"],
            status=doc["status"],
            attempt=int(doc["attempt"]),
            max_attempts=int(doc["max_attempts"]),
            result=doc.get("result"),
            error=doc.get("error"),
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """``GET /api/workflows/{id}``: the workflow and its steps."""

    id: str
    name: str
    status: str
    created_at_ms: int
    steps: list[Step]
    raw: dict[str, Any] = field(repr=False)

    @property
    def final(self) -> bool:
        return self.status in FINAL_WORKFLOW_STATUSES

    def step(self, name: str) -> Step:
        """The step called ``name``; ``KeyError`` when there is none."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> WorkflowStatus:
        wf = doc["workflow"]
        return cls(
            id=wf["id"],
            name=wf["name"],
            status=wf["status"],
            created_at_ms=int(wf["created_at"]),
            steps=[Step.from_json(s) for s in doc["steps"]],
            raw=doc,
        )


@dataclass(frozen=True, slots=True)
class Workflow:
    """One row of ``GET /api/workflows``."""

    id: str
    name: str
    status: str
    created_at_ms: int
    finished_at_ms: int | None
    idempotency_key: str | None
    schedule: str | None
    steps: dict[str, int]
    """Step counts by status."""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Workflow:
        return cls(
            id=doc["id"],
            name=doc["name"],
            status=doc["status"],
            created_at_ms=int(doc["created_at"]),
            finished_at_ms=doc.get("finished_at"),
            idempotency_key=doc.get("idempotency_key"),
            schedule=doc.get("schedule"),
            steps=dict(doc.get("steps") or {}),
        )


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Workflow]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; None on the last page."""


class Client:
    """One RelayMesh node's (or ``serve-web``'s) API at ``base_url``."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    # -- writes ---------------------------------------------------------------------------

    def submit(
        self, workflow: Mapping[str, Any] | str, *, idempotency_key: str | None = None
    ) -> Submitted:
        """Submit a workflow (the workflow file's JSON, as a mapping or text). With
        ``idempotency_key``, a repeat returns the first workflow's id (``created``
        False) and writes nothing, so a retried call never submits twice."""
        body = workflow if isinstance(workflow, str) else json.dumps(workflow)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        status, doc, _ = self._call("POST", "/api/workflows", body=body, headers=headers)
        return Submitted(id=doc["id"], created=status == 201)

    def cancel(self, workflow_id: str, *, mode: str = "soft") -> dict[str, Any]:
        """``soft``: the steps not started yet; ``hard``: every unfinished step (running
        agents are killed). Returns ``{workflow_id, mode, cancelled, fenced_running}``."""
        doc = {"workflow_id": workflow_id, "mode": mode}
        return dict(self._call("POST", "/api/cancel", body=json.dumps(doc))[1])

    def replay(self, step_id: str) -> Step:
        """Put one dead letter (or cancelled step) back to READY; the step as it is now."""
        doc = self._call("POST", "/api/replay", body=json.dumps({"step_id": step_id}))[1]
        return Step.from_json(doc)

    # -- reads ----------------------------------------------------------------------------

    def status(self, workflow_id: str) -> WorkflowStatus:
        path = "/api/workflows/" + urllib.parse.quote(workflow_id, safe="")
        return WorkflowStatus.from_json(self._call("GET", path)[1])

    def wait(
        self,
        workflow_id: str,
        *,
        timeout_s: float,
        poll_s: float = 0.5,
        statuses: frozenset[str] = FINAL_WORKFLOW_STATUSES,
    ) -> WorkflowStatus:
        """Poll until the workflow is in one of ``statuses`` (default: final); raise
        ``WaitTimeout`` after ``timeout_s``. A node briefly unreachable (a restart) is
        polled again until the deadline; any refusal (404, 401...) is raised at once."""
        deadline = time.monotonic() + timeout_s
        last: WorkflowStatus | None = None
        while True:
            try:
                last = self.status(workflow_id)
                if last.status in statuses:
                    return last
            except ApiError as exc:
                if exc.status is not None and exc.status != 503:
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(workflow_id, last, timeout_s)
            time.sleep(min(poll_s, remaining))

    def workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: str | int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of workflows, newest first (``since``: ISO-8601 or epoch ms)."""
        query = {"status": status, "name": name, "since": since, "limit": limit, "cursor": cursor}
        kept = {k: str(v) for k, v in query.items() if v is not None}
        _, doc, headers = self._call("GET", "/api/workflows?" + urllib.parse.urlencode(kept))
        return Page([Workflow.from_json(w) for w in doc], headers.get("X-Next-Cursor") or None)

    def iter_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: str | int | None = None,
        page_size: int = 100,
    ) -> Iterator[Workflow]:
        """Every matching workflow, newest first, fetching a page at a time."""
        cursor: str | None = None
        while True:
            page = self.workflows(
                status=status, name=name, since=since, limit=page_size, cursor=cursor
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- transport ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=None if body is None else body.encode("utf-8"),
            headers={"Accept": "application/json", **(headers or {})},
        )
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self._token is not None:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, json.loads(response.read() or b"null"), response.headers
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError(exc.code, _error_line(exc.read())) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(None, f"cannot reach {self.base_url}: {reason}") from None
        except ValueError as exc:
            raise ApiError(None, f"{self.base_url} answered something that is not JSON") from exc


def _error_line(raw: bytes) -> str:
    """The server's ``{"error": ...}`` line, or the body's first line when it is not one."""
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    first = text.strip().splitlines()[0] if text.strip() else "(empty answer)"
    return first[:_MAX_ERROR_CHARS]
