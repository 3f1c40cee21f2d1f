"""The in-memory ``Store``: the protocol's meaning in plain Python, beside the real ones
as ``membership/memory.py`` is beside the transport.

Owns: dicts and lists standing for the tables, and the Python side of every ``Store``
method, deciding with the same rules as the SQL backends (``rules.py``). Must not:
know about workers, HTTP or gossip, or survive its process.

It passes the same conformance suite (``tests/integration/store/``) as SQLite and
PostgreSQL, so the worker's decisions can be unit-tested against it in microseconds,
and a one-process demo can run without a file. Stores opened on the same
``memory://NAME`` in one process share their data (like two connections to one
database); each method runs without an ``await`` in between, so it is one atomic
transaction on the event loop. Time is the injected ``Clock``'s wall time; lease
tokens and ids come from an injected ``random.Random``. JSON values are kept as the
JSON text the SQL backends keep, so what comes back is what they would return.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from relaymesh.clock import Clock, SystemClock
from relaymesh.exceptions import NotFoundError, StoreError
from relaymesh.model import (
    AuditRecord,
    CancelResult,
    Claim,
    DeadOwnerReclaim,
    LeaseConflict,
    LeaseRef,
    MemberStatus,
    MeshNode,
    OwnershipEvent,
    Priority,
    ScheduleFire,
    SettingsChange,
    StepRecord,
    StepStatus,
    SubmitOutcome,
    WorkflowRecord,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowSummary,
    actor_details,
)
from relaymesh.store import rows, rules
from relaymesh.store.base import ConflictReport, LeaderLease
from relaymesh.store.queries import load_migrations
from relaymesh.store.retention import AGE_COLUMNS, TABLES, WORKFLOW_TABLES, TableStats, row_queries

__all__ = ["MemoryStore", "forget_memory_store"]

_CLAIMABLE = (StepStatus.READY, StepStatus.RETRY_WAIT)
_WAITING = (StepStatus.PENDING, StepStatus.READY, StepStatus.RETRY_WAIT)
_GONE = (MemberStatus.DEAD, MemberStatus.LEFT)
_TOUCHES = itertools.count(1)


@dataclass(slots=True)
class _Step:
    id: str
    seq: int
    workflow_id: str
    name: str
    agent: str
    status: StepStatus
    priority: Priority
    max_attempts: int
    base_backoff_ms: int
    max_backoff_ms: int
    depends_on: tuple[str, ...]
    locks: tuple[str, ...]
    n_dependents: int
    input: str
    created_at_ms: int
    updated_at_ms: int
    ready_at_ms: int | None
    attempt: int = 0
    lease_token: str | None = None
    lease_epoch: int = 0
    owner_node: str | None = None
    lease_expires_at_ms: int | None = None
    not_before_ms: int | None = None
    result: str | None = None
    error: str | None = None
    started_at_ms: int | None = None
    heartbeat_at_ms: int | None = None
    finished_at_ms: int | None = None
    replays: str | None = None
    """The replay history as JSON text (``rows.replayed``), as in the SQL stores."""
    touched: int = 0
    """Which change was the latest (0: none since the insert, then by insert order):
    orders steps updated within one millisecond."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "updated_at_ms":
            object.__setattr__(self, "touched", next(_TOUCHES))

    def record(self) -> StepRecord:
        return StepRecord(
            id=self.id,
            workflow_id=self.workflow_id,
            name=self.name,
            agent=self.agent,
            status=self.status,
            priority=self.priority,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            lease_epoch=self.lease_epoch,
            owner_node=self.owner_node,
            lease_expires_at_ms=self.lease_expires_at_ms,
            not_before_ms=self.not_before_ms,
            depends_on=self.depends_on,
            locks=self.locks,
            input=rows.loads(self.input),
            result=rows.loads(self.result),
            error=rows.loads(self.error),
            created_at_ms=self.created_at_ms,
            updated_at_ms=self.updated_at_ms,
            ready_at_ms=self.ready_at_ms,
            started_at_ms=self.started_at_ms,
            finished_at_ms=self.finished_at_ms,
            replays=tuple(rows.loads(self.replays) or ()),
        )

    def holds(self, lease: LeaseRef) -> bool:
        return (
            self.status is StepStatus.RUNNING
            and self.lease_token == lease.lease_token
            and self.lease_epoch == lease.lease_epoch
        )


@dataclass(slots=True)
class _Workflow:
    id: str
    name: str
    status: WorkflowStatus
    created_at_ms: int
    updated_at_ms: int
    steps: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Key:
    workflow_id: str
    schedule: str | None
    fire_at_ms: int | None


@dataclass(frozen=True, slots=True)
class _Bucket:
    """A dispatch_stats row as ``table_stats`` dates it."""

    bucket_ms: int


@dataclass(slots=True)
class _Data:
    """The tables. Shared by every store opened on one name."""

    workflows: dict[str, _Workflow] = field(default_factory=dict)
    steps: dict[str, _Step] = field(default_factory=dict)
    deps: dict[str, list[str]] = field(default_factory=dict)
    """step id -> ids of the steps it depends on (step_deps)."""
    dependents: dict[str, list[str]] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    """lock key -> the RUNNING step holding it (step_locks)."""
    events: list[tuple[OwnershipEvent, str | None]] = field(default_factory=list)
    conflicts: list[LeaseConflict] = field(default_factory=list)
    audit: list[tuple[AuditRecord, str]] = field(default_factory=list)
    """Each row with its details as JSON text (what ``task_id`` searches)."""
    mesh: dict[str, MeshNode] = field(default_factory=dict)
    settings: list[SettingsChange] = field(default_factory=list)
    leader: tuple[str, int, int] | None = None
    keys: dict[str, _Key] = field(default_factory=dict)
    dispatch: dict[tuple[str, str, int, str], int] = field(default_factory=dict)
    """(node, agent, bucket_ms, reason) -> count (dispatch_stats)."""
    schema_version: int = 0
    seq: int = 0
    next_row_id: int = 0
    waiters: set[MemoryStore] = field(default_factory=set)

    def row_id(self) -> int:
        self.next_row_id += 1
        return self.next_row_id


_SHARED: dict[str, _Data] = {}


def forget_memory_store(name: str) -> None:
    """Drop the data behind ``memory://name`` (tests call this when done)."""
    _SHARED.pop(name, None)


class MemoryStore:
    """``Store`` in this process's memory. ``open_store("memory://NAME")``, or construct
    it directly (``name=None``: data of its own)."""

    def __init__(
        self,
        name: str | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = f"memory://{name}" if name is not None else "memory://"
        self._d = _SHARED.setdefault(name, _Data()) if name is not None else _Data()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._new_id = rows.IdMaker(self._clock, self._rng)
        self._wake = asyncio.Event()
        self._closed = False

    # -- plumbing -------------------------------------------------------------------

    def _now(self) -> int:
        if self._closed:
            raise StoreError("the store is closed")
        return self._clock.wall_ms()

    def _signal(self) -> None:
        """Work may be claimable: wake every waiter on this data."""
        for store in list(self._d.waiters):
            store._wake.set()

    def _audit(self, now: int, actor: str, action: str, target: str | None, details: Any) -> None:
        full = actor_details(actor, details)
        record = AuditRecord(
            id=self._d.row_id(),
            at_ms=now,
            actor=str(actor),
            action=action,
            target=target,
            details=rows.loads(rows.dumps(full)) or {},
        )
        self._d.audit.append((record, rows.dumps(full)))

    def _event(
        self, now: int, step: _Step, node: str | None, event: str, detail: str | None
    ) -> None:
        row = OwnershipEvent(
            id=self._d.row_id(),
            step_id=step.id,
            node=node,
            event=event,
            lease_epoch=step.lease_epoch,
            at_ms=now,
        )
        self._d.events.append((row, detail))

    def _conflict(self, now: int, lease: LeaseRef, node: str, event: str) -> LeaseConflict:
        step = self._d.steps.get(lease.step_id)
        row = LeaseConflict(
            id=self._d.row_id(),
            step_id=lease.step_id,
            node=node,
            event=event,
            expected_epoch=lease.lease_epoch,
            actual_epoch=step.lease_epoch if step else None,
            actual_status=step.status.value if step else None,
            at_ms=now,
        )
        self._d.conflicts.append(row)
        return row

    def _lost(self, now: int, lease: LeaseRef, node: str, event: str) -> Exception:
        row = self._conflict(now, lease, node, event)
        return rules.lease_lost(lease, event, row.actual_epoch, row.actual_status)

    def _release_locks(self, step: _Step) -> None:
        for key in step.locks:
            if self._d.locks.get(key) == step.id:
                del self._d.locks[key]

    def _refresh(self, now: int, workflow_ids: Iterable[str]) -> None:
        for workflow_id in set(workflow_ids):
            wf = self._d.workflows.get(workflow_id)
            if wf is None:
                continue
            statuses = {self._d.steps[s].status for s in wf.steps}
            status = rules.workflow_status(
                active=bool(statuses & set(rows.ACTIVE_STATUSES)),
                pending=StepStatus.PENDING in statuses,
                dead=StepStatus.DEAD_LETTER in statuses,
                cancelled=StepStatus.CANCELLED in statuses,
            )
            if status is not wf.status:
                wf.status, wf.updated_at_ms = status, now

    def _deps_succeeded(self, step_id: str) -> bool:
        return all(
            self._d.steps[dep].status is StepStatus.SUCCEEDED
            for dep in self._d.deps.get(step_id, ())
        )

    def _step(self, step_id: str) -> _Step:
        step = self._d.steps.get(step_id)
        if step is None:
            raise NotFoundError(f"no step {step_id!r}")
        return step

    # -- lifecycle ------------------------------------------------------------------

    async def migrate(self) -> int:
        self._now()
        # The schema has no DDL here; its version follows the SQL backends' migrations.
        self._d.schema_version = len(load_migrations("sqlite"))
        return self._d.schema_version

    async def close(self) -> None:
        self._closed = True
        self._d.waiters.discard(self)

    async def backup(self, path: str) -> None:
        self._now()
        document = {
            "format": "relaymesh-memory-backup",
            "schema_version": self._d.schema_version,
            "taken_at_ms": self._now(),
            "tables": {
                "workflows": [asdict(w) for w in self._d.workflows.values()],
                "steps": [asdict(s) for s in self._d.steps.values()],
                "ownership_events": [asdict(e) for e, _ in self._d.events],
                "lease_conflicts": [asdict(c) for c in self._d.conflicts],
                "audit_log": [asdict(a) for a, _ in self._d.audit],
                "mesh_nodes": [asdict(n) for n in self._d.mesh.values()],
                "settings_history": [asdict(s) for s in self._d.settings],
            },
        }
        try:
            await asyncio.to_thread(_write_json, path, document)
        except OSError as exc:
            raise StoreError(f"cannot write backup {path!r}: {exc}") from exc

    async def now_ms(self) -> int:
        return self._now()

    async def wait_for_work(self, timeout_ms: int) -> None:
        self._now()
        self._d.waiters.add(self)
        if not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), max(timeout_ms, 0) / 1000)
            except TimeoutError:
                return
        self._wake.clear()

    # -- workflows (operator) ---------------------------------------------------------

    async def submit_workflow(self, spec: WorkflowSpec, actor: str) -> str:
        outcome = await self.submit_workflow_once(spec, actor, idempotency_key=None)
        return outcome.workflow_id

    async def submit_workflow_once(
        self,
        spec: WorkflowSpec,
        actor: str,
        *,
        idempotency_key: str | None,
        schedule: str | None = None,
        fire_at_ms: int | None = None,
        audit_details: dict[str, Any] | None = None,
    ) -> SubmitOutcome:
        plan = rules.plan_submit(spec, self._new_id)
        now = self._now()
        d = self._d
        if idempotency_key is not None:
            first = d.keys.get(idempotency_key)
            if first is not None:
                return SubmitOutcome(first.workflow_id, created=False)
            d.keys[idempotency_key] = _Key(plan.workflow_id, schedule, fire_at_ms)
        wf = _Workflow(plan.workflow_id, spec.name, plan.status, now, now)
        d.workflows[wf.id] = wf
        for s in spec.steps:
            d.seq += 1
            status = plan.step_status[s.name]
            step = _Step(
                id=plan.step_ids[s.name],
                seq=d.seq,
                workflow_id=wf.id,
                name=s.name,
                agent=s.agent,
                status=status,
                priority=Priority(s.priority),
                max_attempts=s.max_attempts,
                base_backoff_ms=s.base_backoff_ms,
                max_backoff_ms=s.max_backoff_ms,
                depends_on=tuple(s.depends_on),
                locks=plan.locks[s.name],
                n_dependents=plan.dependents[s.name],
                input=rows.dumps(s.input),
                created_at_ms=now,
                updated_at_ms=now,
                ready_at_ms=now if status is StepStatus.READY else None,
            )
            d.steps[step.id] = step
            wf.steps.append(step.id)
        for step_id, dep_id in plan.deps:
            d.deps.setdefault(step_id, []).append(dep_id)
            d.dependents.setdefault(dep_id, []).append(step_id)
        details = rules.submit_details(plan, spec, idempotency_key, audit_details)
        self._audit(now, actor, "submit", wf.id, details)
        self._signal()
        return SubmitOutcome(wf.id, created=True)

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepRecord]]:
        self._now()
        wf = self._d.workflows.get(workflow_id)
        if wf is None:
            raise NotFoundError(f"no workflow {workflow_id!r}")
        record = WorkflowRecord(wf.id, wf.name, wf.status, wf.created_at_ms, wf.updated_at_ms)
        steps = sorted((self._d.steps[s] for s in wf.steps), key=lambda s: (s.created_at_ms, s.seq))
        return record, [s.record() for s in steps]

    async def get_step(self, step_id: str) -> StepRecord:
        self._now()
        return self._step(step_id).record()

    async def list_steps(
        self,
        *,
        status: StepStatus | None = None,
        workflow_id: str | None = None,
        agent: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[StepRecord]:
        self._now()
        wanted = None if status is None else StepStatus(status)
        found = [
            s
            for s in self._d.steps.values()
            if (wanted is None or s.status is wanted)
            and (workflow_id is None or s.workflow_id == workflow_id)
            and (agent is None or s.agent == agent)
            and (before is None or (s.updated_at_ms, s.id) < before)
        ]
        # The SQL stores' order: (updated_at_ms, id), newest first (keyset paging).
        found.sort(key=lambda s: (s.updated_at_ms, s.id), reverse=True)
        return [s.record() for s in found[: max(limit, 0)]]

    async def cancel_workflow(self, workflow_id: str, mode: str, actor: str) -> CancelResult:
        rules.check_cancel_mode(mode)
        now = self._now()
        wf = self._d.workflows.get(workflow_id)
        if wf is None:
            raise NotFoundError(f"no workflow {workflow_id!r}")
        cancelled = 0
        fenced: list[str] = []
        for step in (self._d.steps[s] for s in wf.steps):
            if step.status in _WAITING:
                step.status = StepStatus.CANCELLED
                step.lease_expires_at_ms = None
                step.finished_at_ms = step.updated_at_ms = now
                cancelled += 1
            elif mode == "hard" and step.status is StepStatus.RUNNING:
                step.status = StepStatus.CANCELLED
                step.lease_epoch += 1
                step.lease_expires_at_ms = None
                step.finished_at_ms = step.updated_at_ms = now
                self._release_locks(step)
                self._event(now, step, step.owner_node, "cancelled", actor)
                fenced.append(step.id)
        self._refresh(now, [workflow_id])
        result = CancelResult(cancelled=cancelled + len(fenced), fenced_running=tuple(fenced))
        self._audit(
            now, actor, "cancel", workflow_id, rules.cancel_details(workflow_id, mode, result)
        )
        return result

    def _replay_one(self, now: int, step: _Step, actor: str) -> tuple[str, int] | None:
        if step.status not in rules.REPLAYABLE:
            return None
        from_attempt = step.attempt
        step.max_attempts, step.replays, _ = rows.replayed(step.record(), actor, now)
        new_status = rules.replay_status(self._deps_succeeded(step.id))
        step.status = new_status
        step.owner_node = step.lease_expires_at_ms = step.not_before_ms = None
        step.finished_at_ms = None
        step.ready_at_ms = now if new_status is StepStatus.READY else None
        step.updated_at_ms = now
        self._event(now, step, None, "replayed", actor)
        return step.workflow_id, from_attempt

    async def replay_step(self, step_id: str, actor: str) -> StepRecord:
        now = self._now()
        step = self._step(step_id)
        before = step.record()
        done = self._replay_one(now, step, actor)
        if done is None:
            raise rules.not_replayable(before.status, step_id)
        self._refresh(now, [done[0]])
        self._audit(now, actor, "replay", step_id, rules.replay_details(before, done[0]))
        self._signal()
        return step.record()

    async def replay_batch(
        self,
        *,
        status: StepStatus,
        limit: int,
        actor: str,
        agent: str | None = None,
        workflow_id: str | None = None,
    ) -> int:
        status = rules.check_replayable(status)
        now = self._now()
        found = sorted(
            (
                s
                for s in self._d.steps.values()
                if s.status is status
                and (agent is None or s.agent == agent)
                and (workflow_id is None or s.workflow_id == workflow_id)
            ),
            key=lambda s: (s.updated_at_ms, s.seq),
        )[: max(limit, 0)]
        replayed: list[str] = []
        from_attempts: dict[str, int] = {}
        touched: set[str] = set()
        for step in found:
            done = self._replay_one(now, step, actor)
            if done is not None:
                replayed.append(step.id)
                from_attempts[step.id] = done[1]
                touched.add(done[0])
        self._refresh(now, touched)
        details = rules.replay_batch_details(
            status=status,
            agent=agent,
            workflow_id=workflow_id,
            limit=limit,
            replayed=replayed,
            from_attempts=from_attempts,
        )
        self._audit(now, actor, "replay-batch", workflow_id, details)
        if replayed:
            self._signal()
        return len(replayed)

    # -- worker (fenced) -----------------------------------------------------------------

    async def claim_steps(
        self,
        node: str,
        *,
        limit: int,
        lease_ms: int,
        agents: Collection[str] | None = None,
        exclude_agents: Collection[str] = (),
        low_first: int = 0,
    ) -> list[Claim]:
        if limit <= 0:
            return []
        now = self._now()
        wanted = None if agents is None else set(agents)
        excluded = set(exclude_agents)
        candidates = sorted(
            (
                s
                for s in self._d.steps.values()
                if s.status in _CLAIMABLE
                and s.ready_at_ms is not None
                and s.ready_at_ms <= now
                and (wanted is None or s.agent in wanted)
                and s.agent not in excluded
                and not any(key in self._d.locks for key in s.locks)
            ),
            key=lambda s: (s.priority, s.ready_at_ms or 0, s.seq),
        )
        picked: list[str] = []
        held: set[str] = set()
        if low_first > 0:
            low = ((s.id, s.locks) for s in candidates if s.priority is Priority.LOW)
            rules.pick_batch(low, want=min(low_first, limit), picked=picked, held=held)
        rules.pick_batch(
            ((s.id, s.locks) for s in candidates), want=limit, picked=picked, held=held
        )
        claims: list[Claim] = []
        for step_id in picked:
            step = self._d.steps[step_id]
            step.status = StepStatus.RUNNING
            step.lease_token = f"{self._rng.getrandbits(128):032x}"
            step.lease_epoch += 1
            step.attempt += 1
            step.owner_node = node
            step.lease_expires_at_ms = now + lease_ms
            step.not_before_ms = None
            step.started_at_ms = step.heartbeat_at_ms = step.updated_at_ms = now
            self._event(now, step, node, "claimed", None)
            for key in step.locks:
                self._d.locks[key] = step.id
            upstream = {
                self._d.steps[dep].name: rows.loads(self._d.steps[dep].result)
                for dep in self._d.deps.get(step.id, ())
            }
            claims.append(
                Claim(
                    step_id=step.id,
                    workflow_id=step.workflow_id,
                    name=step.name,
                    agent=step.agent,
                    input=rows.loads(step.input),
                    upstream=upstream,
                    attempt=step.attempt,
                    max_attempts=step.max_attempts,
                    base_backoff_ms=step.base_backoff_ms,
                    max_backoff_ms=step.max_backoff_ms,
                    priority=step.priority,
                    lease_token=step.lease_token,
                    lease_epoch=step.lease_epoch,
                    lease_expires_at_ms=step.lease_expires_at_ms,
                    ready_at_ms=step.ready_at_ms,
                    locks=step.locks,
                )
            )
        return claims

    def _beat(self, now: int, lease: LeaseRef, lease_ms: int) -> int | None:
        step = self._d.steps.get(lease.step_id)
        if step is None or not step.holds(lease):
            return None
        step.lease_expires_at_ms = now + lease_ms
        step.heartbeat_at_ms = now
        return step.lease_expires_at_ms

    async def heartbeat(self, lease: LeaseRef, node: str, lease_ms: int) -> int:
        now = self._now()
        expires = self._beat(now, lease, lease_ms)
        if expires is None:
            raise self._lost(now, lease, node, "heartbeat")
        return expires

    async def heartbeat_many(
        self, node: str, leases: Sequence[LeaseRef], lease_ms: int
    ) -> dict[str, int | None]:
        if not leases:
            return {}
        now = self._now()
        out: dict[str, int | None] = {}
        for lease in leases:
            out[lease.step_id] = self._beat(now, lease, lease_ms)
            if out[lease.step_id] is None:
                self._conflict(now, lease, node, "heartbeat")
        return out

    def _success_many(
        self, now: int, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> tuple[list[bool], dict[str, LeaseConflict]]:
        committed: list[_Step] = []
        for lease, result in items:
            step = self._d.steps.get(lease.step_id)
            if step is None or not step.holds(lease):
                continue
            step.status = StepStatus.SUCCEEDED
            step.result = rows.dumps(result)
            step.error = step.lease_expires_at_ms = None
            step.finished_at_ms = step.updated_at_ms = now
            committed.append(step)
        out, rejected = rules.split_commits(
            [lease for lease, _ in items], {s.id for s in committed}
        )
        conflicts = {x.step_id: self._conflict(now, x, node, "commit_success") for x in rejected}
        readied = False
        for step in committed:
            self._release_locks(step)
            for dependent_id in self._d.dependents.get(step.id, ()):
                dependent = self._d.steps[dependent_id]
                if dependent.status is StepStatus.PENDING and self._deps_succeeded(dependent_id):
                    dependent.status = StepStatus.READY
                    dependent.ready_at_ms = dependent.updated_at_ms = now
                    readied = True
        if readied:
            self._signal()
        self._refresh(now, {s.workflow_id for s in committed})
        return out, conflicts

    async def commit_success(self, lease: LeaseRef, node: str, result: Any) -> None:
        now = self._now()
        out, conflicts = self._success_many(now, node, [(lease, result)])
        if not out[0]:
            row = conflicts[lease.step_id]
            raise rules.lease_lost(lease, "commit_success", row.actual_epoch, row.actual_status)

    async def commit_success_many(
        self, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> list[bool]:
        if not items:
            return []
        out, _ = self._success_many(self._now(), node, items)
        return out

    async def commit_failure(
        self, lease: LeaseRef, node: str, error: dict[str, Any], retry_delay_ms: int | None
    ) -> StepStatus:
        now = self._now()
        step = self._d.steps.get(lease.step_id)
        if step is None or not step.holds(lease):
            raise self._lost(now, lease, node, "commit_failure")
        step.error = rows.dumps(error)
        step.lease_expires_at_ms = None
        step.updated_at_ms = now
        self._release_locks(step)
        if retry_delay_ms is None:
            step.status = StepStatus.DEAD_LETTER
            step.finished_at_ms = now
            self._refresh(now, [step.workflow_id])
            return StepStatus.DEAD_LETTER
        step.status = StepStatus.RETRY_WAIT
        step.not_before_ms = step.ready_at_ms = now + max(retry_delay_ms, 0)
        self._signal()
        return StepStatus.RETRY_WAIT

    async def release(self, lease: LeaseRef, node: str, reason: str) -> None:
        now = self._now()
        step = self._d.steps.get(lease.step_id)
        if step is None or not step.holds(lease):
            raise self._lost(now, lease, node, "release")
        step.status = StepStatus.READY
        step.attempt = max(step.attempt - 1, 0)
        step.owner_node = step.lease_expires_at_ms = None
        step.ready_at_ms = step.updated_at_ms = now
        self._release_locks(step)
        self._event(now, step, node, "released", reason)
        self._signal()

    async def lost_leases(self, leases: Sequence[LeaseRef]) -> list[str]:
        self._now()
        return [
            lease.step_id
            for lease in leases
            if (step := self._d.steps.get(lease.step_id)) is None or not step.holds(lease)
        ]

    async def leases_held_by(self, node: str) -> list[LeaseRef]:
        self._now()
        held = [
            s
            for s in self._d.steps.values()
            if s.status is StepStatus.RUNNING and s.owner_node == node
        ]
        return [
            LeaseRef(s.id, s.lease_token or "", s.lease_epoch)
            for s in sorted(held, key=lambda s: s.id)
        ]

    # -- recovery and maintenance ----------------------------------------------------------

    def _reclaim(self, now: int, found: Sequence[_Step], event: str, why: str) -> list[str]:
        dead: set[str] = set()
        for step in found:
            owner = step.owner_node
            step.lease_epoch += 1
            step.lease_expires_at_ms = None
            step.updated_at_ms = now
            if rules.reclaim_to_dead_letter(step.attempt, step.max_attempts):
                step.status = StepStatus.DEAD_LETTER
                step.error = rows.dumps(rules.lost_error(step.attempt, why))
                step.finished_at_ms = now
                dead.add(step.workflow_id)
            else:
                step.status = StepStatus.READY
                step.owner_node = None
                step.ready_at_ms = now
            self._release_locks(step)
            self._event(now, step, owner, event, why)
        self._refresh(now, dead)
        if found:
            self._signal()
        return [s.id for s in found]

    def _running(self, keep: Callable[[_Step], bool]) -> list[_Step]:
        return [s for s in self._d.steps.values() if s.status is StepStatus.RUNNING and keep(s)]

    async def reclaim_expired(self, limit: int) -> list[str]:
        now = self._now()
        found = self._running(
            lambda s: s.lease_expires_at_ms is not None and s.lease_expires_at_ms < now
        )
        found.sort(key=lambda s: (s.lease_expires_at_ms or 0, s.seq))
        return self._reclaim(now, found[: max(limit, 0)], "lease_expired", "lease expired")

    async def reclaim_dead_owners(
        self,
        *,
        limit: int,
        actor: str,
        stale_after_ms: int,
        nodes: Collection[str] | None = None,
    ) -> DeadOwnerReclaim:
        now = self._now()
        if nodes is None:
            owners = {n.name for n in self._d.mesh.values() if n.status in _GONE}
        else:
            owners = set(nodes)
        theirs = self._running(lambda s: s.owner_node in owners)

        def last_seen(s: _Step) -> int:
            return s.heartbeat_at_ms if s.heartbeat_at_ms is not None else s.started_at_ms or 0

        stale = [s for s in theirs if last_seen(s) <= now - stale_after_ms]
        fresh = len(theirs) - len(stale)
        stale.sort(key=lambda s: (s.started_at_ms or 0, s.seq))
        chosen = stale[: max(limit, 0)]
        previous = [s.owner_node for s in chosen]
        reclaimed = self._reclaim(now, chosen, "dead_owner", "owner node dead")
        if reclaimed:  # maintenance calls this often: audit changes, not no-ops
            self._audit(now, actor, "recover", None, rules.recover_details(reclaimed, previous))
        return DeadOwnerReclaim(tuple(reclaimed), fresh)

    async def promote_retries(self, limit: int) -> int:
        now = self._now()
        due = [
            s
            for s in self._d.steps.values()
            if s.status is StepStatus.RETRY_WAIT
            and s.ready_at_ms is not None
            and s.ready_at_ms <= now
        ]
        due.sort(key=lambda s: (s.priority, s.ready_at_ms or 0, s.seq))
        for step in due[: max(limit, 0)]:
            step.status = StepStatus.READY
            step.updated_at_ms = now
        return min(len(due), max(limit, 0))

    async def acquire_leader(self, node: str, lease_ms: int) -> LeaderLease | None:
        now = self._now()
        holder, epoch, expires_at = self._d.leader or (None, 0, 0)
        new_epoch = rules.leader_epoch(holder, epoch, expires_at, node=node, now_ms=now)
        if new_epoch is None:
            return None
        self._d.leader = (node, new_epoch, now + lease_ms)
        return LeaderLease(node, new_epoch, now + lease_ms)

    async def release_leader(self, lease: LeaderLease) -> None:
        self._now()
        if self._d.leader is not None and self._d.leader[:2] == (lease.node, lease.epoch):
            self._d.leader = (lease.node, lease.epoch, 0)

    # -- mesh ------------------------------------------------------------------------------

    async def upsert_mesh_nodes(self, reporter: str, nodes: Sequence[MeshNode]) -> None:
        now = self._now()
        rank = {MemberStatus.ALIVE: 0, MemberStatus.SUSPECT: 1}
        for n in nodes:
            old = self._d.mesh.get(n.name)
            if old is not None and not (
                n.incarnation > old.incarnation
                or (
                    n.incarnation == old.incarnation
                    and rank.get(n.status, 2) > rank.get(old.status, 2)
                )
            ):
                continue
            changed_at = (
                old.status_changed_at_ms
                if old is not None and old.status is n.status
                else n.status_changed_at_ms
            )
            self._d.mesh[n.name] = MeshNode(
                name=n.name,
                address=n.address,
                status=n.status,
                incarnation=n.incarnation,
                metadata=rows.loads(rows.dumps(n.metadata)) or {},
                status_changed_at_ms=changed_at,
                updated_at_ms=now,
                reporter=reporter,
            )

    async def list_mesh_nodes(self) -> list[MeshNode]:
        self._now()
        return [self._d.mesh[name] for name in sorted(self._d.mesh)]

    async def prune_mesh_nodes(self, *, older_than_ms: int, limit: int, actor: str) -> int:
        now = self._now()
        gone = [
            n
            for n in self._d.mesh.values()
            if n.status in _GONE and n.status_changed_at_ms < now - older_than_ms
        ]
        gone.sort(key=lambda n: n.status_changed_at_ms)
        names = [n.name for n in gone[: max(limit, 0)]]
        if not names:  # maintenance calls this often: audit changes, not no-ops
            return 0
        for name in names:
            del self._d.mesh[name]
        self._audit(now, actor, "prune", None, rules.prune_details(names, older_than_ms))
        return len(names)

    async def running_by_owner_status(self) -> dict[str, int]:
        self._now()
        out: dict[str, int] = {}
        for s in self._running(lambda s: True):
            node = self._d.mesh.get(s.owner_node or "")
            status = node.status.value if node is not None else "UNKNOWN"
            out[status] = out.get(status, 0) + 1
        return out

    # -- operations ------------------------------------------------------------------------

    async def step_counts(self) -> dict[StepStatus, int]:
        self._now()
        counts = rows.zero_counts()
        for s in self._d.steps.values():
            counts[s.status] += 1
        return counts

    async def queue_lag_ms(self) -> int:
        now = self._now()
        ready = [
            s.ready_at_ms
            for s in self._d.steps.values()
            if s.status in _CLAIMABLE and s.ready_at_ms is not None and s.ready_at_ms <= now
        ]
        return max(0, now - min(ready)) if ready else 0

    async def list_ownership_events(
        self, *, since_ms: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[OwnershipEvent]:
        self._now()
        found = [
            e
            for e, _ in self._d.events
            if (since_ms is None or e.at_ms >= since_ms) and (before_id is None or e.id < before_id)
        ]
        return found[::-1][: max(limit, 0)]

    def _conflicts_since(self, since_ms: int | None) -> list[LeaseConflict]:
        return [c for c in self._d.conflicts if since_ms is None or c.at_ms >= since_ms]

    async def list_conflicts(
        self, *, since_ms: int | None = None, limit: int = 100
    ) -> list[LeaseConflict]:
        self._now()
        return self._conflicts_since(since_ms)[::-1][: max(limit, 0)]

    async def conflict_report(
        self, *, since_ms: int | None = None, top: int = 10
    ) -> ConflictReport:
        self._now()
        found = self._conflicts_since(since_ms)

        def pairs(key: Callable[[LeaseConflict], str]) -> list[tuple[str, int]]:
            counts: dict[str, int] = {}
            for c in found:
                counts[key(c)] = counts.get(key(c), 0) + 1
            return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(top, 0)]

        return ConflictReport(
            total=len(found),
            by_step=pairs(lambda c: c.step_id),
            by_node=pairs(lambda c: c.node),
            by_event=pairs(lambda c: c.event),
        )

    async def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any]
    ) -> None:
        self._audit(self._now(), actor, action, target, details)

    async def query_audit(
        self,
        *,
        task_id: str | None = None,
        action: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        self._now()
        found = [
            a
            for a, text in self._d.audit
            if (task_id is None or a.target == task_id or f'"{task_id}"' in text)
            and (action is None or a.action == action)
            and (from_ms is None or a.at_ms >= from_ms)
            and (to_ms is None or a.at_ms <= to_ms)
            and (before_id is None or a.id < before_id)
        ]
        return found[::-1][: max(limit, 0)]

    async def record_settings_change(
        self, node: str, fields: Sequence[str], refused: Sequence[str] = ()
    ) -> None:
        now = self._now()
        change = SettingsChange(self._d.row_id(), now, node, tuple(fields), tuple(refused))
        self._d.settings.append(change)
        self._audit(now, f"node:{node}", "reload", node, rules.reload_details(fields, refused))

    async def write_dispatch_stats(
        self, rows: Sequence[tuple[str, str, int, str, int]], *, keep_ms: int
    ) -> None:
        now = self._now()
        table = self._d.dispatch
        for node, agent, bucket_ms, reason, count in rows:
            table[(node, agent, bucket_ms, reason)] = count
        for key in [k for k in table if k[2] < now - keep_ms]:
            del table[key]

    async def dispatch_totals(self, window_ms: int) -> list[tuple[str, str, str, int]]:
        since = self._now() - window_ms
        sums: dict[tuple[str, str, str], int] = {}
        for (node, agent, bucket_ms, reason), count in self._d.dispatch.items():
            if bucket_ms >= since:
                sums[(node, agent, reason)] = sums.get((node, agent, reason), 0) + count
        return [(n, a, r, c) for (n, a, r), c in sorted(sums.items())]

    async def list_settings_history(self, limit: int = 20) -> list[SettingsChange]:
        self._now()
        return self._d.settings[::-1][: max(limit, 0)]

    # -- retention (work/retention.py) --------------------------------------------------------

    def _final_workflows(self, status: WorkflowStatus, cutoff: int) -> list[_Workflow]:
        found = [
            w
            for w in self._d.workflows.values()
            if w.status is status
            and w.updated_at_ms < cutoff
            and not any(self._d.steps[s].status in rows.ACTIVE_STATUSES for s in w.steps)
        ]
        return sorted(found, key=lambda w: w.updated_at_ms)

    async def retention_delete_workflows(
        self,
        status: WorkflowStatus,
        *,
        older_than_ms: int,
        limit: int,
        ids: Sequence[str] | None = None,
    ) -> dict[str, int]:
        now = self._now()
        only = None if ids is None else set(ids)
        found = [
            w
            for w in self._final_workflows(status, now - older_than_ms)
            if only is None or w.id in only
        ][: max(limit, 0)]
        counts = dict.fromkeys(WORKFLOW_TABLES, 0)
        if not found:
            return counts
        d = self._d
        step_ids = {s for w in found for s in w.steps}
        upto = max(w.updated_at_ms for w in found) + rules.EVENT_MARGIN_MS
        held = [key for key, holder in d.locks.items() if holder in step_ids]
        for key in held:
            del d.locks[key]
        counts["step_locks"] = len(held)
        for step_id in step_ids:
            for dep in d.deps.pop(step_id, ()):
                counts["step_deps"] += 1
                siblings = d.dependents.get(dep)
                if siblings is not None and step_id in siblings:
                    siblings.remove(step_id)
            d.dependents.pop(step_id, None)
        kept = [(e, x) for e, x in d.events if not (e.step_id in step_ids and e.at_ms <= upto)]
        counts["ownership_events"] = len(d.events) - len(kept)
        d.events = kept
        for step_id in step_ids:
            del d.steps[step_id]
        counts["steps"] = len(step_ids)
        gone = {w.id for w in found}
        latest = self._latest_fires()
        for key in [
            k
            for k, v in d.keys.items()
            if v.workflow_id in gone and (v.schedule is None or latest.get(v.schedule) != k)
        ]:
            del d.keys[key]
            counts["workflow_keys"] += 1
        for w in found:
            del d.workflows[w.id]
        counts["workflows"] = len(found)
        return counts

    def _latest_fires(self) -> dict[str, str]:
        """Schedule to the key of its latest fire (kept by retention, as in SQL)."""
        best: dict[str, tuple[int, str]] = {}
        for key, k in self._d.keys.items():
            if k.schedule is None or k.fire_at_ms is None:
                continue
            if k.schedule not in best or k.fire_at_ms > best[k.schedule][0]:
                best[k.schedule] = (k.fire_at_ms, key)
        return {schedule: key for schedule, (_, key) in best.items()}

    async def retention_export_workflows(
        self, status: WorkflowStatus, *, older_than_ms: int, limit: int
    ) -> list[dict[str, Any]]:
        raise StoreError("the in-memory store cannot archive: use SQLite or PostgreSQL")

    async def restore_tables(
        self, tables: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> dict[str, int]:
        raise StoreError("the in-memory store cannot restore a backup")

    async def import_workflows(self, docs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        raise StoreError("the in-memory store cannot import archives")

    def _dated(self, table: str) -> list[Any]:
        row_queries(table)  # the same refusal as the SQL backends
        if table == "lease_conflicts":
            return self._d.conflicts
        if table == "audit_log":
            return self._d.audit
        return self._d.settings

    @staticmethod
    def _at(row: Any) -> int:
        return int((row[0] if isinstance(row, tuple) else row).at_ms)

    async def retention_delete_rows(self, table: str, *, older_than_ms: int, limit: int) -> int:
        now = self._now()
        rows_ = self._dated(table)
        old = sorted(
            (i for i, r in enumerate(rows_) if self._at(r) < now - older_than_ms),
            key=lambda i: self._at(rows_[i]),
        )[: max(limit, 0)]
        for i in sorted(old, reverse=True):
            del rows_[i]
        return len(old)

    async def retention_count_workflows(self, status: WorkflowStatus, *, older_than_ms: int) -> int:
        return len(self._final_workflows(status, self._now() - older_than_ms))

    async def retention_count_rows(self, table: str, *, older_than_ms: int) -> int:
        cutoff = self._now() - older_than_ms
        return sum(1 for r in self._dated(table) if self._at(r) < cutoff)

    async def table_stats(self) -> dict[str, TableStats]:
        self._now()
        d = self._d
        tables: dict[str, list[Any]] = {
            "workflows": list(d.workflows.values()),
            "steps": list(d.steps.values()),
            "step_deps": [0] * sum(len(v) for v in d.deps.values()),
            "step_locks": list(d.locks),
            "ownership_events": [e for e, _ in d.events],
            "lease_conflicts": d.conflicts,
            "audit_log": [a for a, _ in d.audit],
            "mesh_nodes": list(d.mesh.values()),
            "settings_history": d.settings,
            "leader_lease": [d.leader] if d.leader else [],
            "schema_version": list(range(d.schema_version)),
            "workflow_keys": list(d.keys.values()),  # undated here: oldest None
            "dispatch_stats": [_Bucket(k[2]) for k in d.dispatch],
        }
        out: dict[str, TableStats] = {}
        for table in TABLES:
            found = tables.get(table, [])
            column = AGE_COLUMNS.get(table)
            dates = [getattr(r, column) for r in found if hasattr(r, column)] if column else []
            out[table] = TableStats(rows=len(found), bytes=None, oldest_ms=min(dates, default=None))
        return out

    async def reclaim_space(self, pages: int) -> int:
        return 0  # nothing to give back: freed rows are garbage-collected

    # -- idempotent submits, workflow listing, schedule fires ------------------------------

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        since_ms: int | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[WorkflowSummary]:
        self._now()
        by_workflow = {k.workflow_id: (key, k.schedule) for key, k in self._d.keys.items()}
        found = sorted(
            (
                w
                for w in self._d.workflows.values()
                if (status is None or w.status is status)
                and (name is None or w.name == name)
                and (since_ms is None or w.created_at_ms >= since_ms)
                and (before is None or (w.created_at_ms, w.id) < before)
            ),
            key=lambda w: (w.created_at_ms, w.id),
            reverse=True,
        )[: max(limit, 0)]
        listed = [
            (
                w.id,
                w.name,
                w.status.value,
                w.created_at_ms,
                w.updated_at_ms,
                *by_workflow.get(w.id, (None, None)),
            )
            for w in found
        ]
        counts: dict[tuple[str, str], int] = {}
        for w in found:
            for s in w.steps:
                key = (w.id, self._d.steps[s].status.value)
                counts[key] = counts.get(key, 0) + 1
        return rows.workflow_summaries(listed, [(wf, st, n) for (wf, st), n in counts.items()])

    async def last_schedule_fire(self, schedule: str) -> ScheduleFire | None:
        self._now()
        fires = [
            k for k in self._d.keys.values() if k.schedule == schedule and k.fire_at_ms is not None
        ]
        if not fires:
            return None
        last = max(fires, key=lambda k: k.fire_at_ms or 0)
        return ScheduleFire(last.fire_at_ms or 0, last.workflow_id)


def _write_json(path: str, document: dict[str, Any]) -> None:
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(document, out, default=str, separators=(",", ":"))
    os.replace(partial, path)
