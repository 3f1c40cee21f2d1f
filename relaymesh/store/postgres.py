"""The PostgreSQL ``Store``: the shared store of clusters that span hosts.

Owns: the asyncpg pool, the LISTEN connection behind ``wait_for_work``, and the
PostgreSQL side of every ``Store`` method. Must not: know about workers, HTTP or gossip.

* Time is the server's ``clock_timestamp()`` (``rm_now_ms()`` in SQL), so a worker's
  clock can never stretch a lease.
* Claims select with ``FOR UPDATE SKIP LOCKED`` and take lock keys with a non-blocking
  advisory try-lock, so a claimer never waits for rows or keys another claimer holds.
* A transaction that can change a workflow's status or ready its dependents locks the
  workflow rows first, in id order: two commits finishing a workflow's last two steps
  then see each other's result (no step left PENDING, no workflow left RUNNING), and
  the lock order stays deadlock-free.
* The pool connects lazily and replaces dropped connections, so the store recovers by
  itself after a server restart or failover; until then calls raise
  ``StoreUnavailableError``. A multi-host URL (``h1:5432,h2:5432`` with
  ``target_session_attrs=read-write``) is tried host by host, each with its own connect
  timeout, so a dead first host does not hide the new primary behind it.
* When a call finds the server gone (or read-only: a demoted primary), every pooled
  connection and the LISTEN connection are dropped, so the next call reconnects to
  whichever host is the primary now and LISTEN is re-subscribed there.
* Every call runs under a deadline (``CALL_DEADLINE_S``: pool wait, statements, COMMIT
  and the connection's reset), so a hung server or a blackholed host slows a node but
  never wedges it; past it the call raises ``StoreUnavailableError``.
* Fenced writes are idempotent: retried after a connection died mid-COMMIT (outcome
  unknown), a commit or release that did land is found in place, under the same lease
  token and epoch with the same result, and reported as done, not as a lease conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from relaymesh.clock import Clock, SystemClock
from relaymesh.exceptions import (
    InvalidStateError,
    NotFoundError,
    RelayMeshError,
    StoreError,
    StoreUnavailableError,
)
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
    actor_details,
)
from relaymesh.store import rows, rules
from relaymesh.store.base import ConflictReport, LeaderLease
from relaymesh.store.queries import load_migrations, load_queries, own_tables
from relaymesh.store.retention import (
    AGE_COLUMNS,
    TABLES,
    WORKFLOW_TABLES,
    TableStats,
    row_queries,
)
from relaymesh.store.transfer import (
    RESTORE_ORDER,
    SERIAL_COLUMNS,
    archive_documents,
    neutral,
)
from relaymesh.store.url import per_host_urls, redact_url

__all__ = ["PostgresStore"]

T = TypeVar("T")
Conn = Any  # an asyncpg connection (untyped library)

Q = load_queries("postgres")

CHANNEL = "relaymesh_work"
_DEFAULT_POOL_MAX = 8
CONNECT_TIMEOUT_S = 5.0
"""Longest one host may take to accept a connection (TCP, startup, the
``target_session_attrs`` check); each host of a multi-host URL gets its own."""
CALL_DEADLINE_S = 15.0
"""Longest one store call may take end to end, reconnecting included (two hosts that
both time out take 2 x ``CONNECT_TIMEOUT_S``). Shorter than any sane lease, so a node
whose store hangs backs off and retries well before its leases run out."""
# A node frozen (SIGSTOP, a VM pause) inside a transaction holds row locks that the
# reclaim of its own steps needs; the server ends such a transaction after this long,
# so recovery waits seconds, not until the node wakes. No RelayMesh transaction idles.
_IDLE_IN_TRANSACTION_TIMEOUT_MS = 5000
_CLOSE_TIMEOUT_S = 5.0

_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    # A connection killed under the driver can leave its protocol in a state it reports
    # this way; the connection is discarded and the next call gets a fresh one.
    asyncpg.exceptions.InternalClientError,
    # A primary demoted to a standby (a switchover) still accepts the connections it had;
    # they must go so the next one finds the new primary.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    OSError,  # TimeoutError included
    ConnectionError,
)


def _translate(exc: BaseException) -> RelayMeshError:
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailableError(f"postgresql store unavailable: {exc}")
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc).lower():
        return StoreUnavailableError(f"postgresql store unavailable: {exc}")
    if isinstance(exc, asyncpg.exceptions.PostgresError | asyncpg.exceptions.InterfaceError):
        return StoreError(f"postgresql error: {exc}")
    return StoreError(f"postgresql store failed: {exc!r}")


def _discard(conn: Conn) -> None:
    """Close ``conn`` at once, never to be reused. When the connection died under the
    driver, the pool has already taken it back and every proxy method, ``terminate``
    included, raises ``InterfaceError``: then there is nothing left to close."""
    with contextlib.suppress(asyncpg.exceptions.InterfaceError):
        conn.terminate()


async def _connect_each_host(
    dsn: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, **kwargs: Any
) -> Any:
    """``asyncpg.connect`` host by host: asyncpg spends one ``timeout`` on the whole host
    list, so a blackholed first host would use it all and the primary behind it would
    never be tried. The first host that accepts and matches ``target_session_attrs``
    wins; with none, the last host's error is raised."""
    kwargs.pop("timeout", None)
    last: BaseException | None = None
    for one in per_host_urls(dsn):
        try:
            return await asyncpg.connect(one, timeout=connect_timeout_s, **kwargs)
        except (
            OSError,  # refused, unreachable, TimeoutError
            asyncpg.exceptions.InternalClientError,  # TargetServerAttributeNotMatched
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down
            asyncpg.exceptions.InterfaceError,
        ) as exc:
            last = exc
    assert last is not None
    raise last


def _fence_arrays(leases: Sequence[LeaseRef]) -> tuple[list[str], list[str], list[int]]:
    return (
        [lease.step_id for lease in leases],
        [lease.lease_token for lease in leases],
        [lease.lease_epoch for lease in leases],
    )


class PostgresStore:
    """``Store`` on PostgreSQL. Use ``open_store``; ``connect()`` then ``migrate()``."""

    def __init__(
        self,
        dsn: str,
        *,
        url: str | None = None,
        pool_max: int = _DEFAULT_POOL_MAX,
        call_deadline_s: float = CALL_DEADLINE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        clock: Clock | None = None,
    ):
        self._dsn = dsn
        self._connect = functools.partial(_connect_each_host, connect_timeout_s=connect_timeout_s)
        self.url = url or redact_url(dsn)
        self._pool_max = pool_max
        self._deadline_s = call_deadline_s
        self._pool: Any = None
        self._listener: Any = None
        self._listener_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closed = False
        # Row ids only: every time a row keeps is the server's (rm_now_ms()).
        self._new_id = rows.IdMaker(clock or SystemClock())

    # -- plumbing -------------------------------------------------------------------

    async def connect(self) -> None:
        """Create the pool. It connects lazily, so this succeeds while the server is
        down; the first call that needs a connection raises ``StoreUnavailableError``."""
        if self._pool is not None:
            return
        if self._closed:
            raise StoreError("the store is closed")
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._pool_max,
                connect=self._connect,
                statement_cache_size=256,
                max_inactive_connection_lifetime=60.0,
                server_settings={
                    "application_name": "relaymesh",
                    "idle_in_transaction_session_timeout": str(_IDLE_IN_TRANSACTION_TIMEOUT_MS),
                },
            )
        except (ValueError, TypeError) as exc:
            raise StoreError(f"bad PostgreSQL URL {self.url!r}: {exc}") from exc
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            raise _translate(exc) from exc

    async def _run(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        *,
        tx: bool = True,
        deadline_s: float | None = None,
    ) -> T:
        """Run ``fn(conn)`` on a pooled connection, in one transaction unless ``tx`` is
        False, within ``call_deadline_s`` (or ``deadline_s``, for an operator's long
        call); translate driver errors. On an outage every connection of the server
        goes (``_drop_all``)."""
        if self._pool is None:
            await self.connect()
        pool = self._pool
        limit_s = deadline_s or self._deadline_s
        try:
            async with asyncio.timeout(limit_s):
                return await self._attempt(pool, fn, tx)
        except RelayMeshError:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except TimeoutError as exc:
            await self._drop_all(pool)
            raise StoreUnavailableError(
                f"postgresql store unavailable: no answer within {limit_s:g} s"
            ) from exc
        except Exception as exc:
            error = _translate(exc)
            # A deadlock or serialization failure is worth a retry, not a reconnect.
            rollback = isinstance(exc, asyncpg.exceptions.TransactionRollbackError)
            if isinstance(error, StoreUnavailableError) and not rollback:
                await self._drop_all(pool)
            raise error from exc

    async def _attempt(self, pool: Any, fn: Callable[[Conn], Awaitable[T]], tx: bool) -> T:
        conn = await pool.acquire()
        try:
            if not tx:
                return await fn(conn)
            async with conn.transaction():
                return await fn(conn)
        except BaseException as exc:
            if isinstance(exc, (*_UNAVAILABLE, asyncio.CancelledError)):
                # Dead, hung (the deadline cancelled us mid-statement) or read-only: never
                # hand it back to the pool, and do not wait on it to be reset.
                _discard(conn)
            raise
        finally:
            # A closed connection just frees its slot; a live one is reset, within the
            # deadline like the rest (its timeout terminates it).
            await pool.release(conn, timeout=self._deadline_s)

    async def _drop_all(self, pool: Any) -> None:
        """The server went away (or stopped being the primary): drop every connection of
        it, pooled and listening, so the next call connects to whichever host is primary
        now. Idle pooled connections close at once; those in use are replaced when they
        are given back. The waiter is woken to re-LISTEN and look for work once."""
        if pool is not None and pool is self._pool:
            await pool.expire_connections()
            for holder in getattr(pool, "_holders", ()):
                # Idle ones would fail one by one on their next use: close them now.
                if holder._in_use is None and holder._con is not None:
                    holder._con.terminate()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.terminate()
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------

    async def migrate(self) -> int:
        migrations = load_migrations("postgres")

        async def apply(conn: Conn) -> int:
            # The advisory lock makes concurrent migrators take turns; each then sees
            # the versions the previous one applied.
            await conn.execute(Q["migrate_lock"])
            await conn.execute(Q["schema_version_create"])
            current: int = await conn.fetchval(Q["schema_version_current"])
            for migration in migrations:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(Q["schema_version_insert"], migration.version, migration.name)
                current = migration.version
            return current

        return await self._run(apply)

    async def close(self) -> None:
        self._closed = True
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None:
            await _close_quietly(listener.close(), listener.terminate)
        if pool is not None:
            await _close_quietly(pool.close(), pool.terminate)

    async def backup(self, path: str) -> None:
        async def dump(conn: Conn) -> dict[str, Any]:
            tables: dict[str, list[dict[str, Any]]] = {}
            own = set(own_tables("postgres"))
            for record in await conn.fetch(Q["backup_tables"]):
                name = record[0]
                if name not in own:
                    continue  # another application's table in the same schema
                quoted = '"' + name.replace('"', '""') + '"'
                tables[name] = [dict(r) for r in await conn.fetch(f"SELECT * FROM {quoted}")]
            version = await conn.fetchval(Q["schema_version_current"])
            return {
                "format": "relaymesh-postgres-backup",
                "schema_version": version,
                "taken_at_ms": await conn.fetchval(Q["now_ms"]),
                "tables": tables,
            }

        async def consistent(conn: Conn) -> dict[str, Any]:
            # One snapshot for every table while writers go on.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await dump(conn)

        if not await asyncio.to_thread(_directory_exists, path):
            raise StoreError(f"cannot write backup {path!r}: its directory does not exist")
        document = await self._run(consistent, tx=False)
        try:
            await asyncio.to_thread(_write_json, path, document)
        except OSError as exc:
            raise StoreError(f"cannot write backup {path!r}: {exc}") from exc

    async def now_ms(self) -> int:
        return int(await self._run(lambda conn: conn.fetchval(Q["now_ms"]), tx=False))

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        # One opener at a time: two waiters must not each open a LISTEN connection.
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            if self._closed:
                raise StoreError("the store is closed")
            self._listener = await self._open_listener()
        # Notifications sent while we were not listening are lost: look once.
        self._wake.set()

    async def _open_listener(self) -> Any:
        """A new LISTEN connection; on any failure, cancellation included, the half-made
        connection is terminated here (nothing else holds it) and never leaks."""
        listener: Any = None
        try:
            async with asyncio.timeout(self._deadline_s):
                listener = await self._connect(self._dsn)
                await listener.add_listener(CHANNEL, self._on_notify)
            listener.add_termination_listener(self._on_notify)
            if self._closed:  # close() ran while we were connecting
                raise StoreError("the store is closed")
        except BaseException as exc:
            if listener is not None:
                listener.terminate()
            if isinstance(exc, RelayMeshError) or not isinstance(exc, Exception):
                raise  # ours, or a cancellation / interrupt: as it is
            raise _translate(exc) from exc
        return listener

    async def wait_for_work(self, timeout_ms: int) -> None:
        """LISTEN ``relaymesh_work``: submits, readied dependents, retries, releases,
        replays and reclaims NOTIFY it in their transaction."""
        await self._ensure_listener()
        if not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), max(timeout_ms, 0) / 1000)
            except TimeoutError:
                return
        self._wake.clear()

    # -- shared transaction pieces --------------------------------------------------------

    @staticmethod
    async def _audit(
        conn: Conn, actor: str, action: str, *, target: str | None, details: Any
    ) -> None:
        await conn.execute(
            Q["audit_insert"], str(actor), action, target, rows.dumps(actor_details(actor, details))
        )

    @staticmethod
    async def _refresh_workflows(conn: Conn, workflow_ids: Collection[str]) -> list[str]:
        """Set each workflow's status from its steps. Returns the workflows whose only
        unfinished steps were RUNNING: under a KEY SHARE lock those may be committing
        concurrently, unseen, so their status is looked at again after the commit."""
        if not workflow_ids:
            return []
        recheck: list[str] = []
        for r in await conn.fetch(Q["workflow_shapes"], sorted(workflow_ids)):
            status = rules.workflow_status(
                active=r[2], pending=r[3], dead=r[4], cancelled=r[5]
            ).value
            if status != r[1]:
                await conn.execute(Q["workflow_set_status"], r[0], status)
            elif r[2] and not r[3] and not r[6]:
                recheck.append(r[0])
        return recheck

    async def _recheck_workflows(self, workflow_ids: list[str]) -> None:
        """After success commits that ran under KEY SHARE: two nodes committing the
        last steps of one workflow at once each saw the other's step still RUNNING.
        This runs after our own commit, so whichever recheck starts last sees both;
        it takes the exclusive lock, as every other status writer does."""
        if not workflow_ids:
            return

        async def recheck(conn: Conn) -> None:
            await conn.fetch(Q["workflows_lock"], sorted(workflow_ids))
            await self._refresh_workflows(conn, workflow_ids)

        await self._run(recheck)

    @staticmethod
    async def _conflicts(
        conn: Conn, leases: Sequence[LeaseRef], node: str, event: str
    ) -> dict[str, tuple[Any, Any]]:
        """Record one conflict per lease; step id to (actual epoch, actual status)."""
        if not leases:
            return {}
        found = await conn.fetch(Q["conflicts_insert"], *_fence_arrays(leases), node, event)
        return {r[0]: (r[1], r[2]) for r in found}

    async def _success_many(
        self, conn: Conn, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> tuple[list[bool], dict[str, tuple[Any, Any]], list[str]]:
        """Commit successes; returns the verdicts, the conflicts and the workflows to
        recheck after the commit (``_recheck_workflows``)."""
        leases = [lease for lease, _ in items]
        # Rows are locked in step id order, like every other batch writer (no deadlock);
        # workflow rows first, in id order, KEY SHARE (see the query).
        ordered = sorted(items, key=lambda item: item[0].step_id)
        ids, tokens, epochs = _fence_arrays([lease for lease, _ in ordered])
        await conn.fetch(Q["workflows_share_for_steps"], ids)
        done = await conn.fetch(
            Q["fence_success"], ids, tokens, epochs, [rows.dumps(r) for _, r in ordered]
        )
        committed = {r[0] for r in done}
        missed = [item for item in ordered if item[0].step_id not in committed]
        landed: set[str] = set()
        if missed:
            ids, tokens, epochs = _fence_arrays([lease for lease, _ in missed])
            found = await conn.fetch(
                Q["fence_success_landed"], ids, tokens, epochs, [rows.dumps(r) for _, r in missed]
            )
            landed = {r[0] for r in found}
        out, rejected = rules.split_commits(leases, committed, landed)
        conflicts = await self._conflicts(conn, rejected, node, "commit_success")
        with_locks = [r[0] for r in done if r[2]]
        if with_locks:
            await conn.execute(Q["locks_release"], with_locks)
        with_dependents = [r[0] for r in done if r[3]]
        if with_dependents:
            readied = await conn.execute(Q["ready_dependents"], with_dependents)
            if readied != "UPDATE 0":
                await conn.execute(Q["notify_work"])
        recheck = await self._refresh_workflows(conn, {r[1] for r in done})
        return out, conflicts, recheck

    # -- workflows (operator) -------------------------------------------------------------

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
        workflow_id, ids, steps = plan.workflow_id, plan.step_ids, spec.steps

        async def submit(conn: Conn) -> SubmitOutcome:
            now = await conn.fetchval(Q["now_ms"])
            if idempotency_key is not None:
                # A concurrent insert of the same key waits on the unique index until
                # the first commits, then does nothing; the SELECT (a new snapshot
                # under READ COMMITTED) sees the winner's row.
                claimed = await conn.execute(
                    Q["workflow_key_claim"], idempotency_key, workflow_id, schedule, fire_at_ms, now
                )
                if claimed.endswith(" 0"):
                    first = await conn.fetchval(Q["workflow_key_get"], idempotency_key)
                    return SubmitOutcome(first, created=False)
            await conn.execute(Q["workflow_insert"], workflow_id, spec.name, plan.status.value, now)
            if steps:
                await conn.execute(
                    Q["steps_insert"],
                    workflow_id,
                    now,
                    [ids[s.name] for s in steps],
                    [s.name for s in steps],
                    [s.agent for s in steps],
                    [plan.step_status[s.name].value for s in steps],
                    [int(s.priority) for s in steps],
                    [s.max_attempts for s in steps],
                    [s.base_backoff_ms for s in steps],
                    [s.max_backoff_ms for s in steps],
                    [json.dumps(list(s.depends_on)) for s in steps],
                    [json.dumps(list(plan.locks[s.name])) for s in steps],
                    [plan.dependents[s.name] for s in steps],
                    [rows.dumps(s.input) for s in steps],
                )
            if plan.deps:
                await conn.execute(
                    Q["step_deps_insert"], [d[0] for d in plan.deps], [d[1] for d in plan.deps]
                )
            await self._audit(
                conn,
                actor,
                "submit",
                target=workflow_id,
                details=rules.submit_details(plan, spec, idempotency_key, audit_details),
            )
            await conn.execute(Q["notify_work"])
            return SubmitOutcome(workflow_id, created=True)

        return await self._run(submit)

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepRecord]]:
        async def get(conn: Conn) -> tuple[WorkflowRecord, list[StepRecord]]:
            row = await conn.fetchrow(Q["workflow_get"], workflow_id)
            if row is None:
                raise NotFoundError(f"no workflow {workflow_id!r}")
            steps = await conn.fetch(Q["workflow_steps"], workflow_id)
            return rows.workflow_record(row), [rows.step_record(s) for s in steps]

        return await self._run(get)

    async def get_step(self, step_id: str) -> StepRecord:
        async def get(conn: Conn) -> StepRecord:
            row = await conn.fetchrow(Q["step_get"], step_id)
            if row is None:
                raise NotFoundError(f"no step {step_id!r}")
            return rows.step_record(row)

        return await self._run(get, tx=False)

    async def list_steps(
        self,
        *,
        status: StepStatus | None = None,
        workflow_id: str | None = None,
        agent: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[StepRecord]:
        status_text = None if status is None else StepStatus(status).value
        before_ms, before_id = before if before is not None else (_TOP_MS, "")
        common: tuple[Any, ...] = (agent, before_ms, before_id, limit)
        args: tuple[Any, ...]
        if workflow_id is not None:
            query, args = Q["steps_list_workflow"], (*common, workflow_id, status_text)
        elif status_text is not None:
            query, args = Q["steps_list_status"], (*common, status_text)
        else:
            query, args = Q["steps_list"], common

        async def listing(conn: Conn) -> list[StepRecord]:
            return [rows.step_record(r) for r in await conn.fetch(query, *args)]

        return await self._run(listing, tx=False)

    # -- workflow listing and schedule fires ----------------------------------------------

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        since_ms: int | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[WorkflowSummary]:
        async def listing(conn: Conn) -> list[WorkflowSummary]:
            found = await conn.fetch(
                Q["workflows_list"],
                status.value if status else None,
                name,
                since_ms,
                # A first page: a cursor above every row (one index range scan).
                before[0] if before else _TOP_MS,
                before[1] if before else "",
                limit,
            )
            ids = [r[0] for r in found]
            counts = await conn.fetch(Q["workflows_step_counts"], ids)
            return rows.workflow_summaries(found, counts)

        # One snapshot for the page and its counts.
        return await self._run(listing)

    async def last_schedule_fire(self, schedule: str) -> ScheduleFire | None:
        async def last(conn: Conn) -> ScheduleFire | None:
            row = await conn.fetchrow(Q["schedule_last_fire"], schedule)
            return ScheduleFire(row[0], row[1]) if row else None

        return await self._run(last, tx=False)

    async def cancel_workflow(self, workflow_id: str, mode: str, actor: str) -> CancelResult:
        rules.check_cancel_mode(mode)

        async def cancel(conn: Conn) -> CancelResult:
            if not await conn.fetch(Q["workflows_lock"], [workflow_id]):
                raise NotFoundError(f"no workflow {workflow_id!r}")
            tag = await conn.execute(Q["cancel_waiting"], workflow_id)
            cancelled = int(tag.split()[-1])
            fenced: list[str] = []
            if mode == "hard":
                running = await conn.fetch(Q["cancel_running"], workflow_id)
                fenced = [r[0] for r in running]
                with_locks = [r[0] for r in running if r[3]]
                if with_locks:
                    await conn.execute(Q["locks_release"], with_locks)
                if running:
                    await conn.execute(
                        Q["events_insert"],
                        fenced,
                        [r[1] for r in running],
                        [r[2] for r in running],
                        "cancelled",
                        actor,
                    )
            await self._refresh_workflows(conn, [workflow_id])
            result = CancelResult(cancelled=cancelled + len(fenced), fenced_running=tuple(fenced))
            await self._audit(
                conn,
                actor,
                "cancel",
                target=workflow_id,
                details=rules.cancel_details(workflow_id, mode, result),
            )
            return result

        return await self._run(cancel)

    @staticmethod
    async def _replay_one(conn: Conn, step_id: str, actor: str) -> tuple[str, int] | None:
        """Back to READY (PENDING when a dependency has not succeeded), keeping the
        attempt counter and recording the replay (``rows.replayed``); (workflow id, the
        attempt it was replayed from), or None when the step is not replayable. The
        caller holds the workflow lock."""
        current = await conn.fetchrow(Q["step_get"], step_id)
        if current is None:
            return None
        before = rows.step_record(current)
        now = int(await conn.fetchval(Q["now_ms"]))
        max_attempts, replays, _ = rows.replayed(before, actor, now)
        ready = await conn.fetchval(Q["deps_all_succeeded"], step_id)
        new_status = rules.replay_status(bool(ready))
        row = await conn.fetchrow(
            Q["replay_update"], step_id, new_status.value, max_attempts, replays
        )
        if row is None:
            return None
        await conn.execute(Q["events_insert"], [step_id], [None], [row[1]], "replayed", actor)
        return str(row[0]), before.attempt

    async def replay_step(self, step_id: str, actor: str) -> StepRecord:
        async def replay(conn: Conn) -> StepRecord:
            await conn.fetch(Q["workflows_lock_for_steps"], [step_id])
            row = await conn.fetchrow(Q["step_get"], step_id)
            if row is None:
                raise NotFoundError(f"no step {step_id!r}")
            before = rows.step_record(row)
            done = await self._replay_one(conn, step_id, actor)
            if done is None:
                raise rules.not_replayable(before.status, step_id)
            workflow_id, _ = done
            await self._refresh_workflows(conn, [workflow_id])
            await self._audit(
                conn,
                actor,
                "replay",
                target=step_id,
                details=rules.replay_details(before, workflow_id),
            )
            await conn.execute(Q["notify_work"])
            return rows.step_record(await conn.fetchrow(Q["step_get"], step_id))

        return await self._run(replay)

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

        async def replay(conn: Conn) -> int:
            found = await conn.fetch(
                Q["replay_candidates"], status.value, agent, workflow_id, limit
            )
            await conn.fetch(Q["workflows_lock"], sorted({r[1] for r in found}))
            replayed: list[str] = []
            touched: set[str] = set()
            from_attempts: dict[str, int] = {}
            for r in found:
                # Re-checked under the workflow lock: a concurrent batch replays a step once.
                done = await self._replay_one(conn, r[0], actor)
                if done is not None:
                    replayed.append(r[0])
                    touched.add(done[0])
                    from_attempts[r[0]] = done[1]
            await self._refresh_workflows(conn, touched)
            await self._audit(
                conn,
                actor,
                "replay-batch",
                target=workflow_id,
                details=rules.replay_batch_details(
                    status=status,
                    agent=agent,
                    workflow_id=workflow_id,
                    limit=limit,
                    replayed=replayed,
                    from_attempts=from_attempts,
                ),
            )
            if replayed:
                await conn.execute(Q["notify_work"])
            return len(replayed)

        return await self._run(replay)

    # -- worker (fenced) ------------------------------------------------------------------

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
        agent_list = None if agents is None else list(agents)
        excluded = list(exclude_agents)

        async def claim(conn: Conn) -> list[Claim]:
            seen: list[str] = []
            picked: list[str] = []
            held: set[str] = set()

            async def fill(query: str, want: int) -> None:
                while len(picked) < want:
                    page = want - len(picked)
                    found = await conn.fetch(query, agent_list, excluded, page, seen)
                    seen.extend(r[0] for r in found)
                    for step_id, keys in found:
                        if len(picked) >= want:
                            break
                        if any(key in held for key in keys):
                            continue
                        if keys:
                            got = await conn.fetch(Q["claim_locks"], keys, step_id)
                            if len(got) != len(keys):
                                if got:
                                    await conn.execute(Q["locks_release"], [step_id])
                                continue
                        picked.append(step_id)
                        held.update(keys)
                    if len(found) < page:
                        return

            if low_first > 0:
                await fill(Q["claim_candidates_low"], min(low_first, limit))
            await fill(Q["claim_candidates"], limit)
            if not picked:
                return []
            claimed = await conn.fetch(Q["claim_update"], picked, node, lease_ms)
            upstream: dict[str, dict[str, Any]] = {}
            with_deps = [r[0] for r in claimed if r[15]]
            if with_deps:
                for step_id, name, result in await conn.fetch(Q["upstream_results"], with_deps):
                    upstream.setdefault(step_id, {})[name] = rows.loads(result)
            order = {step_id: i for i, step_id in enumerate(picked)}
            return [
                rows.claim_record(r, upstream.get(r[0], {}))
                for r in sorted(claimed, key=lambda r: order[r[0]])
            ]

        async def fast(conn: Conn) -> list[Claim] | None:
            found = await conn.fetch(
                Q["claim_fast"], agent_list, excluded, limit, node, lease_ms, max(low_first, 0)
            )
            if found[0][0] is None:
                return None if found[0][18] else []
            return [
                rows.claim_record(r, rows.loads(r[17]) or {})
                for r in sorted(found, key=lambda r: (r[19], r[9], r[13] or 0))
            ]

        # One statement, one round trip (the anti-starvation LOW picks included: they
        # are asked for on most rounds of a busy queue); None: a candidate needs lock
        # keys, which only the general path takes.
        claims = await self._run(fast, tx=False)
        if claims is not None:
            return claims
        return await self._run(claim)

    async def heartbeat(self, lease: LeaseRef, node: str, lease_ms: int) -> int:
        async def beat(conn: Conn) -> tuple[int | None, tuple[Any, Any]]:
            found = await conn.fetch(Q["fence_heartbeat"], *_fence_arrays([lease]), lease_ms)
            if found:
                return int(found[0][1]), (None, None)
            conflicts = await self._conflicts(conn, [lease], node, "heartbeat")
            return None, conflicts.get(lease.step_id, (None, None))

        expires, actual = await self._run(beat)
        if expires is None:
            raise rules.lease_lost(lease, "heartbeat", *actual)
        return expires

    async def heartbeat_many(
        self, node: str, leases: Sequence[LeaseRef], lease_ms: int
    ) -> dict[str, int | None]:
        if not leases:
            return {}
        ordered = sorted(leases, key=lambda lease: lease.step_id)

        async def beat(conn: Conn) -> dict[str, int | None]:
            found = await conn.fetch(Q["fence_heartbeat"], *_fence_arrays(ordered), lease_ms)
            extended = {r[0]: int(r[1]) for r in found}
            rejected = [lease for lease in ordered if lease.step_id not in extended]
            await self._conflicts(conn, rejected, node, "heartbeat")
            return {lease.step_id: extended.get(lease.step_id) for lease in leases}

        return await self._run(beat)

    async def commit_success(self, lease: LeaseRef, node: str, result: Any) -> None:
        out, conflicts, recheck = await self._run(
            lambda conn: self._success_many(conn, node, [(lease, result)])
        )
        await self._recheck_workflows(recheck)
        if not out[0]:
            raise rules.lease_lost(
                lease, "commit_success", *conflicts.get(lease.step_id, (None, None))
            )

    async def commit_success_many(
        self, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> list[bool]:
        if not items:
            return []
        out, _, recheck = await self._run(lambda conn: self._success_many(conn, node, items))
        await self._recheck_workflows(recheck)
        return out

    async def commit_failure(
        self, lease: LeaseRef, node: str, error: dict[str, Any], retry_delay_ms: int | None
    ) -> StepStatus:
        fence = (lease.step_id, lease.lease_token, lease.lease_epoch, rows.dumps(error))

        async def fail(conn: Conn) -> tuple[StepStatus | None, tuple[Any, Any]]:
            if retry_delay_ms is None:
                await conn.fetch(Q["workflows_lock_for_steps"], [lease.step_id])
                row = await conn.fetchrow(Q["fence_dead_letter"], *fence)
                status = StepStatus.DEAD_LETTER
            else:
                row = await conn.fetchrow(Q["fence_retry"], *fence, max(retry_delay_ms, 0))
                status = StepStatus.RETRY_WAIT
            if row is None:
                landed = await conn.fetchval(Q["fence_failure_landed"], *fence)
                if landed is not None:  # our own earlier try, retried: done already
                    done = StepStatus.DEAD_LETTER if landed == "DEAD_LETTER" else status
                    return done, (None, None)
                conflicts = await self._conflicts(conn, [lease], node, "commit_failure")
                return None, conflicts.get(lease.step_id, (None, None))
            if row[1]:
                await conn.execute(Q["locks_release"], [lease.step_id])
            if status is StepStatus.DEAD_LETTER:
                await self._refresh_workflows(conn, [row[0]])
            else:
                await conn.execute(Q["notify_work"])
            return status, (None, None)

        status, actual = await self._run(fail)
        if status is None:
            raise rules.lease_lost(lease, "commit_failure", *actual)
        return status

    async def release(self, lease: LeaseRef, node: str, reason: str) -> None:
        async def give_back(conn: Conn) -> tuple[bool, tuple[Any, Any]]:
            row = await conn.fetchrow(
                Q["fence_release"],
                lease.step_id,
                lease.lease_token,
                lease.lease_epoch,
                node,
                reason,
            )
            if row is None:
                fence = (lease.step_id, lease.lease_token, lease.lease_epoch)
                if await conn.fetchval(Q["fence_release_landed"], *fence) is not None:
                    return True, (None, None)  # our own earlier try, retried
                conflicts = await self._conflicts(conn, [lease], node, "release")
                return False, conflicts.get(lease.step_id, (None, None))
            if row[0]:
                await conn.execute(Q["locks_release"], [lease.step_id])
            await conn.execute(Q["notify_work"])
            return True, (None, None)

        ok, actual = await self._run(give_back)
        if not ok:
            raise rules.lease_lost(lease, "release", *actual)

    async def lost_leases(self, leases: Sequence[LeaseRef]) -> list[str]:
        if not leases:
            return []

        async def check(conn: Conn) -> list[str]:
            found = await conn.fetch(Q["lease_states"], [lease.step_id for lease in leases])
            state = {r[0]: (r[1], r[2], r[3]) for r in found}
            return rules.lost_lease_ids(leases, state)

        return await self._run(check, tx=False)

    async def leases_held_by(self, node: str) -> list[LeaseRef]:
        async def listing(conn: Conn) -> list[LeaseRef]:
            found = await conn.fetch(Q["leases_held_by"], node)
            return [LeaseRef(r[0], r[1], int(r[2])) for r in found]

        return await self._run(listing, tx=False)

    # -- recovery and maintenance ------------------------------------------------------------

    async def _reclaim(
        self,
        conn: Conn,
        chosen: Sequence[Any],
        *,
        mode: str,
        event: str,
        why: str,
        stale_after_ms: int = 0,
    ) -> list[tuple[str, str | None]]:
        """Put these RUNNING steps ((id, lease epoch) rows, as chosen) back to READY, or
        DEAD_LETTER (kind ``lost``) when out of attempts. Under the row lock each must
        still hold the lease it was chosen by (another node may have reclaimed and
        re-claimed it since); ``mode`` ``expired`` also re-checks the expiry, ``owner``
        that the lease has not been heartbeated for ``stale_after_ms``.
        Returns (step id, previous owner) of each step reclaimed."""
        if not chosen:
            return []
        ids = [r[0] for r in chosen]
        await conn.fetch(Q["workflows_lock_for_steps"], ids)
        found = await conn.fetch(
            Q["reclaim_lock_rows"], ids, mode, [r[1] for r in chosen], stale_after_ms
        )
        if not found:
            return []
        dead = [r for r in found if rules.reclaim_to_dead_letter(r[3], r[4])]
        back = [r[0] for r in found if not rules.reclaim_to_dead_letter(r[3], r[4])]
        epochs: dict[str, int] = {}
        if back:
            for step_id, epoch in await conn.fetch(Q["reclaim_ready"], back):
                epochs[step_id] = epoch
        if dead:
            errors = [rows.dumps(rules.lost_error(r[3], why)) for r in dead]
            for step_id, epoch in await conn.fetch(
                Q["reclaim_dead_letter"], [r[0] for r in dead], errors
            ):
                epochs[step_id] = epoch
        with_locks = [r[0] for r in found if r[5]]
        if with_locks:
            await conn.execute(Q["locks_release"], with_locks)
        reclaimed = [r[0] for r in found]
        await conn.execute(
            Q["events_insert"],
            reclaimed,
            [r[2] for r in found],
            [epochs[step_id] for step_id in reclaimed],
            event,
            why,
        )
        await self._refresh_workflows(conn, {r[1] for r in dead})
        if back:
            await conn.execute(Q["notify_work"])
        return [(r[0], r[2]) for r in found]

    async def reclaim_expired(self, limit: int) -> list[str]:
        async def reclaim(conn: Conn) -> list[str]:
            chosen = await conn.fetch(Q["expired_running"], limit)
            done = await self._reclaim(
                conn, chosen, mode="expired", event="lease_expired", why="lease expired"
            )
            return [step_id for step_id, _ in done]

        return await self._run(reclaim)

    async def reclaim_dead_owners(
        self,
        *,
        limit: int,
        actor: str,
        stale_after_ms: int,
        nodes: Collection[str] | None = None,
    ) -> DeadOwnerReclaim:
        async def reclaim(conn: Conn) -> DeadOwnerReclaim:
            if nodes is None:
                found = await conn.fetch(Q["dead_owner_running"], limit, stale_after_ms)
                fresh = await conn.fetchval(Q["dead_owner_fresh_count"], stale_after_ms)
            else:
                names = list(nodes)
                found = await conn.fetch(Q["named_owner_running"], limit, names, stale_after_ms)
                fresh = await conn.fetchval(Q["named_owner_fresh_count"], names, stale_after_ms)
            done = await self._reclaim(
                conn,
                found,
                mode="owner",
                event="dead_owner",
                why="owner node dead",
                stale_after_ms=stale_after_ms,
            )
            reclaimed = tuple(step_id for step_id, _ in done)
            if reclaimed:  # maintenance calls this often: audit changes, not no-ops
                await self._audit(
                    conn,
                    actor,
                    "recover",
                    target=None,
                    details=rules.recover_details(reclaimed, (owner for _, owner in done)),
                )
            return DeadOwnerReclaim(reclaimed, int(fresh))

        return await self._run(reclaim)

    async def promote_retries(self, limit: int) -> int:
        async def promote(conn: Conn) -> int:
            tag = await conn.execute(Q["promote_retries"], limit)
            return int(tag.split()[-1])

        return await self._run(promote)

    async def acquire_leader(self, node: str, lease_ms: int) -> LeaderLease | None:
        async def acquire(conn: Conn) -> LeaderLease | None:
            holder, epoch, expires_at, now = await conn.fetchrow(Q["leader_get"])
            epoch = rules.leader_epoch(holder, epoch, expires_at, node=node, now_ms=now)
            if epoch is None:
                return None
            expires = await conn.fetchval(Q["leader_set"], node, epoch, lease_ms)
            return LeaderLease(node, int(epoch), int(expires))

        return await self._run(acquire)

    async def release_leader(self, lease: LeaderLease) -> None:
        await self._run(lambda conn: conn.execute(Q["leader_release"], lease.node, lease.epoch))

    # -- mesh ------------------------------------------------------------------------------

    async def upsert_mesh_nodes(self, reporter: str, nodes: Sequence[MeshNode]) -> None:
        if not nodes:
            return
        args = [
            (
                n.name,
                n.address,
                n.status.value,
                n.incarnation,
                rows.dumps(n.metadata),
                n.status_changed_at_ms,
                reporter,
            )
            for n in sorted(nodes, key=lambda n: n.name)
        ]
        await self._run(lambda conn: conn.executemany(Q["mesh_upsert"], args))

    async def list_mesh_nodes(self) -> list[MeshNode]:
        async def listing(conn: Conn) -> list[MeshNode]:
            return [rows.mesh_node(r) for r in await conn.fetch(Q["mesh_list"])]

        return await self._run(listing, tx=False)

    async def prune_mesh_nodes(self, *, older_than_ms: int, limit: int, actor: str) -> int:
        async def prune(conn: Conn) -> int:
            names = [r[0] for r in await conn.fetch(Q["mesh_prune"], older_than_ms, limit)]
            if not names:  # maintenance calls this often: audit changes, not no-ops
                return 0
            await self._audit(
                conn,
                actor,
                "prune",
                target=None,
                details=rules.prune_details(names, older_than_ms),
            )
            return len(names)

        return await self._run(prune)

    async def running_by_owner_status(self) -> dict[str, int]:
        async def count(conn: Conn) -> dict[str, int]:
            found = await conn.fetch(Q["running_by_owner_status"])
            return {str(status): int(n) for status, n in found}

        return await self._run(count, tx=False)

    async def write_dispatch_stats(
        self, rows: Sequence[tuple[str, str, int, str, int]], *, keep_ms: int
    ) -> None:
        # Sorted: two nodes pruning and upserting at once take row locks in one order.
        ordered = sorted(rows)

        async def write(conn: Conn) -> None:
            if ordered:
                await conn.executemany(Q["dispatch_upsert"], ordered)
            await conn.execute(Q["dispatch_prune"], keep_ms)

        await self._run(write)

    async def dispatch_totals(self, window_ms: int) -> list[tuple[str, str, str, int]]:
        async def totals(conn: Conn) -> list[tuple[str, str, str, int]]:
            found = await conn.fetch(Q["dispatch_totals"], window_ms)
            return [(str(n), str(a), str(r), int(c)) for n, a, r, c in found]

        return await self._run(totals, tx=False)

    # -- operations -------------------------------------------------------------------------

    async def step_counts(self) -> dict[StepStatus, int]:
        async def count(conn: Conn) -> dict[StepStatus, int]:
            counts = rows.zero_counts()
            for status, n in await conn.fetch(Q["step_counts"]):
                counts[StepStatus(status)] = int(n)
            return counts

        return await self._run(count, tx=False)

    async def queue_lag_ms(self) -> int:
        lag = await self._run(lambda conn: conn.fetchval(Q["queue_lag"]), tx=False)
        return max(0, int(lag))

    async def list_ownership_events(
        self, *, since_ms: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[OwnershipEvent]:
        below = _TOP_ID if before_id is None else before_id

        async def listing(conn: Conn) -> list[OwnershipEvent]:
            found = await conn.fetch(Q["ownership_events_list"], since_ms, limit, below)
            return [rows.event_record(r) for r in found]

        return await self._run(listing, tx=False)

    async def list_conflicts(
        self, *, since_ms: int | None = None, limit: int = 100
    ) -> list[LeaseConflict]:
        async def listing(conn: Conn) -> list[LeaseConflict]:
            found = await conn.fetch(Q["conflicts_list"], since_ms, limit)
            return [rows.conflict_record(r) for r in found]

        return await self._run(listing, tx=False)

    async def conflict_report(
        self, *, since_ms: int | None = None, top: int = 10
    ) -> ConflictReport:
        async def report(conn: Conn) -> ConflictReport:
            async def pairs(name: str) -> list[tuple[str, int]]:
                return [(str(k), int(n)) for k, n in await conn.fetch(Q[name], since_ms, top)]

            return ConflictReport(
                total=int(await conn.fetchval(Q["conflicts_total"], since_ms)),
                by_step=await pairs("conflicts_by_step"),
                by_node=await pairs("conflicts_by_node"),
                by_event=await pairs("conflicts_by_event"),
            )

        return await self._run(report)

    async def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any]
    ) -> None:
        await self._run(
            lambda conn: self._audit(conn, actor, action, target=target, details=details)
        )

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
        below = _TOP_ID if before_id is None else before_id

        async def query(conn: Conn) -> list[AuditRecord]:
            found = await conn.fetch(
                Q["audit_query"], task_id, action, from_ms, to_ms, limit, below
            )
            return [rows.audit_record(r) for r in found]

        return await self._run(query, tx=False)

    async def record_settings_change(
        self, node: str, fields: Sequence[str], refused: Sequence[str] = ()
    ) -> None:
        column = rows.settings_fields(fields, refused)
        details = rules.reload_details(fields, refused)

        async def record(conn: Conn) -> None:
            await conn.execute(Q["settings_insert"], node, column)
            await self._audit(conn, f"node:{node}", "reload", target=node, details=details)

        await self._run(record)

    async def list_settings_history(self, limit: int = 20) -> list[SettingsChange]:
        async def listing(conn: Conn) -> list[SettingsChange]:
            return [rows.settings_change(r) for r in await conn.fetch(Q["settings_list"], limit)]

        return await self._run(listing, tx=False)

    # -- retention (work/retention.py) --------------------------------------------------------

    async def retention_delete_workflows(
        self,
        status: WorkflowStatus,
        *,
        older_than_ms: int,
        limit: int,
        ids: Sequence[str] | None = None,
    ) -> dict[str, int]:
        only = None if ids is None else list(ids)

        async def delete(conn: Conn) -> dict[str, int]:
            counts = dict.fromkeys(WORKFLOW_TABLES, 0)
            found = await conn.fetch(
                Q["retention_workflow_candidates"],
                status.value,
                older_than_ms,
                limit,
                only,
            )
            if not found:
                return counts
            kept = await conn.fetch(Q["retention_still_final"], [r[0] for r in found], status.value)
            ids = [r[0] for r in kept]
            if not ids:
                return counts
            step_ids = [r[0] for r in await conn.fetch(Q["retention_step_ids"], ids)]
            upto = max(int(r[1]) for r in found if r[0] in set(ids)) + rules.EVENT_MARGIN_MS
            counts["step_locks"] = _rowcount(
                await conn.execute(Q["retention_delete_locks"], step_ids)
            )
            counts["step_deps"] = _rowcount(
                await conn.execute(Q["retention_delete_deps"], step_ids)
            )
            counts["ownership_events"] = _rowcount(
                await conn.execute(Q["retention_delete_events"], step_ids, upto)
            )
            counts["workflow_keys"] = _rowcount(await conn.execute(Q["retention_delete_keys"], ids))
            counts["steps"] = _rowcount(await conn.execute(Q["retention_delete_steps"], ids))
            counts["workflows"] = _rowcount(
                await conn.execute(Q["retention_delete_workflows"], ids)
            )
            return counts

        return await self._run(delete)

    async def retention_export_workflows(
        self, status: WorkflowStatus, *, older_than_ms: int, limit: int
    ) -> list[dict[str, Any]]:
        async def export(conn: Conn) -> list[dict[str, Any]]:
            found = await conn.fetch(Q["archive_candidates"], status.value, older_than_ms, limit)
            if not found:
                return []
            ids = [r[0] for r in found]
            upto = max(int(r[1]) for r in found) + rules.EVENT_MARGIN_MS

            async def select(query: str, table: str, *args: Any) -> list[dict[str, Any]]:
                return [neutral(table, r) for r in await conn.fetch(query, ids, *args)]

            by_id = {r["id"]: r for r in await select(Q["archive_workflows"], "workflows")}
            return archive_documents(
                [by_id[i] for i in ids],
                await select(Q["archive_steps"], "steps"),
                await select(Q["archive_deps"], "step_deps"),
                await select(Q["archive_events"], "ownership_events", upto),
                await select(Q["archive_keys"], "workflow_keys"),
            )

        async def snapshot(conn: Conn) -> list[dict[str, Any]]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await export(conn)

        return await self._run(snapshot, tx=False)

    @staticmethod
    async def _insert(
        conn: Conn, table: str, given: Sequence[Mapping[str, Any]], *, drop: Collection[str] = ()
    ) -> int:
        """Insert neutral rows, columns the schema lacks ignored, generated ids (and
        ``drop``) left to the table's defaults, a row whose key is already there
        skipped. Returns how many rows were given."""
        if not given:
            return 0
        have = [r[0] for r in await conn.fetch(Q["restore_columns"], table)]
        skip = {SERIAL_COLUMNS.get(table), *drop}
        columns = [c for c in have if c not in skip and c in given[0]]
        # The table name comes from RESTORE_ORDER, never from the input.
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))}) "
            "ON CONFLICT DO NOTHING"
        )
        await conn.executemany(statement, [[row.get(c) for c in columns] for row in given])
        return len(given)

    async def restore_tables(
        self, tables: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> dict[str, int]:
        async def load(conn: Conn) -> dict[str, int]:
            await conn.execute(Q["restore_lock"])
            present = int(await conn.fetchval(Q["restore_workflow_count"]))
            if present:
                raise InvalidStateError(
                    f"the store already has {present} workflows: a backup is restored "
                    "only into an empty store"
                )
            counts = {
                table: await self._insert(conn, table, [neutral(table, r) for r in tables[table]])
                for table in RESTORE_ORDER
                if table in tables
            }
            await conn.fetchval(Q["restore_steps_seq"])
            return counts

        # One transaction for the whole backup (all or nothing) may take minutes.
        return await self._run(load, deadline_s=_RESTORE_DEADLINE_S)

    async def import_workflows(self, docs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        async def load(conn: Conn) -> tuple[int, int]:
            await conn.execute(Q["restore_lock"])
            imported = skipped = 0
            for doc in docs:
                if await conn.fetchval(Q["restore_workflow_exists"], doc["workflow"]["id"]):
                    skipped += 1
                    continue
                await self._insert(conn, "workflows", [doc["workflow"]])
                await self._insert(
                    conn, "steps", [neutral("steps", s) for s in doc["steps"]], drop=("seq",)
                )
                await self._insert(conn, "step_deps", doc["step_deps"])
                await self._insert(conn, "ownership_events", doc["ownership_events"])
                await self._insert(conn, "workflow_keys", doc["workflow_keys"])
                imported += 1
            return imported, skipped

        return await self._run(load)

    async def retention_delete_rows(self, table: str, *, older_than_ms: int, limit: int) -> int:
        query = Q[row_queries(table)[0]]

        async def delete(conn: Conn) -> int:
            return _rowcount(await conn.execute(query, older_than_ms, limit))

        return await self._run(delete)

    async def retention_count_workflows(self, status: WorkflowStatus, *, older_than_ms: int) -> int:
        async def count(conn: Conn) -> int:
            return int(
                await conn.fetchval(Q["retention_count_workflows"], status.value, older_than_ms)
            )

        return await self._run(count, tx=False)

    async def retention_count_rows(self, table: str, *, older_than_ms: int) -> int:
        query = Q[row_queries(table)[1]]

        async def count(conn: Conn) -> int:
            return int(await conn.fetchval(query, older_than_ms))

        return await self._run(count, tx=False)

    async def table_stats(self) -> dict[str, TableStats]:
        async def stats(conn: Conn) -> dict[str, TableStats]:
            sizes = {str(r[0]): int(r[1]) for r in await conn.fetch(Q["stats_bytes"])}
            out: dict[str, TableStats] = {}
            for table in TABLES:
                # Table and column names come from the fixed lists in store/retention.py.
                n = await conn.fetchval(f"SELECT count(*) FROM {table}")
                column = AGE_COLUMNS.get(table)
                oldest = (
                    await conn.fetchval(f"SELECT min({column}) FROM {table}") if column else None
                )
                out[table] = TableStats(
                    rows=int(n),
                    bytes=sizes.get(table),
                    oldest_ms=None if oldest is None else int(oldest),
                )
            return out

        return await self._run(stats, tx=False)

    async def reclaim_space(self, pages: int) -> int:
        """Nothing to do: autovacuum reuses the space of deleted rows (the claim path's
        indexes are partial over unfinished steps, so they stay small)."""
        return 0


async def _close_quietly(closing: Awaitable[Any], terminate: Callable[[], None]) -> None:
    """Await a graceful close for up to ``_CLOSE_TIMEOUT_S``; terminate on any failure,
    cancellation included, so no connection outlives ``close()``."""
    try:
        await asyncio.wait_for(closing, _CLOSE_TIMEOUT_S)
    except BaseException as exc:
        terminate()
        if not isinstance(exc, Exception):
            raise


def _directory_exists(path: str) -> bool:
    return os.path.isdir(os.path.dirname(os.path.abspath(path)))


def _write_json(path: str, document: dict[str, Any]) -> None:
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(document, out, default=str, separators=(",", ":"))
    os.replace(partial, path)


_RESTORE_DEADLINE_S = 3600.0
_TOP_MS = 2**62
_TOP_ID = 2**63 - 1
"""Keyset cursors of a first page: above every row."""


def _rowcount(status: str) -> int:
    """Rows touched, from asyncpg's command status (``DELETE 3``)."""
    return int(status.rsplit(" ", 1)[-1])
