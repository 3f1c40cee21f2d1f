"""Idempotent submits and the workflow listing, shared by the CLI, the web API and the
schedules (one rule in one place: the key's shape, the cursor's shape)."""

from __future__ import annotations

from typing import Any

from relaymesh.exceptions import WorkflowError
from relaymesh.model import SubmitOutcome, WorkflowSpec, WorkflowStatus, WorkflowSummary
from relaymesh.settings import Settings
from relaymesh.store.base import Store
from relaymesh.store.rules import IDEMPOTENCY_KEY_MAX_CHARS, check_idempotency_key

__all__ = [
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "check_idempotency_key",
    "list_workflows",
    "parse_submitted_workflow",
    "parse_workflow_cursor",
    "submit_workflow_once",
]


async def submit_workflow_once(
    store: Store,
    spec: WorkflowSpec,
    actor: str,
    idempotency_key: str | None,
    **fire: Any,
) -> SubmitOutcome:
    """Submit unless ``idempotency_key`` was used before; then the first workflow's id
    and nothing written (``created`` False). ``fire``: a schedule's ``schedule``,
    ``fire_at_ms`` and ``audit_details``. Audited (``submit``) when created."""
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    return await store.submit_workflow_once(spec, actor, idempotency_key=idempotency_key, **fire)


def parse_workflow_cursor(cursor: str) -> tuple[int, str]:
    """``<created_at_ms>:<id>`` (the last row of the previous page)."""
    at, sep, workflow_id = cursor.partition(":")
    if not sep or not at.isdigit() or not workflow_id:
        raise WorkflowError(f"bad cursor {cursor!r}: expected <created_at_ms>:<id>")
    return int(at), workflow_id


async def list_workflows(
    store: Store,
    *,
    status: WorkflowStatus | None = None,
    name: str | None = None,
    since_ms: int | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[WorkflowSummary], str | None]:
    """A page of workflows, newest first, and the next page's cursor (None at the end)."""
    before = parse_workflow_cursor(cursor) if cursor else None
    page = await store.list_workflows(
        status=status, name=name, since_ms=since_ms, before=before, limit=limit
    )
    following = f"{page[-1].created_at_ms}:{page[-1].id}" if len(page) == limit else None
    return page, following


def parse_submitted_workflow(text: str, settings: Settings) -> WorkflowSpec:
    """A workflow document sent by another program (the HTTP API), validated exactly as
    ``relaymesh submit`` validates a file; ``WorkflowError`` with one line otherwise."""
    from relaymesh.ops.services import known_agents
    from relaymesh.work.workflow import parse_workflow

    return parse_workflow(text, known_agents=known_agents(settings), settings=settings)
