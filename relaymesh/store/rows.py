"""What both backends share that is not SQL: ids, JSON text, rows to records, and the
pure rules (workflow status, mesh merge rank, picking a lock-compatible claim batch).

No I/O here: every function is plain and fast, so the rules are unit-tested alone.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from relaymesh.exceptions import LeaseLostError
from relaymesh.model import (
    AuditRecord,
    LeaseConflict,
    LeaseRef,
    MemberStatus,
    MeshNode,
    OwnershipEvent,
    Priority,
    SettingsChange,
    StepRecord,
    StepStatus,
    WorkflowRecord,
    WorkflowStatus,
    WorkflowSummary,
)

__all__ = [
    "ACTIVE_STATUSES",
    "Candidate",
    "audit_record",
    "conflict_record",
    "dumps",
    "event_record",
    "key_details",
    "lease_lost",
    "loads",
    "lost_error",
    "mesh_node",
    "new_id",
    "pick_batch",
    "settings_change",
    "step_record",
    "workflow_record",
    "workflow_status",
    "workflow_summaries",
    "zero_counts",
]

ACTIVE_STATUSES = (StepStatus.READY, StepStatus.RUNNING, StepStatus.RETRY_WAIT)

# A claim candidate: (step id, its lock keys).
Candidate = tuple[str, tuple[str, ...]]


def new_id() -> str:
    """32 hex digits: 12 of wall-clock ms, then 20 random. Ids made later sort later, so
    inserts land at the right edge of the id indexes instead of on random pages."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def workflow_status(*, active: bool, pending: bool, dead: bool, cancelled: bool) -> WorkflowStatus:
    """A workflow runs while any step can still make progress. A dead letter fails it
    once nothing else is active (its dependents stay PENDING, so waiting on them would
    never end); otherwise a cancelled step makes it CANCELLED, else it SUCCEEDED."""
    if active:
        return WorkflowStatus.RUNNING
    if dead:
        return WorkflowStatus.FAILED
    if pending:
        return WorkflowStatus.RUNNING
    if cancelled:
        return WorkflowStatus.CANCELLED
    return WorkflowStatus.SUCCEEDED


def pick_batch(
    candidates: Iterable[Candidate],
    *,
    want: int,
    picked: list[str],
    held: set[str],
) -> None:
    """Append to ``picked`` (up to ``want`` in all) the candidates, in order, whose lock
    keys are not in ``held``; the keys of each pick join ``held``. So no two steps of one
    batch share a key (the SQL already skipped keys held by RUNNING steps)."""
    already = set(picked)
    for step_id, keys in candidates:
        if len(picked) >= want:
            return
        if step_id in already or any(key in held for key in keys):
            continue
        picked.append(step_id)
        already.add(step_id)
        held.update(keys)


def lost_error(attempt: int, why: str) -> dict[str, Any]:
    """The error kept on a step whose last attempt was lost (expired or dead owner)."""
    return {"kind": "lost", "message": f"attempt {attempt} lost: {why}"}


def zero_counts() -> dict[StepStatus, int]:
    return dict.fromkeys(StepStatus, 0)


def _json_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(str(v) for v in value)


def step_record(row: Sequence[Any]) -> StepRecord:
    """From the column order of the ``step_get`` query of either backend."""
    return StepRecord(
        id=row[0],
        workflow_id=row[1],
        name=row[2],
        agent=row[3],
        status=StepStatus(row[4]),
        priority=Priority(row[5]),
        attempt=row[6],
        max_attempts=row[7],
        lease_epoch=row[8],
        owner_node=row[9],
        lease_expires_at_ms=row[10],
        not_before_ms=row[11],
        depends_on=_json_tuple(row[12]),
        locks=_json_tuple(row[13]),
        input=loads(row[14]),
        result=loads(row[15]),
        error=loads(row[16]),
        created_at_ms=row[17],
        updated_at_ms=row[18],
        ready_at_ms=row[19],
        started_at_ms=row[20],
        finished_at_ms=row[21],
        replays=tuple(loads(row[22]) or ()) if len(row) > 22 else (),
    )


def replayed(step: StepRecord, actor: str, at_ms: int) -> tuple[int, str, dict[str, Any]]:
    """What a replay of ``step`` writes: (new ``max_attempts``, the ``replays`` column,
    the new history entry). The attempt counter is kept, and the step gets the same
    budget of runs it had before: ``max_attempts`` minus the attempts already spent
    when the budget was last granted (0, or the previous replay's ``from_attempt``)."""
    history = list(step.replays)
    granted_at = int(history[-1]["from_attempt"]) if history else 0
    budget = max(1, step.max_attempts - granted_at)
    entry: dict[str, Any] = {
        "at": at_ms,
        "actor": actor,
        "from_status": step.status.value,
        "from_attempt": step.attempt,
        "max_attempts": step.max_attempts,
        "error": step.error,
    }
    return step.attempt + budget, dumps([*history, entry]), entry


def workflow_record(row: Sequence[Any]) -> WorkflowRecord:
    return WorkflowRecord(
        id=row[0],
        name=row[1],
        status=WorkflowStatus(row[2]),
        created_at_ms=row[3],
        updated_at_ms=row[4],
    )


def event_record(row: Sequence[Any]) -> OwnershipEvent:
    return OwnershipEvent(
        id=row[0], step_id=row[1], node=row[2], event=row[3], lease_epoch=row[4], at_ms=row[5]
    )


def conflict_record(row: Sequence[Any]) -> LeaseConflict:
    return LeaseConflict(
        id=row[0],
        step_id=row[1],
        node=row[2],
        event=row[3],
        expected_epoch=row[4],
        actual_epoch=row[5],
        actual_status=row[6],
        at_ms=row[7],
    )


def audit_record(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at_ms=row[1],
        actor=row[2],
        action=row[3],
        target=row[4],
        details=loads(row[5]) or {},
    )


def mesh_node(row: Sequence[Any]) -> MeshNode:
    return MeshNode(
        name=row[0],
        address=row[1],
        status=MemberStatus(row[2]),
        incarnation=row[3],
        metadata=loads(row[4]) or {},
        status_changed_at_ms=row[5],
        updated_at_ms=row[6],
        reporter=row[7],
    )


def settings_fields(fields: Sequence[str], refused: Sequence[str]) -> str:
    """The ``settings_history.fields`` column: a JSON list of the applied fields, or
    ``{"fields": [...], "refused": [...]}`` when some were refused (rows written before
    refused fields were kept are plain lists, so both shapes are read)."""
    if not refused:
        return dumps(list(fields))
    return dumps({"fields": list(fields), "refused": list(refused)})


def settings_change(row: Sequence[Any]) -> SettingsChange:
    value = json.loads(row[3]) if isinstance(row[3], str) else row[3]
    if isinstance(value, dict):
        return SettingsChange(
            id=row[0],
            at_ms=row[1],
            node=row[2],
            fields=_json_tuple(value.get("fields")),
            refused=_json_tuple(value.get("refused")),
        )
    return SettingsChange(id=row[0], at_ms=row[1], node=row[2], fields=_json_tuple(value))


def lease_lost(
    lease: LeaseRef, event: str, actual_epoch: Any, actual_status: Any
) -> LeaseLostError:
    """The error a rejected fenced write raises, the same from both backends."""
    return LeaseLostError(
        f"{event} of step {lease.step_id} rejected: lease epoch {lease.lease_epoch} no longer "
        f"holds (epoch now {actual_epoch}, status {actual_status})"
    )


# -- idempotent submits and workflow listing ----------------------------------------


def key_details(key: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What an idempotent submit adds to its audit row's details."""
    details: dict[str, Any] = {"idempotency_key": key} if key is not None else {}
    details.update(extra or {})
    return details


def workflow_summaries(
    found: Sequence[Sequence[Any]], counts: Sequence[Sequence[Any]]
) -> list[WorkflowSummary]:
    """Rows of ``workflows_list`` (id, name, status, created, updated, key, schedule) and
    ``workflows_step_counts`` (workflow_id, status, n) to summaries, in ``found``'s order."""
    steps: dict[str, dict[str, int]] = {}
    for workflow_id, step_status, n in counts:
        steps.setdefault(workflow_id, {})[step_status] = int(n)
    out: list[WorkflowSummary] = []
    for row in found:
        status = WorkflowStatus(row[2])
        out.append(
            WorkflowSummary(
                id=row[0],
                name=row[1],
                status=status,
                created_at_ms=row[3],
                finished_at_ms=None if status is WorkflowStatus.RUNNING else row[4],
                idempotency_key=row[5],
                schedule=row[6],
                steps=steps.get(row[0], {}),
            )
        )
    return out
