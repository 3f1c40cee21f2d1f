"""The SQLite ``Store``: one WAL file shared by every node process on one host.

Owns: the connection settings, the write-transaction discipline and the SQLite side of
every ``Store`` method. Must not: know about workers, HTTP or gossip.

How it runs. aiosqlite gives each store one connection living on its own thread. Every
store method is one plain function executed on that thread in a single hop
(``_in_thread``), so a write transaction holds SQLite's single write lock only for as
long as its statements take, never across an event-loop turn.

Writers and fairness. Every write transaction is ``BEGIN IMMEDIATE`` (the write lock is
taken up front, so a transaction never fails half-way on a lock upgrade). SQLite's own
busy handler sleeps in growing steps up to 100 ms, so a writer that keeps committing
can starve a waiting one for a long time. We therefore set ``busy_timeout`` to 0 and
retry ``BEGIN IMMEDIATE`` ourselves with short random sleeps (at most
``_BUSY_SLEEP_MAX_S``) until ``busy_timeout_ms`` has passed, then raise
``StoreUnavailableError``. Every waiter polls often, so the lock goes round.

Durability. ``journal_mode=WAL`` + ``synchronous=NORMAL``: each commit is appended to
the WAL with a write() before COMMIT returns, so it survives any process crash (kill
-9 included); only a power loss or OS crash can lose the last commits since the
previous checkpoint's fsync, and never corrupts the file. ``FULL`` would fsync on every
commit, which costs an order of magnitude in commits/s and, worse, stretches each
write-lock hold over an fsync so the other node processes starve.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs

import aiosqlite

from relaymesh.clock import Clock, SystemClock
from relaymesh.exceptions import (
    InvalidStateError,
    NotFoundError,
    RelayMeshError,
    StoreError,
    StoreGoneError,
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
from relaymesh.store.queries import load_migrations, load_queries
from relaymesh.store.retention import (
    AGE_COLUMNS,
    TABLES,
    WORKFLOW_TABLES,
    TableStats,
    row_queries,
)
from relaymesh.store.transfer import (
    ARRAY_COLUMNS,
    RESTORE_ORDER,
    SERIAL_COLUMNS,
    archive_documents,
    neutral,
    rows_of,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")
Conn = sqlite3.Connection

Q = load_queries("sqlite")

_BUSY_SLEEP_MAX_S = 0.0005
"""Longest sleep between two tries for the write lock (fairness between processes)."""
_DEFAULT_BUSY_TIMEOUT_MS = 5000
_DEFAULT_POLL_MS = 3
"""``wait_for_work``'s change-check interval while work is flowing."""
_DEFAULT_IDLE_POLL_MS = 100
"""The longest interval it backs off to while idle: the first step submitted by another
process to an idle node waits at most this long; each check costs ~50-100 us of CPU
(the pragma itself ~2 us, the rest is the event loop's timer and wake-up), so an idle
node spends ~0.1 % of a core on it."""
_HOT_MS = 1000
"""For this long after a claim found work, keep checking every ``poll_ms``."""


def next_poll_ms(previous_ms: int, *, hot: bool, poll_ms: int, idle_poll_ms: int) -> int:
    """The next change-check interval: ``poll_ms`` while hot, else doubling up to
    ``idle_poll_ms``. A steady trickle of work (50 steps/s) stays hot and is picked up
    within a few ms; an idle node checks ~10 times a second instead of ~300."""
    if hot:
        return poll_ms
    return max(poll_ms, min(idle_poll_ms, previous_ms * 2))


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _translate(exc: BaseException) -> RelayMeshError:
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "disk is full" in text:
            # SQLITE_FULL: transient (space can be freed); the transaction was rolled
            # back, so a retry once there is room writes it whole.
            return StoreUnavailableError(f"sqlite store unavailable: {exc} (no space left)")
        if _is_busy(exc) or "unable to open" in text or "disk i/o" in text:
            return StoreUnavailableError(f"sqlite store unavailable: {exc}")
        return StoreError(f"sqlite error: {exc}")
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"sqlite error: {exc}")
    if isinstance(exc, OSError):
        return StoreUnavailableError(f"sqlite store unavailable: {exc}")
    if isinstance(exc, ValueError) and "closed" in str(exc).lower():
        return StoreError("the store is closed")
    return StoreError(f"sqlite store failed: {exc!r}")


def _keys(text: str) -> tuple[str, ...]:
    """A step's lock keys from their JSON text (most steps have none)."""
    return () if text == "[]" else tuple(json.loads(text))


def _check_directory(path: str) -> None:
    """sqlite3 would say only "unable to open database file"; say which directory.
    Transient: a data volume mounted late is the usual cause, and a node retries."""
    directory = os.path.dirname(os.path.abspath(path))
    if path != ":memory:" and not os.path.isdir(directory):
        raise StoreUnavailableError(f"directory {directory!r} of the SQLite store does not exist")


FileIdentity = tuple[int, int]
"""(st_dev, st_ino) of the database file this store opened."""


def _file_identity(path: str) -> FileIdentity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _check_identity(path: str, expected: FileIdentity) -> None:
    """Raise ``StoreGoneError`` unless ``path`` is still the file the connection opened.

    SQLite keeps writing to its open file descriptor after the file is unlinked or
    renamed away: every commit would land in a file nobody else sees, and vanish
    when the process exits. A stat per transaction (about a microsecond) stops that."""
    now = _file_identity(path)
    if now == expected:
        return
    what = "deleted or moved away" if now is None else f"replaced (inode {now[1]})"
    raise StoreGoneError(
        f"sqlite store file {os.path.abspath(path)!r} (inode {expected[1]}) was {what}"
        " under this node: refusing to read or write until it is back at its path"
        " (put it back, or restart the node to open the file now there)"
    )


def _checked(fn: Callable[[Conn], T], path: str, identity: FileIdentity) -> Callable[[Conn], T]:
    def run(conn: Conn) -> T:
        _check_identity(path, identity)
        return fn(conn)

    return run


class _Conflict:
    """A fenced write that did not match; its conflict row is committed."""

    __slots__ = ("actual_epoch", "actual_status")

    def __init__(self, actual_epoch: int | None, actual_status: str | None) -> None:
        self.actual_epoch = actual_epoch
        self.actual_status = actual_status


class SqliteStore:
    """``Store`` on one SQLite file. Use ``open_store``; ``connect()`` then ``migrate()``."""

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS,
        poll_ms: int = _DEFAULT_POLL_MS,
        idle_poll_ms: int = _DEFAULT_IDLE_POLL_MS,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self.busy_timeout_ms = busy_timeout_ms
        self.poll_ms = poll_ms
        self.idle_poll_ms = max(idle_poll_ms, poll_ms)
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        """Jitter of the busy retry (row ids draw from the OS: see ``rows.IdMaker``)."""
        self._new_id = rows.IdMaker(self._clock)
        self._db: aiosqlite.Connection | None = None
        self._identity: FileIdentity | None = None
        """The opened file's identity, checked before every transaction."""
        self._closed = False
        self._local_signal = 0
        self._seen_local_signal = 0
        self._seen_data_version: tuple[str, int] | None = None
        """The last ``PRAGMA data_version`` seen, with the connection it came from
        (``watch`` or ``main``): two connections' values are not comparable."""
        self._watch: sqlite3.Connection | None = None
        """A second connection used only for ``wait_for_work``'s change check, on the
        event loop's thread: the pragma costs ~2 us there, against ~0.3 ms of CPU for a
        hop to the connection thread, which is most of what an idle node spends."""
        self._interval_ms = poll_ms
        self._hot_until_ms = 0  # monotonic ms until which to poll fast
        # Wakes a waiter at once on this process's own readying writes; set from the
        # connection thread too, hence through the waiter's loop.
        self._wake: asyncio.Event | None = None
        self._wake_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(cls, path: str, url: str, query: str = "") -> SqliteStore:
        """``?busy_timeout_ms=N&poll_ms=N&idle_poll_ms=N`` on the URL tune the store."""
        options = {key: values[-1] for key, values in parse_qs(query).items()}
        try:
            return cls(
                path,
                url=url,
                busy_timeout_ms=int(options.get("busy_timeout_ms", _DEFAULT_BUSY_TIMEOUT_MS)),
                poll_ms=int(options.get("poll_ms", _DEFAULT_POLL_MS)),
                idle_poll_ms=int(options.get("idle_poll_ms", _DEFAULT_IDLE_POLL_MS)),
            )
        except ValueError as exc:
            raise StoreError(f"bad option in store URL {url!r}: {exc}") from exc

    # -- plumbing -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._db is not None:
            return
        if self._closed:
            raise StoreError("the store is closed")
        _check_directory(self.path)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise _translate(exc) from exc
        self._db = db
        try:
            await self._in_thread(self._setup)
        except BaseException:
            # A connection left open keeps its (non-daemon) thread alive and the process
            # would hang at exit: a CLI command on a full disk printed its error, then hung.
            await self.close()
            self._closed = False
            raise
        if self.path != ":memory:" and not self.path.startswith("file:"):
            self._identity = _file_identity(self.path)

    def _setup(self, conn: Conn) -> None:
        conn.execute("PRAGMA busy_timeout = 0")
        # Only takes effect on a file with no tables yet (a new store): its free pages
        # can then go back to the file system after retention (``reclaim_space``). An
        # older file keeps auto_vacuum off until ``VACUUM`` rewrites it.
        self._retry_busy(lambda: conn.execute("PRAGMA auto_vacuum = INCREMENTAL"))
        self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -16000")

    def _retry_busy(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (on the connection thread), retrying while the file is locked."""
        deadline_ms = self._clock.monotonic_ms() + self.busy_timeout_ms
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or self._clock.monotonic_ms() >= deadline_ms:
                    raise
            # A real sleep: this is the connection's own thread, not the event loop.
            time.sleep(self._rng.uniform(0, _BUSY_SLEEP_MAX_S))

    async def _in_thread(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` on the connection's thread in one hop; translate errors.

        Uses aiosqlite's ``_execute`` (its queue to the connection thread) with the raw
        ``sqlite3`` connection: one thread hop per transaction instead of one per
        statement, which is most of the claim/commit throughput."""
        if self._db is None:
            await self.connect()
        db = self._db
        assert db is not None
        identity = self._identity
        if identity is not None:
            fn = _checked(fn, self.path, identity)
        try:
            return await db._execute(fn, db._conn)  # type: ignore[no-untyped-call,no-any-return]
        except RelayMeshError:
            raise
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise _translate(exc) from exc

    def _write_tx(self, fn: Callable[[Conn, int], T]) -> Callable[[Conn], T]:
        """Wrap ``fn(conn, now_ms)`` in ``BEGIN IMMEDIATE`` ... ``COMMIT`` with the fair
        busy retry; the time is read once the write lock is held."""

        def run(conn: Conn) -> T:
            self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                result = fn(conn, self._clock.wall_ms())
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return run

    async def _write(self, fn: Callable[[Conn, int], T]) -> T:
        return await self._in_thread(self._write_tx(fn))

    async def _read(self, fn: Callable[[Conn, int], T]) -> T:
        """A read in one implicit snapshot (WAL readers never wait for writers)."""

        def run(conn: Conn) -> T:
            conn.execute("BEGIN")
            try:
                return self._retry_busy(lambda: fn(conn, self._clock.wall_ms()))
            finally:
                conn.execute("COMMIT")

        return await self._in_thread(run)

    # -- lifecycle ------------------------------------------------------------------

    async def migrate(self) -> int:
        migrations = load_migrations("sqlite")

        def apply(conn: Conn, now: int) -> int:
            conn.execute(Q["schema_version_create"])
            current: int = conn.execute(Q["schema_version_current"]).fetchone()[0]
            for migration in migrations:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    Q["schema_version_insert"],
                    {"version": migration.version, "name": migration.name, "now": now},
                )
                current = migration.version
            return current

        return await self._write(apply)

    async def close(self) -> None:
        self._closed = True
        self._close_watch()
        db, self._db = self._db, None
        if db is not None:
            try:
                await db.close()
            except (sqlite3.Error, ValueError):
                pass

    async def backup(self, path: str) -> None:
        def copy(conn: Conn) -> None:
            target = os.path.abspath(path)
            if not os.path.isdir(os.path.dirname(target)):
                # sqlite3 would say "unable to open database file": it reads as the store.
                raise StoreError(f"cannot write backup {path!r}: its directory does not exist")
            partial = f"{target}.partial-{os.getpid()}"
            if os.path.exists(partial):
                os.remove(partial)
            dest = sqlite3.connect(partial)
            try:
                # One step (pages=-1): the copy is one consistent snapshot even while
                # other processes keep writing.
                self._retry_busy(lambda: conn.backup(dest, pages=-1))
                dest.execute("PRAGMA journal_mode = DELETE")
            finally:
                dest.close()
            os.replace(partial, target)

        await self._in_thread(copy)

    async def now_ms(self) -> int:
        return self._clock.wall_ms()

    async def wait_for_work(self, timeout_ms: int) -> None:
        """Polls ``PRAGMA data_version`` (changes when another connection commits):
        every ``poll_ms`` for a second after a claim found work, then backing off to
        ``idle_poll_ms`` (``next_poll_ms``). This process's own readying writes wake it
        at once."""

        def data_version(conn: Conn) -> int:
            return int(self._retry_busy(lambda: conn.execute(Q["data_version"]).fetchone()[0]))

        loop = asyncio.get_running_loop()
        if self._wake is None or self._wake_loop is not loop:
            self._wake, self._wake_loop = asyncio.Event(), loop
        wake = self._wake
        deadline_ms = self._clock.monotonic_ms() + max(timeout_ms, 0)
        while True:
            wake.clear()  # before the check: a signal after it sets the event again
            if self._local_signal != self._seen_local_signal:
                self._seen_local_signal = self._local_signal
                return
            watched = self._watch_version()
            if watched is not None:
                version = ("watch", watched)
            else:
                version = ("main", await self._in_thread(data_version))
            if self._seen_data_version is None:
                self._seen_data_version = version
            elif version != self._seen_data_version:
                self._seen_data_version = version
                return
            now_ms = self._clock.monotonic_ms()
            remaining_ms = deadline_ms - now_ms
            if remaining_ms <= 0:
                return
            self._interval_ms = next_poll_ms(
                self._interval_ms,
                hot=now_ms < self._hot_until_ms,
                poll_ms=self.poll_ms,
                idle_poll_ms=self.idle_poll_ms,
            )
            # asyncio.timeout, not wait_for: no task per check (what an idle node pays).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._interval_ms, remaining_ms) / 1000):
                    await wake.wait()

    def _watch_version(self) -> int | None:
        """``PRAGMA data_version`` on the watch connection, without leaving the event
        loop (it never waits: busy_timeout 0); None when that is not possible now (an
        in-memory database, a locked or missing file): the caller asks the main
        connection. The watch connection also sees this process's own commits, so
        those wake the claim loop once, which then finds nothing: harmless."""
        if self._closed or self.path == ":memory:" or self.path.startswith("file:"):
            return None
        try:
            if self._watch is None:
                if self._db is None:
                    return None  # not connected: let the main path connect (and check)
                watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                watch.execute("PRAGMA busy_timeout = 0")
                self._watch = watch
            return int(self._watch.execute(Q["data_version"]).fetchone()[0])
        except sqlite3.Error:
            self._close_watch()
            return None

    def _close_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(sqlite3.Error):
                watch.close()

    def _signal(self) -> None:
        """Work became claimable through this process (any thread)."""
        self._local_signal += 1
        wake, loop = self._wake, self._wake_loop
        if wake is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the waiter's loop is closed
                pass

    def _saw_work(self) -> None:
        self._hot_until_ms = self._clock.monotonic_ms() + _HOT_MS
        self._interval_ms = self.poll_ms

    # -- shared transaction pieces ------------------------------------------------------

    @staticmethod
    def _audit(
        conn: Conn, now: int, actor: str, action: str, *, target: str | None, details: Any
    ) -> None:
        conn.execute(
            Q["audit_insert"],
            {
                "now": now,
                "actor": str(actor),
                "action": action,
                "target": target,
                "details": rows.dumps(actor_details(actor, details)),
            },
        )

    @staticmethod
    def _refresh_workflows(conn: Conn, now: int, workflow_ids: Collection[str]) -> None:
        if not workflow_ids:
            return
        found = conn.execute(Q["workflow_shapes"], {"ids": json.dumps(sorted(workflow_ids))})
        for r in found.fetchall():
            status = rules.workflow_status(
                active=bool(r[2]), pending=bool(r[3]), dead=bool(r[4]), cancelled=bool(r[5])
            )
            if status != r[1]:
                conn.execute(
                    Q["workflow_set_status"], {"id": r[0], "status": status.value, "now": now}
                )

    @staticmethod
    def _conflicts(
        conn: Conn, now: int, leases: Sequence[LeaseRef], node: str, event: str
    ) -> dict[str, _Conflict]:
        """Record one conflict per lease; step id to its actual epoch and status."""
        if not leases:
            return {}
        items = json.dumps([[x.step_id, x.lease_token, x.lease_epoch] for x in leases])
        found = conn.execute(
            Q["conflicts_insert"], {"items": items, "node": node, "event": event, "now": now}
        ).fetchall()
        return {r[0]: _Conflict(r[1], r[2]) for r in found}

    @staticmethod
    def _events(
        conn: Conn,
        now: int,
        items: Sequence[tuple[str, str | None, int]],
        event: str,
        detail: str | None,
    ) -> None:
        """One ownership event per (step id, node, lease epoch)."""
        if items:
            conn.execute(
                Q["events_insert"],
                {"items": json.dumps(items), "event": event, "detail": detail, "now": now},
            )

    @staticmethod
    def _release_locks(conn: Conn, step_ids: Sequence[str]) -> None:
        if step_ids:
            conn.execute(Q["locks_release"], {"ids": json.dumps(list(step_ids))})

    @staticmethod
    def _fence_params(lease: LeaseRef) -> dict[str, Any]:
        return {"step_id": lease.step_id, "token": lease.lease_token, "epoch": lease.lease_epoch}

    def _success_many(
        self, conn: Conn, now: int, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> tuple[list[bool], dict[str, _Conflict]]:
        """Commit every matching lease in one UPDATE; record a conflict for the rest."""
        payload = json.dumps(
            [
                [lease.step_id, lease.lease_token, lease.lease_epoch, rows.dumps(result)]
                for lease, result in items
            ]
        )
        done = conn.execute(Q["fence_success"], {"items": payload, "now": now}).fetchall()
        out, rejected = rules.split_commits([lease for lease, _ in items], {r[0] for r in done})
        conflicts = self._conflicts(conn, now, rejected, node, "commit_success")
        self._release_locks(conn, [r[0] for r in done if r[2]])
        with_dependents = [r[0] for r in done if r[3]]
        if with_dependents:
            readied = conn.execute(
                Q["ready_dependents"], {"ids": json.dumps(with_dependents), "now": now}
            ).rowcount
            if readied:
                self._signal()
        self._refresh_workflows(conn, now, {r[1] for r in done})
        return out, conflicts

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
        workflow_id, ids = plan.workflow_id, plan.step_ids

        def submit(conn: Conn, now: int) -> SubmitOutcome:
            if idempotency_key is not None:
                # BEGIN IMMEDIATE serialises writers, so the insert-or-nothing decides.
                claimed = conn.execute(
                    Q["workflow_key_claim"],
                    {
                        "key": idempotency_key,
                        "workflow_id": workflow_id,
                        "schedule": schedule,
                        "fire_at_ms": fire_at_ms,
                        "now": now,
                    },
                ).rowcount
                if not claimed:
                    first = conn.execute(Q["workflow_key_get"], {"key": idempotency_key})
                    return SubmitOutcome(first.fetchone()[0], created=False)
            conn.execute(
                Q["workflow_insert"],
                {"id": workflow_id, "name": spec.name, "status": plan.status.value, "now": now},
            )
            conn.executemany(
                Q["steps_insert"],
                [
                    {
                        "id": ids[step.name],
                        "workflow_id": workflow_id,
                        "name": step.name,
                        "agent": step.agent,
                        "status": plan.step_status[step.name],
                        "priority": int(step.priority),
                        "max_attempts": step.max_attempts,
                        "base_backoff_ms": step.base_backoff_ms,
                        "max_backoff_ms": step.max_backoff_ms,
                        "depends_on": rows.dumps(list(step.depends_on)),
                        "locks": rows.dumps(list(plan.locks[step.name])),
                        "n_locks": len(plan.locks[step.name]),
                        "n_dependents": plan.dependents[step.name],
                        "input": rows.dumps(step.input),
                        "now": now,
                        "ready_at": None if step.depends_on else now,
                    }
                    for step in spec.steps
                ],
            )
            conn.executemany(
                Q["step_deps_insert"],
                [{"step_id": sid, "depends_on_id": dep} for sid, dep in plan.deps],
            )
            self._audit(
                conn,
                now,
                actor,
                "submit",
                target=workflow_id,
                details=rules.submit_details(plan, spec, idempotency_key, audit_details),
            )
            return SubmitOutcome(workflow_id, created=True)

        result = await self._write(submit)
        if result.created:
            self._signal()
        return result

    async def get_workflow(self, workflow_id: str) -> tuple[WorkflowRecord, list[StepRecord]]:
        def get(conn: Conn, now: int) -> tuple[WorkflowRecord, list[StepRecord]]:
            row = conn.execute(Q["workflow_get"], {"id": workflow_id}).fetchone()
            if row is None:
                raise NotFoundError(f"no workflow {workflow_id!r}")
            steps = conn.execute(Q["workflow_steps"], {"workflow_id": workflow_id}).fetchall()
            return rows.workflow_record(row), [rows.step_record(s) for s in steps]

        return await self._read(get)

    async def get_step(self, step_id: str) -> StepRecord:
        def get(conn: Conn, now: int) -> StepRecord:
            row = conn.execute(Q["step_get"], {"id": step_id}).fetchone()
            if row is None:
                raise NotFoundError(f"no step {step_id!r}")
            return rows.step_record(row)

        return await self._read(get)

    async def list_steps(
        self,
        *,
        status: StepStatus | None = None,
        workflow_id: str | None = None,
        agent: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[StepRecord]:
        before_ms, before_id = before if before is not None else (_TOP_MS, "")
        params = {
            "status": None if status is None else StepStatus(status).value,
            "workflow_id": workflow_id,
            "agent": agent,
            "before_ms": before_ms,
            "before_id": before_id,
            "limit": limit,
        }
        if workflow_id is not None:
            query = Q["steps_list_workflow"]
        elif status is not None:
            query = Q["steps_list_status"]
        else:
            query = Q["steps_list"]
        return await self._read(
            lambda conn, now: [rows.step_record(r) for r in conn.execute(query, params).fetchall()]
        )

    async def cancel_workflow(self, workflow_id: str, mode: str, actor: str) -> CancelResult:
        rules.check_cancel_mode(mode)

        def cancel(conn: Conn, now: int) -> CancelResult:
            if conn.execute(Q["workflow_get"], {"id": workflow_id}).fetchone() is None:
                raise NotFoundError(f"no workflow {workflow_id!r}")
            params = {"workflow_id": workflow_id, "now": now}
            cancelled = conn.execute(Q["cancel_waiting"], params).rowcount
            fenced: list[str] = []
            if mode == "hard":
                running = conn.execute(Q["cancel_running"], params).fetchall()
                fenced = [r[0] for r in running]
                self._release_locks(conn, [r[0] for r in running if r[3]])
                self._events(conn, now, [(r[0], r[1], r[2]) for r in running], "cancelled", actor)
            self._refresh_workflows(conn, now, [workflow_id])
            result = CancelResult(cancelled=cancelled + len(fenced), fenced_running=tuple(fenced))
            self._audit(
                conn,
                now,
                actor,
                "cancel",
                target=workflow_id,
                details=rules.cancel_details(workflow_id, mode, result),
            )
            return result

        return await self._write(cancel)

    def _replay_one(self, conn: Conn, now: int, step_id: str, actor: str) -> tuple[str, int] | None:
        """Back to READY (PENDING when a dependency has not succeeded), keeping the
        attempt counter and recording the replay (``rows.replayed``); (workflow id,
        the attempt it was replayed from), or None when the step is not replayable."""
        current = conn.execute(Q["step_get"], {"id": step_id}).fetchone()
        if current is None:
            return None
        before = rows.step_record(current)
        max_attempts, replays, _ = rows.replayed(before, actor, now)
        ready = bool(conn.execute(Q["deps_all_succeeded"], {"step_id": step_id}).fetchone()[0])
        new_status = rules.replay_status(ready)
        row = conn.execute(
            Q["replay_update"],
            {
                "step_id": step_id,
                "new_status": new_status.value,
                "now": now,
                "max_attempts": max_attempts,
                "replays": replays,
            },
        ).fetchone()
        if row is None:
            return None
        workflow_id, epoch = row
        self._events(conn, now, [(step_id, None, epoch)], "replayed", actor)
        return str(workflow_id), before.attempt

    async def replay_step(self, step_id: str, actor: str) -> StepRecord:
        def replay(conn: Conn, now: int) -> StepRecord:
            row = conn.execute(Q["step_get"], {"id": step_id}).fetchone()
            if row is None:
                raise NotFoundError(f"no step {step_id!r}")
            before = rows.step_record(row)
            done = self._replay_one(conn, now, step_id, actor)
            if done is None:
                raise rules.not_replayable(before.status, step_id)
            workflow_id, _ = done
            self._refresh_workflows(conn, now, [workflow_id])
            self._audit(
                conn,
                now,
                actor,
                "replay",
                target=step_id,
                details=rules.replay_details(before, workflow_id),
            )
            return rows.step_record(conn.execute(Q["step_get"], {"id": step_id}).fetchone())

        record = await self._write(replay)
        self._signal()
        return record

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

        def replay(conn: Conn, now: int) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    Q["replay_candidates"],
                    {
                        "status": status.value,
                        "agent": agent,
                        "workflow_id": workflow_id,
                        "limit": limit,
                    },
                ).fetchall()
            ]
            touched: set[str] = set()
            replayed: list[str] = []
            from_attempts: dict[str, int] = {}
            for step_id in ids:
                done = self._replay_one(conn, now, step_id, actor)
                if done is not None:
                    touched.add(done[0])
                    replayed.append(step_id)
                    from_attempts[step_id] = done[1]
            self._refresh_workflows(conn, now, touched)
            self._audit(
                conn,
                now,
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
            return len(replayed)

        count = await self._write(replay)
        if count:
            self._signal()
        return count

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
        base: dict[str, Any] = {
            "agents": None if agents is None else json.dumps(list(agents)),
            "exclude_agents": json.dumps(list(exclude_agents)),
        }
        page = max(limit * 2, 16)

        def fill(conn: Conn, query: str, want: int, picked: list[str], held: set[str]) -> None:
            offset = 0
            while len(picked) < want:
                found = conn.execute(query, {**base, "limit": page, "offset": offset}).fetchall()
                rules.pick_batch(
                    ((r[0], _keys(r[1]) if r[2] else ()) for r in found),
                    want=want,
                    picked=picked,
                    held=held,
                )
                if len(found) < page:
                    return
                offset += page

        def claim(conn: Conn, now: int) -> list[Claim]:
            base["now"] = now
            picked: list[str] = []
            held: set[str] = set()
            if low_first > 0:
                fill(conn, Q["claim_candidates_low"], min(low_first, limit), picked, held)
            fill(conn, Q["claim_candidates"], limit, picked, held)
            if not picked:
                return []
            ids = json.dumps(picked)
            claimed = conn.execute(
                Q["claim_update"],
                {"ids": ids, "node": node, "now": now, "lease_ms": lease_ms},
            ).fetchall()
            conn.execute(Q["claim_events"], {"ids": ids, "node": node, "now": now})
            keys = {r[0]: _keys(r[14]) for r in claimed}
            locks = [[key, sid] for sid, ks in keys.items() for key in ks]
            if locks:
                conn.execute(Q["claim_locks"], {"items": json.dumps(locks)})
            upstream: dict[str, dict[str, Any]] = {}
            with_deps = [r[0] for r in claimed if r[15] != "[]"]
            if with_deps:
                for step_id, name, result in conn.execute(
                    Q["upstream_results"], {"ids": json.dumps(with_deps)}
                ):
                    upstream.setdefault(step_id, {})[name] = rows.loads(result)
            order = {step_id: i for i, step_id in enumerate(picked)}
            claimed.sort(key=lambda r: order[r[0]])
            return [rows.claim_record(r, upstream.get(r[0], {})) for r in claimed]

        claims = await self._write(claim)
        if claims:
            self._saw_work()
        return claims

    def _heartbeat_many(
        self, conn: Conn, now: int, node: str, leases: Sequence[LeaseRef], lease_ms: int
    ) -> tuple[dict[str, int | None], dict[str, _Conflict]]:
        """Extend every matching lease in one UPDATE; record a conflict for the rest."""
        items = json.dumps([[x.step_id, x.lease_token, x.lease_epoch] for x in leases])
        found = conn.execute(
            Q["fence_heartbeat"], {"items": items, "now": now, "lease_ms": lease_ms}
        ).fetchall()
        extended = {r[0]: int(r[1]) for r in found}
        rejected = [lease for lease in leases if lease.step_id not in extended]
        conflicts = self._conflicts(conn, now, rejected, node, "heartbeat")
        return {lease.step_id: extended.get(lease.step_id) for lease in leases}, conflicts

    async def heartbeat(self, lease: LeaseRef, node: str, lease_ms: int) -> int:
        out, conflicts = await self._write(
            lambda conn, now: self._heartbeat_many(conn, now, node, [lease], lease_ms)
        )
        expires = out[lease.step_id]
        if expires is None:
            lost = conflicts.get(lease.step_id, _Conflict(None, None))
            raise rules.lease_lost(lease, "heartbeat", lost.actual_epoch, lost.actual_status)
        return expires

    async def heartbeat_many(
        self, node: str, leases: Sequence[LeaseRef], lease_ms: int
    ) -> dict[str, int | None]:
        if not leases:
            return {}

        out, _ = await self._write(
            lambda conn, now: self._heartbeat_many(conn, now, node, leases, lease_ms)
        )
        return out

    async def commit_success(self, lease: LeaseRef, node: str, result: Any) -> None:
        out, conflicts = await self._write(
            lambda conn, now: self._success_many(conn, now, node, [(lease, result)])
        )
        if not out[0]:
            lost = conflicts.get(lease.step_id, _Conflict(None, None))
            raise rules.lease_lost(lease, "commit_success", lost.actual_epoch, lost.actual_status)

    async def commit_success_many(
        self, node: str, items: Sequence[tuple[LeaseRef, Any]]
    ) -> list[bool]:
        if not items:
            return []
        out, _ = await self._write(lambda conn, now: self._success_many(conn, now, node, items))
        return out

    async def commit_failure(
        self, lease: LeaseRef, node: str, error: dict[str, Any], retry_delay_ms: int | None
    ) -> StepStatus:
        def fail(conn: Conn, now: int) -> StepStatus | _Conflict:
            params = self._fence_params(lease)
            params.update(error=rows.dumps(error), now=now)
            if retry_delay_ms is None:
                row = conn.execute(Q["fence_dead_letter"], params).fetchone()
                status = StepStatus.DEAD_LETTER
            else:
                params["delay_ms"] = max(retry_delay_ms, 0)
                row = conn.execute(Q["fence_retry"], params).fetchone()
                status = StepStatus.RETRY_WAIT
            if row is None:
                conflicts = self._conflicts(conn, now, [lease], node, "commit_failure")
                return conflicts.get(lease.step_id, _Conflict(None, None))
            workflow_id, n_locks = row
            if n_locks:
                self._release_locks(conn, [lease.step_id])
            if status is StepStatus.DEAD_LETTER:
                self._refresh_workflows(conn, now, [workflow_id])
            return status

        outcome = await self._write(fail)
        if isinstance(outcome, _Conflict):
            raise rules.lease_lost(
                lease, "commit_failure", outcome.actual_epoch, outcome.actual_status
            )
        if outcome is StepStatus.RETRY_WAIT:
            self._signal()
        return outcome

    async def release(self, lease: LeaseRef, node: str, reason: str) -> None:
        def give_back(conn: Conn, now: int) -> _Conflict | None:
            params = self._fence_params(lease)
            params["now"] = now
            row = conn.execute(Q["fence_release"], params).fetchone()
            if row is None:
                conflicts = self._conflicts(conn, now, [lease], node, "release")
                return conflicts.get(lease.step_id, _Conflict(None, None))
            _, n_locks, epoch = row
            if n_locks:
                self._release_locks(conn, [lease.step_id])
            self._events(conn, now, [(lease.step_id, node, epoch)], "released", reason)
            return None

        conflict = await self._write(give_back)
        if conflict is not None:
            raise rules.lease_lost(lease, "release", conflict.actual_epoch, conflict.actual_status)
        self._signal()

    async def lost_leases(self, leases: Sequence[LeaseRef]) -> list[str]:
        if not leases:
            return []
        ids = json.dumps([lease.step_id for lease in leases])

        def check(conn: Conn, now: int) -> list[str]:
            state = {
                r[0]: (r[1], r[2], r[3])
                for r in conn.execute(Q["lease_states"], {"ids": ids}).fetchall()
            }
            return rules.lost_lease_ids(leases, state)

        return await self._read(check)

    async def leases_held_by(self, node: str) -> list[LeaseRef]:
        def listing(conn: Conn, now: int) -> list[LeaseRef]:
            found = conn.execute(Q["leases_held_by"], {"node": node}).fetchall()
            return [LeaseRef(r[0], r[1], int(r[2])) for r in found]

        return await self._read(listing)

    # -- recovery and maintenance ------------------------------------------------------------

    def _reclaim(self, conn: Conn, now: int, found: list[Any], event: str, why: str) -> list[str]:
        """Put RUNNING rows ``(id, workflow_id, owner, attempt, max_attempts, n_locks,
        epoch)`` back to READY, or DEAD_LETTER (kind ``lost``) when out of attempts."""
        reclaimed: list[str] = []
        dead_workflows: set[str] = set()
        for step_id, workflow_id, owner, attempt, max_attempts, n_locks, _ in found:
            if rules.reclaim_to_dead_letter(attempt, max_attempts):
                row = conn.execute(
                    Q["reclaim_dead_letter"],
                    {
                        "step_id": step_id,
                        "now": now,
                        "error": rows.dumps(rules.lost_error(attempt, why)),
                    },
                ).fetchone()
                dead_workflows.add(workflow_id)
            else:
                row = conn.execute(Q["reclaim_ready"], {"step_id": step_id, "now": now}).fetchone()
            if row is None:
                continue
            if n_locks:
                self._release_locks(conn, [step_id])
            self._events(conn, now, [(step_id, owner, row[0])], event, why)
            reclaimed.append(step_id)
        self._refresh_workflows(conn, now, dead_workflows)
        return reclaimed

    async def reclaim_expired(self, limit: int) -> list[str]:
        def reclaim(conn: Conn, now: int) -> list[str]:
            found = conn.execute(Q["expired_running"], {"now": now, "limit": limit}).fetchall()
            return self._reclaim(conn, now, found, "lease_expired", "lease expired")

        reclaimed = await self._write(reclaim)
        if reclaimed:
            self._signal()
        return reclaimed

    async def reclaim_dead_owners(
        self,
        *,
        limit: int,
        actor: str,
        stale_after_ms: int,
        nodes: Collection[str] | None = None,
    ) -> DeadOwnerReclaim:
        def reclaim(conn: Conn, now: int) -> DeadOwnerReclaim:
            params: dict[str, Any] = {"limit": limit, "now": now, "stale_after_ms": stale_after_ms}
            if nodes is None:
                found = conn.execute(Q["dead_owner_running"], params).fetchall()
                fresh = conn.execute(Q["dead_owner_fresh_count"], params).fetchone()[0]
            else:
                params["nodes"] = json.dumps(list(nodes))
                found = conn.execute(Q["named_owner_running"], params).fetchall()
                fresh = conn.execute(Q["named_owner_fresh_count"], params).fetchone()[0]
            reclaimed = self._reclaim(conn, now, found, "dead_owner", "owner node dead")
            if reclaimed:  # maintenance calls this often: audit changes, not no-ops
                self._audit(
                    conn,
                    now,
                    actor,
                    "recover",
                    target=None,
                    details=rules.recover_details(reclaimed, (r[2] for r in found)),
                )
            return DeadOwnerReclaim(tuple(reclaimed), int(fresh))

        outcome = await self._write(reclaim)
        if outcome.step_ids:
            self._signal()
        return outcome

    async def promote_retries(self, limit: int) -> int:
        count = await self._write(
            lambda conn, now: (
                conn.execute(Q["promote_retries"], {"now": now, "limit": limit}).rowcount
            )
        )
        return int(count)

    async def acquire_leader(self, node: str, lease_ms: int) -> LeaderLease | None:
        def acquire(conn: Conn, now: int) -> LeaderLease | None:
            row = conn.execute(Q["leader_get"], {"now": now}).fetchone()
            holder, epoch, expires_at = row[:3] if row is not None else (None, 0, 0)
            epoch = rules.leader_epoch(holder, epoch, expires_at, node=node, now_ms=now)
            if epoch is None:
                return None
            params = {"node": node, "epoch": epoch, "now": now, "lease_ms": lease_ms}
            expires = conn.execute(Q["leader_set"], params).fetchone()[0]
            return LeaderLease(node, int(epoch), int(expires))

        return await self._write(acquire)

    async def release_leader(self, lease: LeaderLease) -> None:
        await self._write(
            lambda conn, now: conn.execute(
                Q["leader_release"], {"node": lease.node, "epoch": lease.epoch}
            )
        )

    # -- mesh ------------------------------------------------------------------------------

    async def upsert_mesh_nodes(self, reporter: str, nodes: Sequence[MeshNode]) -> None:
        if not nodes:
            return

        def upsert(conn: Conn, now: int) -> None:
            conn.executemany(
                Q["mesh_upsert"],
                [
                    {
                        "name": n.name,
                        "address": n.address,
                        "status": n.status.value,
                        "incarnation": n.incarnation,
                        "metadata": rows.dumps(n.metadata),
                        "status_changed_at": n.status_changed_at_ms,
                        "now": now,
                        "reporter": reporter,
                    }
                    for n in nodes
                ],
            )

        await self._write(upsert)

    async def list_mesh_nodes(self) -> list[MeshNode]:
        return await self._read(
            lambda conn, now: [rows.mesh_node(r) for r in conn.execute(Q["mesh_list"])]
        )

    async def prune_mesh_nodes(self, *, older_than_ms: int, limit: int, actor: str) -> int:
        def prune(conn: Conn, now: int) -> int:
            params = {"now": now, "older_than_ms": older_than_ms, "limit": limit}
            names = [r[0] for r in conn.execute(Q["mesh_prune"], params).fetchall()]
            if not names:  # maintenance calls this often: audit changes, not no-ops
                return 0
            self._audit(
                conn,
                now,
                actor,
                "prune",
                target=None,
                details=rules.prune_details(names, older_than_ms),
            )
            return len(names)

        return await self._write(prune)

    async def running_by_owner_status(self) -> dict[str, int]:
        return await self._read(
            lambda conn, now: {
                str(status): int(n) for status, n in conn.execute(Q["running_by_owner_status"])
            }
        )

    async def write_dispatch_stats(
        self, rows: Sequence[tuple[str, str, int, str, int]], *, keep_ms: int
    ) -> None:
        def write(conn: Conn, now: int) -> None:
            conn.executemany(
                Q["dispatch_upsert"],
                [
                    {"node": n, "agent": a, "bucket_ms": b, "reason": r, "count": c}
                    for n, a, b, r, c in rows
                ],
            )
            conn.execute(Q["dispatch_prune"], {"cutoff": now - keep_ms})

        await self._write(write)

    async def dispatch_totals(self, window_ms: int) -> list[tuple[str, str, str, int]]:
        return await self._read(
            lambda conn, now: [
                (str(n), str(a), str(r), int(c))
                for n, a, r, c in conn.execute(Q["dispatch_totals"], {"since": now - window_ms})
            ]
        )

    # -- operations -------------------------------------------------------------------------

    async def step_counts(self) -> dict[StepStatus, int]:
        def count(conn: Conn, now: int) -> dict[StepStatus, int]:
            counts = rows.zero_counts()
            for status, n in conn.execute(Q["step_counts"]):
                counts[StepStatus(status)] = int(n)
            return counts

        return await self._read(count)

    async def queue_lag_ms(self) -> int:
        def lag(conn: Conn, now: int) -> int:
            return max(0, int(conn.execute(Q["queue_lag"], {"now": now}).fetchone()[0]))

        return await self._read(lag)

    async def list_ownership_events(
        self, *, since_ms: int | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[OwnershipEvent]:
        params = {
            "since": since_ms,
            "before_id": _TOP_ID if before_id is None else before_id,
            "limit": limit,
        }
        return await self._read(
            lambda conn, now: [
                rows.event_record(r) for r in conn.execute(Q["ownership_events_list"], params)
            ]
        )

    async def list_conflicts(
        self, *, since_ms: int | None = None, limit: int = 100
    ) -> list[LeaseConflict]:
        params = {"since": since_ms, "limit": limit}
        return await self._read(
            lambda conn, now: [
                rows.conflict_record(r) for r in conn.execute(Q["conflicts_list"], params)
            ]
        )

    async def conflict_report(
        self, *, since_ms: int | None = None, top: int = 10
    ) -> ConflictReport:
        params = {"since": since_ms, "top": top}

        def report(conn: Conn, now: int) -> ConflictReport:
            def pairs(name: str) -> list[tuple[str, int]]:
                return [(str(k), int(n)) for k, n in conn.execute(Q[name], params)]

            total = conn.execute(Q["conflicts_total"], params).fetchone()[0]
            return ConflictReport(
                total=int(total),
                by_step=pairs("conflicts_by_step"),
                by_node=pairs("conflicts_by_node"),
                by_event=pairs("conflicts_by_event"),
            )

        return await self._read(report)

    async def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any]
    ) -> None:
        await self._write(
            lambda conn, now: self._audit(conn, now, actor, action, target=target, details=details)
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
        params = {
            "task_id": task_id,
            "action": action,
            "from_ms": from_ms,
            "to_ms": to_ms,
            "before_id": _TOP_ID if before_id is None else before_id,
            "limit": limit,
        }
        return await self._read(
            lambda conn, now: [rows.audit_record(r) for r in conn.execute(Q["audit_query"], params)]
        )

    async def record_settings_change(
        self, node: str, fields: Sequence[str], refused: Sequence[str] = ()
    ) -> None:
        column = rows.settings_fields(fields, refused)
        details = rules.reload_details(fields, refused)

        def record(conn: Conn, now: int) -> None:
            conn.execute(Q["settings_insert"], {"now": now, "node": node, "fields": column})
            self._audit(conn, now, f"node:{node}", "reload", target=node, details=details)

        await self._write(record)

    async def list_settings_history(self, limit: int = 20) -> list[SettingsChange]:
        return await self._read(
            lambda conn, now: [
                rows.settings_change(r) for r in conn.execute(Q["settings_list"], {"limit": limit})
            ]
        )

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
        def list_(conn: Conn, now: int) -> list[WorkflowSummary]:
            found = conn.execute(
                Q["workflows_list"],
                {
                    "status": status.value if status else None,
                    "name": name,
                    "since": since_ms,
                    # A first page: a cursor above every row (one index range scan).
                    "before_ms": before[0] if before else _TOP_MS,
                    "before_id": before[1] if before else "",
                    "limit": limit,
                },
            ).fetchall()
            ids = [r[0] for r in found]
            counts = conn.execute(Q["workflows_step_counts"], {"ids": json.dumps(ids)}).fetchall()
            return rows.workflow_summaries(found, counts)

        return await self._read(list_)

    async def last_schedule_fire(self, schedule: str) -> ScheduleFire | None:
        def last(conn: Conn, now: int) -> ScheduleFire | None:
            row = conn.execute(Q["schedule_last_fire"], {"schedule": schedule}).fetchone()
            return ScheduleFire(row[0], row[1]) if row else None

        return await self._read(last)

    # -- retention (work/retention.py) --------------------------------------------------------

    @staticmethod
    def _candidates(
        conn: Conn,
        now: int,
        status: WorkflowStatus,
        *,
        older_than_ms: int,
        limit: int,
        ids: Sequence[str] | None,
    ) -> list[Any]:
        return conn.execute(
            Q["retention_workflow_candidates"],
            {
                "status": status.value,
                "cutoff": now - older_than_ms,
                "limit": limit,
                "ids": None if ids is None else json.dumps(list(ids)),
            },
        ).fetchall()

    async def retention_delete_workflows(
        self,
        status: WorkflowStatus,
        *,
        older_than_ms: int,
        limit: int,
        ids: Sequence[str] | None = None,
    ) -> dict[str, int]:
        def delete(conn: Conn, now: int) -> dict[str, int]:
            found = self._candidates(
                conn, now, status, older_than_ms=older_than_ms, limit=limit, ids=ids
            )
            counts = dict.fromkeys(WORKFLOW_TABLES, 0)
            if not found:
                return counts
            params = {"ids": json.dumps([r[0] for r in found])}
            # Events are written before the commit that finished the workflow; the margin
            # covers clock steps between processes on the host.
            upto = max(int(r[1]) for r in found) + rules.EVENT_MARGIN_MS
            counts["step_locks"] = conn.execute(Q["retention_delete_locks"], params).rowcount
            counts["step_deps"] = conn.execute(Q["retention_delete_deps"], params).rowcount
            counts["ownership_events"] = conn.execute(
                Q["retention_delete_events"], {**params, "upto": upto}
            ).rowcount
            counts["workflow_keys"] = conn.execute(Q["retention_delete_keys"], params).rowcount
            counts["steps"] = conn.execute(Q["retention_delete_steps"], params).rowcount
            counts["workflows"] = conn.execute(Q["retention_delete_workflows"], params).rowcount
            return counts

        return await self._write(delete)

    async def retention_export_workflows(
        self, status: WorkflowStatus, *, older_than_ms: int, limit: int
    ) -> list[dict[str, Any]]:
        def export(conn: Conn, now: int) -> list[dict[str, Any]]:
            found = self._candidates(
                conn, now, status, older_than_ms=older_than_ms, limit=limit, ids=None
            )
            if not found:
                return []
            params = {"ids": json.dumps([r[0] for r in found])}
            upto = max(int(r[1]) for r in found) + rules.EVENT_MARGIN_MS

            def select(query: str, table: str, extra: dict[str, Any] | None = None) -> list[Any]:
                cursor = conn.execute(query, {**params, **(extra or {})})
                columns = [d[0] for d in cursor.description]
                return [neutral(table, r) for r in rows_of(columns, cursor.fetchall())]

            by_id = {r["id"]: r for r in select(Q["archive_workflows"], "workflows")}
            return archive_documents(
                [by_id[r[0]] for r in found],
                select(Q["archive_steps"], "steps"),
                select(Q["archive_deps"], "step_deps"),
                select(Q["archive_events"], "ownership_events", {"upto": upto}),
                select(Q["archive_keys"], "workflow_keys"),
            )

        return await self._read(export)

    def _insert(self, conn: Conn, table: str, given: Sequence[Mapping[str, Any]]) -> int:
        """Insert neutral rows, columns the schema lacks ignored, generated ids dropped,
        a row whose key is already there skipped. Returns the rows inserted."""
        if not given:
            return 0
        # The table name comes from RESTORE_ORDER, never from the input.
        have = [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]
        drop = SERIAL_COLUMNS.get(table)
        columns = [c for c in have if c != drop and c in given[0]]
        arrays = ARRAY_COLUMNS.get(table, ())
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING"
        )
        values = [
            [json.dumps(row.get(c)) if c in arrays else row.get(c) for c in columns]
            for row in given
        ]
        return int(conn.executemany(statement, values).rowcount)

    async def restore_tables(
        self, tables: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> dict[str, int]:
        def load(conn: Conn, now: int) -> dict[str, int]:
            present = int(conn.execute(Q["restore_workflow_count"]).fetchone()[0])
            if present:
                raise InvalidStateError(
                    f"the store already has {present} workflows: a backup is restored "
                    "only into an empty store"
                )
            return {
                table: self._insert(conn, table, [neutral(table, r) for r in tables[table]])
                for table in RESTORE_ORDER
                if table in tables
            }

        return await self._write(load)

    async def import_workflows(self, docs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        def load(conn: Conn, now: int) -> tuple[int, int]:
            imported = skipped = 0
            for doc in docs:
                workflow_id = doc["workflow"]["id"]
                if conn.execute(Q["restore_workflow_exists"], {"id": workflow_id}).fetchone():
                    skipped += 1
                    continue
                self._insert(conn, "workflows", [doc["workflow"]])
                self._insert(conn, "steps", doc["steps"])
                self._insert(conn, "step_deps", doc["step_deps"])
                self._insert(conn, "ownership_events", doc["ownership_events"])
                self._insert(conn, "workflow_keys", doc["workflow_keys"])
                imported += 1
            return imported, skipped

        return await self._write(load)

    async def retention_delete_rows(self, table: str, *, older_than_ms: int, limit: int) -> int:
        query = Q[row_queries(table)[0]]
        count = await self._write(
            lambda conn, now: (
                conn.execute(query, {"cutoff": now - older_than_ms, "limit": limit}).rowcount
            )
        )
        return int(count)

    async def retention_count_workflows(self, status: WorkflowStatus, *, older_than_ms: int) -> int:
        def count(conn: Conn, now: int) -> int:
            params = {"status": status.value, "cutoff": now - older_than_ms}
            return int(conn.execute(Q["retention_count_workflows"], params).fetchone()[0])

        return await self._read(count)

    async def retention_count_rows(self, table: str, *, older_than_ms: int) -> int:
        query = Q[row_queries(table)[1]]
        return await self._read(
            lambda conn, now: int(
                conn.execute(query, {"cutoff": now - older_than_ms}).fetchone()[0]
            )
        )

    async def table_stats(self) -> dict[str, TableStats]:
        def stats(conn: Conn, now: int) -> dict[str, TableStats]:
            sizes: dict[str, int] = {}
            try:
                sizes = {str(n): int(b) for n, b in conn.execute(Q["stats_bytes"])}
            except sqlite3.OperationalError:  # built without dbstat: bytes unknown
                pass
            out: dict[str, TableStats] = {}
            for table in TABLES:
                # Table and column names come from the fixed lists in store/retention.py.
                n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                column = AGE_COLUMNS.get(table)
                oldest = (
                    conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
                    if column
                    else None
                )
                out[table] = TableStats(
                    rows=int(n),
                    bytes=sizes.get(table) if sizes else None,
                    oldest_ms=None if oldest is None else int(oldest),
                )
            return out

        return await self._read(stats)

    async def reclaim_space(self, pages: int) -> int:
        """One bounded step of ``PRAGMA incremental_vacuum``: hand up to ``pages`` free
        pages back to the file system in one short write transaction; returns how many.
        Nothing on a file made before auto_vacuum was set (see ``_setup``)."""

        def vacuum(conn: Conn) -> int:
            mode = conn.execute(Q["stats_auto_vacuum"]).fetchone()[0]
            before = int(conn.execute(Q["stats_freelist_count"]).fetchone()[0])
            if mode != _AUTO_VACUUM_INCREMENTAL or before == 0 or pages <= 0:
                return 0
            # sqlite3's execute() steps a PRAGMA once, which frees one page; executescript
            # steps it to the end. BEGIN IMMEDIATE in the script keeps it one transaction.
            script = f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(pages)}); COMMIT;"
            try:
                self._retry_busy(lambda: conn.executescript(script))
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            return before - int(conn.execute(Q["stats_freelist_count"]).fetchone()[0])

        return await self._in_thread(vacuum)


_TOP_MS = 2**62
_TOP_ID = 2**63 - 1
"""Keyset cursors of a first page: above every row."""
_AUTO_VACUUM_INCREMENTAL = 2
