"""The ``Store`` protocol: everything RelayMesh keeps, behind one interface.

Two backends implement it with the same meaning (``sqlite.py``, ``postgres.py``) and
pass one conformance suite (``tests/integration/store/``). The worker, maintenance,
the CLI and the web API use only this protocol, never a backend module.

Contracts common to every method:

* All methods are coroutines; each is one transaction unless it says otherwise.
  Either all of its writes happen or none do.
* Times are integer milliseconds since the epoch **from the store's clock**
  (PostgreSQL ``clock_timestamp()``; SQLite the host clock, shared by every process
  on the one host that can open the file). Lease expiry is never computed from a
  worker's clock.
* A store that is unreachable, locked past its busy timeout, or whose connection
  dropped raises ``StoreUnavailableError`` (safe to retry; fenced writes are
  idempotent). Anything else from the driver is translated to ``StoreError``.
* Operator actions (submit, cancel, replay, replay_batch, prune, recover, audit)
  take an ``actor`` and write their ``audit_log`` row in the same transaction.
* Fenced writes (heartbeat, commit_success, commit_failure, release) change the row
  only when ``(step_id, lease_token, lease_epoch)`` all match and the step is
  RUNNING. On a mismatch they change nothing else, insert one ``lease_conflicts``
  row (expected epoch, actual epoch and status) and raise ``LeaseLostError``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from relaymesh.model import (
    AuditRecord,
    CancelResult,
    Claim,
    DeadOwnerReclaim,
    LeaseConflict,
    LeaseRef,
    MeshNode,
    OwnershipEvent,
    ScheduleFire,
    SettingsChange,
    StepRecord,
    StepStatus,
    SubmitOutcome,
    WorkflowRecord,
    WorkflowSpec,
    WorkflowStatus,
    WorkflowSummary,
)
from relaymesh.store.retention import TableStats

__all__ = ["ConflictReport", "LeaderLease", "Store"]


@dataclass(frozen=True, slots=True)
class LeaderLease:
    """The maintenance leadership this node holds, fenced like a step lease."""

    node: str
    epoch: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class ConflictReport:
    total: int
    by_step: list[tuple[str, int]]
    by_node: list[tuple[str, int]]
    by_event: list[tuple[str, int]]


class Store(Protocol):
    url: str
    """The URL the store was opened with, password removed."""

    # -- lifecycle ---------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply pending numbered migrations; return the schema version. Idempotent,
        safe when several processes start at once."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...

    async def backup(self, path: str) -> None:
        """Write a consistent copy (SQLite: a database file; PostgreSQL: a JSON dump of
        every table) to ``path`` while writers keep running."""
        ...

    async def now_ms(self) -> int:
        """The store's clock."""
        ...

    async def wait_for_work(self, timeout_ms: int) -> None:
        """Return when new work may be claimable (a submit, a commit that readied a
        step, a replay, a reclaim) or after ``timeout_ms``. PostgreSQL: LISTEN/NOTIFY;
        SQLite: a cheap change check. A spurious return is allowed; never raises
        for a timeout."""
        ...

    # -- workflows (operator) ----------------------------------------------------

    async def submit_workflow(self, spec: WorkflowSpec, actor: str) -> str:
        """Insert the workflow and its steps; steps without dependencies are READY,
        the others PENDING. Returns the new workflow id."""
        ...

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepRecord]]:
        """Raises ``NotFoundError``."""
        ...

    async def get_step(self, step_id: str) -> StepRecord:
        """Raises ``NotFoundError``."""
        ...

    async def list_steps(
        self,
        *,
        status: StepStatus | None = None,
        workflow_id: str | None = None,
        agent: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[StepRecord]:
        """Newest first by ``(updated_at_ms, id)``; ``before`` is the keyset cursor (the
        last row of the previous page), so paging a quiet table never skips nor
        repeats a row (a step that changes meanwhile moves to the front)."""
        ...

    async def cancel_workflow(self, workflow_id: str, mode: str, actor: str) -> CancelResult:
        """``soft``: PENDING/READY/RETRY_WAIT steps become CANCELLED, RUNNING ones go on.
        ``hard``: RUNNING steps too; their epoch is bumped so any later fenced write by
        the old owner is rejected, and their locks are released. Raises
        ``NotFoundError``; ``InvalidStateError`` for an unknown mode."""
        ...

    async def replay_step(self, step_id: str, actor: str) -> StepRecord:
        """A DEAD_LETTER (or CANCELLED) step back to READY with a fresh attempt budget.
        Raises ``NotFoundError``, ``InvalidStateError`` when it is not replayable."""
        ...

    async def replay_batch(
        self,
        *,
        status: StepStatus,
        limit: int,
        actor: str,
        agent: str | None = None,
        workflow_id: str | None = None,
    ) -> int:
        """Replay up to ``limit`` matching steps; returns how many. Idempotent: a step
        already replayed is no longer in ``status`` and is not enqueued twice."""
        ...

    # -- worker (fenced) -----------------------------------------------------------

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
        """Claim up to ``limit`` claimable steps in one transaction (CAS).

        Claimable: READY, or RETRY_WAIT whose ``not_before`` has passed; agent in
        ``agents`` (``None``: any) and not in ``exclude_agents``; none of its lock keys
        held by a RUNNING step nor by another step in this same batch. Order: priority,
        then ready_at; but the first ``low_first`` picks are taken from LOW-priority
        steps when there are any (the anti-starvation guard). Each claim: status
        RUNNING, fresh random ``lease_token``, ``lease_epoch + 1``, ``attempt + 1``,
        owner, ``lease_expires_at = now + lease_ms``, locks taken, an ownership event
        ``claimed``. Never blocks on rows another claimer holds."""
        ...

    async def heartbeat(self, lease: LeaseRef, node: str, lease_ms: int) -> int:
        """Extend the lease to ``now + lease_ms``; return the new expiry. Fenced."""
        ...

    async def commit_success(self, lease: LeaseRef, node: str, result: Any) -> None:
        """SUCCEEDED with ``result``; release its locks; in the same transaction make every
        dependent whose dependencies have now all succeeded READY; update the workflow's
        status. Fenced: exactly one success commit per step can ever succeed."""
        ...

    async def commit_success_many(
        self, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> list[bool]:
        """``commit_success`` for each item in one transaction (throughput): True where it
        committed, False where the fence rejected it (conflict recorded, nothing raised)."""
        ...

    async def heartbeat_many(
        self, node: str, leases: Sequence[LeaseRef], lease_ms: int
    ) -> dict[str, int | None]:
        """``heartbeat`` for each lease in one transaction: step id to new expiry, or None
        where the fence rejected it (conflict recorded, nothing raised)."""
        ...

    async def commit_failure(
        self, lease: LeaseRef, node: str, error: dict[str, Any], retry_delay_ms: int | None
    ) -> StepStatus:
        """Record ``error``; release locks. ``retry_delay_ms`` not None: RETRY_WAIT with
        ``not_before = now + retry_delay_ms``; None: DEAD_LETTER (workflow status updated,
        dependents stay PENDING). Returns the new status. Fenced."""
        ...

    async def release(self, lease: LeaseRef, node: str, reason: str) -> None:
        """Give the step back unfinished (drain): READY at once, ``attempt - 1`` so the run
        that never finished does not use up a retry, locks released, ownership event
        ``released``. Fenced."""
        ...

    async def lost_leases(self, leases: Sequence[LeaseRef]) -> list[str]:
        """Of these leases, the step ids that no longer match (cancelled, reclaimed,
        fenced). Read-only; lets an owner kill agents promptly after a hard cancel."""
        ...

    async def leases_held_by(self, node: str) -> list[LeaseRef]:
        """The leases of every RUNNING step the store says ``node`` owns. Read-only. A
        worker compares them with what it knows it holds: a claim whose answer was lost
        (the connection died after the server committed it) shows up here only."""
        ...

    # -- recovery and maintenance ----------------------------------------------------

    async def reclaim_expired(self, limit: int) -> list[str]:
        """RUNNING steps whose lease expired go back to READY (or DEAD_LETTER with error
        kind ``lost`` when their attempts are used up); epoch bumped, locks released,
        ownership event ``lease_expired``. Returns their ids."""
        ...

    async def reclaim_dead_owners(
        self,
        *,
        limit: int,
        actor: str,
        stale_after_ms: int,
        nodes: Collection[str] | None = None,
    ) -> DeadOwnerReclaim:
        """Like ``reclaim_expired`` for RUNNING steps owned by nodes that ``mesh_nodes``
        says are DEAD or LEFT (or by ``nodes`` when given), without waiting for expiry,
        but only those whose lease was last claimed or heartbeated more than
        ``stale_after_ms`` ago by the store's clock: the verdict is a hint, the missing
        heartbeat the evidence. Ownership event ``dead_owner``; audited when anything
        moved. Returns the steps moved and how many of those owners' steps were left
        alone because they are still heartbeated (at most ``limit`` moved per call)."""
        ...

    async def promote_retries(self, limit: int) -> int:
        """RETRY_WAIT steps whose ``not_before`` has passed become READY. (Claims take them
        anyway; this keeps what operators see true.)"""
        ...

    async def acquire_leader(self, node: str, lease_ms: int) -> LeaderLease | None:
        """Take or renew the single maintenance leadership; None when another node holds an
        unexpired one. A takeover bumps the epoch."""
        ...

    async def release_leader(self, lease: LeaderLease) -> None:
        """Give leadership up (only if ``lease`` still holds it)."""
        ...

    # -- mesh -------------------------------------------------------------------------

    async def upsert_mesh_nodes(self, reporter: str, nodes: Sequence[MeshNode]) -> None:
        """Record a node's view. Per member the row changes only when the report is newer
        by the membership merge rule (higher incarnation; at equal incarnation
        DEAD/LEFT > SUSPECT > ALIVE), so a stale reporter cannot resurrect a dead node."""
        ...

    async def list_mesh_nodes(self) -> list[MeshNode]: ...

    async def prune_mesh_nodes(self, *, older_than_ms: int, limit: int, actor: str) -> int:
        """Forget up to ``limit`` DEAD/LEFT members whose status changed more than
        ``older_than_ms`` ago; audited. Returns how many."""
        ...

    async def running_by_owner_status(self) -> dict[str, int]:
        """RUNNING steps counted by their owner's mesh status (``ALIVE``... or
        ``UNKNOWN`` for an owner the mesh table does not know)."""
        ...

    async def write_dispatch_stats(
        self, rows: Sequence[tuple[str, str, int, str, int]], *, keep_ms: int
    ) -> None:
        """Upsert ``(node, agent, bucket_ms, reason, count)`` rows of the dispatch window
        (absolute counts: writing a row twice is harmless) and delete every row, any
        node's, whose bucket is older than ``keep_ms`` (store clock). One transaction."""
        ...

    async def dispatch_totals(self, window_ms: int) -> list[tuple[str, str, str, int]]:
        """``(node, agent, reason, count)`` summed over the buckets of the last
        ``window_ms`` (store clock), ordered by node, agent, reason."""
        ...

    # -- operations -------------------------------------------------------------------

    async def step_counts(self) -> dict[StepStatus, int]: ...

    async def queue_lag_ms(self) -> int:
        """Age of the oldest claimable step (0 when none)."""
        ...

    async def list_ownership_events(
        self, *, since_ms: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[OwnershipEvent]:
        """Newest first by id; ``before_id``: the keyset cursor (ids below it only)."""
        ...

    async def list_conflicts(
        self, *, since_ms: int | None = None, limit: int = 100
    ) -> list[LeaseConflict]: ...

    async def conflict_report(
        self, *, since_ms: int | None = None, top: int = 10
    ) -> ConflictReport: ...

    async def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any]
    ) -> None:
        """For actions whose change is not in the store (e.g. a reload request)."""
        ...

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
        """Newest first by id; ``before_id``: the keyset cursor (ids below it only).
        ``task_id`` matches the target or a step/workflow id in details."""
        ...

    async def record_settings_change(
        self, node: str, fields: Sequence[str], refused: Sequence[str] = ()
    ) -> None:
        """One ``settings_history`` row plus its audit row (action ``reload``): the
        changed fields applied, and those ``refused`` because they need a restart."""
        ...

    async def list_settings_history(self, limit: int = 20) -> list[SettingsChange]: ...

    # -- retention (work/retention.py) ---------------------------------------------------

    async def retention_delete_workflows(
        self,
        status: WorkflowStatus,
        *,
        older_than_ms: int,
        limit: int,
        ids: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Remove up to ``limit`` workflows in ``status`` (a final one: SUCCEEDED,
        CANCELLED or FAILED) last changed more than ``older_than_ms`` ago by the store's
        clock, oldest first, each whole (its steps, step_deps, step_locks, ownership
        events and workflow_keys but a schedule's latest fire) in this one transaction;
        a workflow with a step that can still run is never removed. ``ids``: only
        among these (the batch just archived). Returns rows removed per table
        (``WORKFLOW_TABLES``)."""
        ...

    async def retention_export_workflows(
        self, status: WorkflowStatus, *, older_than_ms: int, limit: int
    ) -> list[dict[str, Any]]:
        """Read-only: the workflows ``retention_delete_workflows`` would remove next,
        oldest first, each as one archive document (``store/transfer.py``)."""
        ...

    async def restore_tables(
        self, tables: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> dict[str, int]:
        """Load a backup's rows (table name to neutral rows, ``store/transfer.py``) in
        one transaction. Refuses (``InvalidStateError``) a store that has any workflow;
        rows the store already has by key (mesh members, kept schedule fires) are
        skipped, generated ids renumbered. Returns rows given per table."""
        ...

    async def import_workflows(self, docs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """Re-import archive documents in one transaction: ``(imported, skipped)``, a
        workflow whose id the store already has being skipped (idempotent)."""
        ...

    async def retention_delete_rows(self, table: str, *, older_than_ms: int, limit: int) -> int:
        """Remove up to ``limit`` rows of ``table`` (one of ``ROW_TABLES``) dated more than
        ``older_than_ms`` ago, oldest first, in one transaction; returns how many."""
        ...

    async def retention_count_workflows(self, status: WorkflowStatus, *, older_than_ms: int) -> int:
        """How many workflows ``retention_delete_workflows`` would remove without a limit."""
        ...

    async def retention_count_rows(self, table: str, *, older_than_ms: int) -> int:
        """How many rows ``retention_delete_rows`` would remove without a limit."""
        ...

    async def table_stats(self) -> dict[str, TableStats]:
        """Rows, bytes (with indexes) and the oldest row's date for every table. Reads
        every table once: an operator's command, not for a hot loop."""
        ...

    async def reclaim_space(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system in one short
        transaction (SQLite incremental vacuum); returns how many. 0 where the backend
        leaves it to itself (PostgreSQL autovacuum)."""
        ...

    # -- idempotent submits, workflow listing, schedule fires ------------------------

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
        """``submit_workflow`` guarded by a unique ``idempotency_key``: when the key is
        already taken (by a committed submit, or one committing concurrently) return
        the first workflow's id with ``created=False`` and write nothing, audit row
        included. ``schedule``/``fire_at_ms`` mark a schedule's fire (see
        ``last_schedule_fire``); ``audit_details`` are merged into the submit's audit
        row. Without a key this is ``submit_workflow``."""
        ...

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        since_ms: int | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[WorkflowSummary]:
        """Newest first by ``(created_at_ms, id)``; ``before`` is the keyset cursor (the
        last row of the previous page), so paging never skips nor repeats a row."""
        ...

    async def last_schedule_fire(self, schedule: str) -> ScheduleFire | None:
        """The recorded fire of ``schedule`` with the latest fire time, or None."""
        ...
