"""What both SQL backends share that is not SQL: ids, JSON text, rows to records. The
rules they share are in ``rules.py``.

No I/O here: every function is plain and fast.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from relaymesh.clock import Clock
from relaymesh.model import (
    AuditRecord,
    Claim,
    LeaseConflict,
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
    "IdMaker",
    "audit_record",
    "claim_record",
    "conflict_record",
    "dumps",
    "event_record",
    "loads",
    "mesh_node",
    "settings_change",
    "step_record",
    "workflow_record",
    "workflow_summaries",
    "zero_counts",
]

ACTIVE_STATUSES = (StepStatus.READY, StepStatus.RUNNING, StepStatus.RETRY_WAIT)


class IdMaker:
    """Makes row ids: 32 hex digits, 12 of wall-clock ms, then 20 random. Ids made later
    sort later, so inserts land at the right edge of the id indexes instead of on random
    pages; within one maker they strictly increase, even within one millisecond or when
    the wall clock steps back (listings ordered by (created_at, id) then follow the
    order of the submits). Clock and randomness are injected (tests make them
    repeatable); the default randomness is the OS's, as ids must not collide between
    processes."""

    __slots__ = ("_clock", "_last", "_rng")

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._last = 0

    def __call__(self) -> str:
        value = (self._clock.wall_ms() << _RANDOM_BITS) | self._rng.getrandbits(_RANDOM_BITS)
        if value <= self._last:
            value = self._last + 1 + self._rng.getrandbits(_RANDOM_BITS // 2)
        self._last = value
        return f"{value:032x}"


_RANDOM_BITS = 80


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


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


def claim_record(row: Sequence[Any], upstream: dict[str, Any]) -> Claim:
    """From the RETURNING columns of ``claim_update`` (and ``claim_fast``) of either
    backend: id, workflow_id, name, agent, input, attempt, max_attempts, base_backoff_ms,
    max_backoff_ms, priority, lease_token, lease_epoch, lease_expires_at_ms, ready_at_ms,
    locks (JSON text or an array)."""
    return Claim(
        step_id=row[0],
        workflow_id=row[1],
        name=row[2],
        agent=row[3],
        input=loads(row[4]),
        upstream=upstream,
        attempt=row[5],
        max_attempts=row[6],
        base_backoff_ms=row[7],
        max_backoff_ms=row[8],
        priority=Priority(row[9]),
        lease_token=row[10],
        lease_epoch=row[11],
        lease_expires_at_ms=row[12],
        ready_at_ms=row[13],
        locks=_json_tuple(row[14]),
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
