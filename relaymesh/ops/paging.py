"""Keyset pages of the read commands on a big store: tasks, dead, audit-query,
ownership-events (``workflows`` pages in ``ops/submits.py``, the same way).

Each function returns a page and the next page's cursor (None after the last page):
the last row's position in the listing order, as text. A page is one index range
scan from the cursor, so the 1000th page costs what the first does, and paging a
table that is not changing never skips nor repeats a row.

Cursors: steps ``<updated_at_ms>:<step id>``; audit rows and ownership events
``<id>``. The CLI prints the next one on stderr (stdout stays the list INTERFACE.md
promises for ``--json``); HTTP sends it in the ``X-Next-Cursor`` header.
"""

from __future__ import annotations

from relaymesh.exceptions import InvalidStateError, WorkflowError
from relaymesh.model import AuditRecord, OwnershipEvent, StepRecord, StepStatus
from relaymesh.store.base import Store

__all__ = [
    "page_audit",
    "page_dead",
    "page_ownership_events",
    "page_tasks",
    "parse_id_cursor",
    "parse_step_cursor",
]


def parse_step_cursor(cursor: str) -> tuple[int, str]:
    """``<updated_at_ms>:<step id>`` (the last row of the previous page)."""
    at, sep, step_id = cursor.partition(":")
    if not sep or not at.isdigit() or not step_id:
        raise WorkflowError(f"bad cursor {cursor!r}: expected <updated_at_ms>:<step id>")
    return int(at), step_id


def parse_id_cursor(cursor: str) -> int:
    """``<id>`` (the last row of the previous page)."""
    if not cursor.isdigit():
        raise WorkflowError(f"bad cursor {cursor!r}: expected a row id")
    return int(cursor)


def _positive(limit: int) -> int:
    if limit < 1:
        raise InvalidStateError("limit must be at least 1")
    return limit


def _step_next(page: list[StepRecord], limit: int) -> str | None:
    return f"{page[-1].updated_at_ms}:{page[-1].id}" if len(page) == limit else None


async def page_tasks(
    store: Store,
    *,
    status: StepStatus | None = None,
    workflow_id: str | None = None,
    agent: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[StepRecord], str | None]:
    page = await store.list_steps(
        status=status,
        workflow_id=workflow_id,
        agent=agent,
        before=parse_step_cursor(cursor) if cursor else None,
        limit=_positive(limit),
    )
    return page, _step_next(page, limit)


async def page_dead(
    store: Store, *, cursor: str | None = None, limit: int = 100
) -> tuple[list[StepRecord], str | None]:
    return await page_tasks(store, status=StepStatus.DEAD_LETTER, cursor=cursor, limit=limit)


async def page_audit(
    store: Store,
    *,
    task_id: str | None = None,
    action: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[AuditRecord], str | None]:
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise InvalidStateError("--from is after --to")
    page = await store.query_audit(
        task_id=task_id,
        action=action,
        from_ms=from_ms,
        to_ms=to_ms,
        before_id=parse_id_cursor(cursor) if cursor else None,
        limit=_positive(limit),
    )
    return page, (str(page[-1].id) if len(page) == limit else None)


async def page_ownership_events(
    store: Store, *, since_ms: int | None = None, cursor: str | None = None, limit: int = 100
) -> tuple[list[OwnershipEvent], str | None]:
    page = await store.list_ownership_events(
        since_ms=since_ms,
        before_id=parse_id_cursor(cursor) if cursor else None,
        limit=_positive(limit),
    )
    return page, (str(page[-1].id) if len(page) == limit else None)
