"""Domain records shared by the store, the worker, the CLI and the web API.

A leaf module: plain frozen dataclasses and enums, no I/O. ``store/`` builds them
from rows, ``work/`` and the entry points read them. ``to_json`` gives the shapes
INTERFACE.md promises to operators' scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from relaymesh.exceptions import WorkflowError

__all__ = [
    "TERMINAL_STEP_STATUSES",
    "Actor",
    "AuditRecord",
    "CancelResult",
    "Claim",
    "DeadOwnerReclaim",
    "LeaseConflict",
    "LeaseRef",
    "MemberStatus",
    "MeshNode",
    "OwnershipEvent",
    "Priority",
    "ScheduleFire",
    "SettingsChange",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "SubmitOutcome",
    "WorkflowRecord",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowSummary",
    "actor_details",
    "check_graph",
    "find_cycle",
]

JSON = Any


class Actor(str):
    """An audit actor (``web:<token name>@<address>``) that carries details every audit row
    written for it includes, such as the web client's user agent. It *is* the actor
    string, so it passes through every store call that takes ``actor: str`` unchanged,
    and the store writes its details in the same transaction as the change."""

    details: dict[str, JSON]

    def __new__(cls, name: str, details: dict[str, JSON] | None = None) -> Actor:
        self = super().__new__(cls, name)
        self.details = dict(details or {})
        return self


def actor_details(actor: str, details: Any) -> Any:
    """``details`` for an audit row of ``actor``: the actor's own details merged under the
    row's (the row's keys win)."""
    extra = getattr(actor, "details", None)
    if not extra:
        return details
    if isinstance(details, dict):
        return {**extra, **details}
    return {**extra, "value": details}


class StepStatus(StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    RUNNING = "RUNNING"
    RETRY_WAIT = "RETRY_WAIT"
    SUCCEEDED = "SUCCEEDED"
    DEAD_LETTER = "DEAD_LETTER"
    CANCELLED = "CANCELLED"


TERMINAL_STEP_STATUSES = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.DEAD_LETTER, StepStatus.CANCELLED}
)


class WorkflowStatus(StrEnum):
    RUNNING = "RUNNING"
    """Some step is not terminal yet."""
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    """Every step is terminal and at least one is a dead letter."""
    CANCELLED = "CANCELLED"


class Priority(IntEnum):
    """Lower value is claimed first. Stored as the integer."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, name: str) -> Priority:
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


class MemberStatus(StrEnum):
    ALIVE = "ALIVE"
    SUSPECT = "SUSPECT"
    DEAD = "DEAD"
    LEFT = "LEFT"


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One validated step of a workflow being submitted."""

    name: str
    agent: str
    input: JSON = None
    depends_on: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    locks: tuple[str, ...] = ()
    max_attempts: int = 3
    base_backoff_ms: int = 1000
    max_backoff_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated workflow: names unique, dependencies known, no cycle."""

    name: str
    steps: tuple[StepSpec, ...]


def check_graph(steps: Sequence[StepSpec]) -> None:
    """What makes steps a workflow: unique names, dependencies naming steps of the same
    workflow, no cycle. Raises ``WorkflowError``; ``work/workflow.py`` (a file being
    parsed) and every store's submit (a spec from anywhere) apply this one rule."""
    seen: set[str] = set()
    for step in steps:
        if step.name in seen:
            raise WorkflowError(f"duplicate step name '{step.name}'")
        seen.add(step.name)
    for step in steps:
        for dep in step.depends_on:
            if dep not in seen:
                raise WorkflowError(
                    f"step '{step.name}': field 'depends_on' names unknown step '{dep}'"
                )
    cycle = find_cycle(steps)
    if cycle:
        raise WorkflowError("dependency cycle: " + " -> ".join(cycle))


def find_cycle(steps: Sequence[StepSpec]) -> list[str]:
    """One dependency cycle as ``[a, b, ..., a]``, or ``[]`` when the graph is a DAG."""
    deps = {s.name: s.depends_on for s in steps}
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for root, root_deps in deps.items():
        if color[root] != white:
            continue
        # Iterative DFS: recursion would overflow on a 10,000-step chain.
        path: list[str] = [root]
        iters = [iter(root_deps)]
        color[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = black
                iters.pop()
                continue
            if color[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            if color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                iters.append(iter(deps[nxt]))
    return []


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: str
    name: str
    status: WorkflowStatus
    created_at_ms: int
    updated_at_ms: int

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "created_at": self.created_at_ms,
            "updated_at": self.updated_at_ms,
        }


@dataclass(frozen=True, slots=True)
class StepRecord:
    id: str
    workflow_id: str
    name: str
    agent: str
    status: StepStatus
    priority: Priority
    attempt: int
    """Runs started so far (a claim increments it); a replay keeps counting."""
    max_attempts: int
    lease_epoch: int
    owner_node: str | None
    lease_expires_at_ms: int | None
    not_before_ms: int | None
    depends_on: tuple[str, ...]
    locks: tuple[str, ...]
    input: JSON
    result: JSON
    error: JSON
    created_at_ms: int
    updated_at_ms: int
    ready_at_ms: int | None = None
    """When the step last became claimable: queue lag and submit-to-start latency."""
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    replays: tuple[dict[str, Any], ...] = ()
    """Each replay, oldest first: ``{at, actor, from_status, from_attempt, max_attempts,
    error}``, what the step was when it was replayed (docs/store.md, "Replays")."""

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "name": self.name,
            "agent": self.agent,
            "status": self.status.value,
            "priority": self.priority.label,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "lease_epoch": self.lease_epoch,
            "owner_node": self.owner_node,
            "lease_expires_at": self.lease_expires_at_ms,
            "not_before": self.not_before_ms,
            "depends_on": list(self.depends_on),
            "locks": list(self.locks),
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at_ms,
            "updated_at": self.updated_at_ms,
            "ready_at": self.ready_at_ms,
            "started_at": self.started_at_ms,
            "finished_at": self.finished_at_ms,
            "replays": [dict(r) for r in self.replays],
        }


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """The fencing triple every write of a running step must carry."""

    step_id: str
    lease_token: str
    lease_epoch: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A step this node now holds under a lease, with everything the agent needs."""

    step_id: str
    workflow_id: str
    name: str
    agent: str
    input: JSON
    upstream: dict[str, JSON]
    """Results of the steps this one depends on, by step name."""
    attempt: int
    max_attempts: int
    base_backoff_ms: int
    max_backoff_ms: int
    priority: Priority
    lease_token: str
    lease_epoch: int
    lease_expires_at_ms: int
    ready_at_ms: int | None = None
    locks: tuple[str, ...] = ()

    @property
    def lease(self) -> LeaseRef:
        return LeaseRef(self.step_id, self.lease_token, self.lease_epoch)


@dataclass(frozen=True, slots=True)
class CancelResult:
    cancelled: int
    """Steps moved to CANCELLED."""
    fenced_running: tuple[str, ...] = ()
    """RUNNING steps whose epoch was bumped (hard cancel): their owners must kill them."""


@dataclass(frozen=True, slots=True)
class DeadOwnerReclaim:
    """What acting on a DEAD/LEFT verdict did. A verdict is gossip's hint; the store's
    heartbeat is the evidence, so a step whose lease is still heartbeated stays put."""

    step_ids: tuple[str, ...] = ()
    """Steps taken back from their owner (READY, or DEAD_LETTER when out of attempts)."""
    still_heartbeating: int = 0
    """Steps of those owners left alone: their leases were heartbeated too recently."""


@dataclass(frozen=True, slots=True)
class OwnershipEvent:
    id: int
    step_id: str
    node: str | None
    event: str
    """claimed | released | lease_expired | dead_owner | cancelled | replayed"""
    lease_epoch: int
    at_ms: int

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "step_id": self.step_id,
            "node": self.node,
            "event": self.event,
            "lease_epoch": self.lease_epoch,
            "at": self.at_ms,
        }


@dataclass(frozen=True, slots=True)
class LeaseConflict:
    id: int
    step_id: str
    node: str
    event: str
    """heartbeat | commit_success | commit_failure | release"""
    expected_epoch: int
    actual_epoch: int | None
    actual_status: str | None
    at_ms: int

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "step_id": self.step_id,
            "node": self.node,
            "event": self.event,
            "expected_epoch": self.expected_epoch,
            "actual_epoch": self.actual_epoch,
            "actual_status": self.actual_status,
            "at": self.at_ms,
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at_ms: int
    actor: str
    """Who: ``cli:<user>``, ``web:<token name>@<address>``, ``node:<name>``."""
    action: str
    target: str | None
    details: dict[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "at": self.at_ms,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class MeshNode:
    """One member as last reported to the store by the mesh."""

    name: str
    address: str
    status: MemberStatus
    incarnation: int
    metadata: dict[str, JSON]
    status_changed_at_ms: int
    updated_at_ms: int = 0
    reporter: str | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "address": self.address,
            "status": self.status.value,
            "incarnation": self.incarnation,
            "metadata": self.metadata,
            "status_changed_at": self.status_changed_at_ms,
            "updated_at": self.updated_at_ms,
            "reporter": self.reporter,
        }


@dataclass(frozen=True, slots=True)
class SettingsChange:
    id: int
    at_ms: int
    node: str
    fields: tuple[str, ...]
    """Changed fields the reload applied."""
    refused: tuple[str, ...] = ()
    """Changed fields it did not apply: they need a restart."""

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "at": self.at_ms,
            "node": self.node,
            "fields": list(self.fields),
            "refused": list(self.refused),
        }


# -- idempotent submits, workflow listing, schedule fires --------------------------


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What an idempotent submit did: ``created`` is False when the key was already
    taken, and ``workflow_id`` is then the first submit's workflow (nothing written)."""

    workflow_id: str
    created: bool


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """One row of ``relaymesh workflows`` / ``GET /api/workflows``."""

    id: str
    name: str
    status: WorkflowStatus
    created_at_ms: int
    finished_at_ms: int | None
    """When the workflow reached a final status (its last update); None while running."""
    idempotency_key: str | None
    schedule: str | None
    steps: dict[str, int]
    """Step status to how many steps of this workflow have it."""

    def to_json(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "created_at": self.created_at_ms,
            "finished_at": self.finished_at_ms,
            "idempotency_key": self.idempotency_key,
            "schedule": self.schedule,
            "steps": dict(self.steps),
        }


@dataclass(frozen=True, slots=True)
class ScheduleFire:
    """The latest recorded fire of one schedule."""

    fire_at_ms: int
    workflow_id: str
