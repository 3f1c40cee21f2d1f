"""The store's raw limit: single-row claim transactions per second, no RelayMesh code.

The ceiling ``bench.work_throughput`` compares RelayMesh against. Each client claims
one READY row per transaction, in a loop, on a ``steps`` table shaped like RelayMesh's
(the real SQLite migration when it is there, the same columns and claim index
otherwise), pre-filled with READY rows:

* SQLite, the store's settings (WAL, ``synchronous=NORMAL``, ``busy_timeout=0`` with
  short random retry sleeps, as ``relaymesh/store/sqlite.py`` does): ``BEGIN
  IMMEDIATE``; select the first claimable row by priority, ready_at; update it to
  RUNNING with a fresh token and epoch + 1; ``COMMIT``. 1 and 2 client processes; also
  ``synchronous=FULL`` for contrast.
* PostgreSQL (fresh database, dropped after): 4 client processes, each ``UPDATE ...
  WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)`` in autocommit (one round
  trip), and the same as an explicit ``BEGIN``; ``SELECT ... FOR UPDATE SKIP LOCKED``;
  ``UPDATE``; ``COMMIT`` transaction.

**Batched ceiling** (``batch`` cases): what the store allows when claims and commits
are batched as RelayMesh batches them, with no RelayMesh code: each client, with the
stock driver, claims up to ``BATCH`` rows in one fenced transaction (token, epoch + 1)
and then commits all of them SUCCEEDED in one transaction, each row fenced on its
token and epoch. SQLite: 1 and 2 client processes; PostgreSQL: 4. The counts are
completed steps (claimed and committed). ``bench.work_throughput`` compares RelayMesh
with the best of these in the same run.

Each client reports how many claims it made, so the table shows each one's share
(fairness). ``python -m bench.raw_claims [--quick]`` runs it alone. A client only
starts claiming after its set-up pragmas, which wait on the lock (``busy_timeout``):
a second client opening the WAL file while the first sets up must not crash the run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
SQLITE_DDL = REPO / "relaymesh" / "store" / "sql" / "sqlite_0001_initial.sql"
ADMIN_DSN = os.environ.get(
    "RELAYMESH_BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)

_FALLBACK_DDL = """
CREATE TABLE workflows (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
CREATE TABLE steps (
    id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL REFERENCES workflows (id),
    name TEXT NOT NULL, agent TEXT NOT NULL, status TEXT NOT NULL, priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    base_backoff_ms INTEGER NOT NULL, max_backoff_ms INTEGER NOT NULL, lease_token TEXT,
    lease_epoch INTEGER NOT NULL DEFAULT 0, owner_node TEXT, lease_expires_at_ms INTEGER,
    not_before_ms INTEGER, depends_on TEXT NOT NULL DEFAULT '[]',
    locks TEXT NOT NULL DEFAULT '[]', n_locks INTEGER NOT NULL DEFAULT 0,
    n_dependents INTEGER NOT NULL DEFAULT 0, input TEXT, result TEXT, error TEXT,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, ready_at_ms INTEGER,
    started_at_ms INTEGER, finished_at_ms INTEGER, UNIQUE (workflow_id, name));
CREATE INDEX steps_claimable ON steps (priority, ready_at_ms)
    WHERE status IN ('READY', 'RETRY_WAIT');
CREATE INDEX steps_running_expiry ON steps (lease_expires_at_ms) WHERE status = 'RUNNING';
CREATE INDEX steps_running_owner ON steps (owner_node) WHERE status = 'RUNNING';
CREATE INDEX steps_workflow_status ON steps (workflow_id, status);
CREATE INDEX steps_status_updated ON steps (status, updated_at_ms);
CREATE INDEX steps_updated ON steps (updated_at_ms);
"""

# The PostgreSQL translation of the same table (BIGINT ms, JSON as text).
_PG_DDL = """
CREATE TABLE workflows (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL);
CREATE TABLE steps (
    id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL REFERENCES workflows (id),
    name TEXT NOT NULL, agent TEXT NOT NULL, status TEXT NOT NULL, priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    base_backoff_ms INTEGER NOT NULL, max_backoff_ms INTEGER NOT NULL, lease_token TEXT,
    lease_epoch BIGINT NOT NULL DEFAULT 0, owner_node TEXT, lease_expires_at_ms BIGINT,
    not_before_ms BIGINT, depends_on TEXT NOT NULL DEFAULT '[]',
    locks TEXT NOT NULL DEFAULT '[]', n_locks INTEGER NOT NULL DEFAULT 0,
    n_dependents INTEGER NOT NULL DEFAULT 0, input TEXT, result TEXT, error TEXT,
    created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL, ready_at_ms BIGINT,
    started_at_ms BIGINT, finished_at_ms BIGINT, UNIQUE (workflow_id, name));
CREATE INDEX steps_claimable ON steps (priority, ready_at_ms)
    WHERE status IN ('READY', 'RETRY_WAIT');
CREATE INDEX steps_running_expiry ON steps (lease_expires_at_ms) WHERE status = 'RUNNING';
CREATE INDEX steps_running_owner ON steps (owner_node) WHERE status = 'RUNNING';
CREATE INDEX steps_workflow_status ON steps (workflow_id, status);
CREATE INDEX steps_status_updated ON steps (status, updated_at_ms);
CREATE INDEX steps_updated ON steps (updated_at_ms);
"""

_SQLITE_SELECT = (
    # INDEXED BY: the plan RelayMesh's claim query gets. Without it (and without
    # ANALYZE) this bare query sorts every READY row found through another index.
    "SELECT id FROM steps INDEXED BY steps_claimable "
    "WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= ? "
    "ORDER BY priority, ready_at_ms LIMIT 1"
)
_SQLITE_UPDATE = (
    "UPDATE steps SET status = 'RUNNING', lease_token = ?, lease_epoch = lease_epoch + 1, "
    "attempt = attempt + 1, owner_node = ?, lease_expires_at_ms = ?, started_at_ms = ?, "
    "updated_at_ms = ? WHERE id = ? AND status IN ('READY', 'RETRY_WAIT')"
)
_PG_CLAIM_ONE = """
UPDATE steps SET status = 'RUNNING', lease_token = $1, lease_epoch = lease_epoch + 1,
    attempt = attempt + 1, owner_node = $2, lease_expires_at_ms = $3::bigint + 30000,
    started_at_ms = $3::bigint, updated_at_ms = $3::bigint
WHERE id = (SELECT id FROM steps
            WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= $3::bigint
            ORDER BY priority, ready_at_ms LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
_PG_SELECT = (
    "SELECT id FROM steps WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= $1::bigint "
    "ORDER BY priority, ready_at_ms LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_PG_UPDATE = (
    "UPDATE steps SET status = 'RUNNING', lease_token = $1, lease_epoch = lease_epoch + 1, "
    "attempt = attempt + 1, owner_node = $2, lease_expires_at_ms = $3::bigint + 30000, "
    "started_at_ms = $3::bigint, updated_at_ms = $3::bigint WHERE id = $4"
)

_BUSY_SLEEP_MAX_S = 0.0005
BATCH = 64
"""Rows per claim and per commit in the batched cases (RelayMesh's default claim_batch)."""
SETUP_BUSY_TIMEOUT_MS = 10_000

_SQLITE_SELECT_BATCH = _SQLITE_SELECT.replace("LIMIT 1", f"LIMIT {BATCH}").replace(
    "SELECT id ", "SELECT id, lease_epoch + 1 "
)
_SQLITE_COMMIT_ONE = (
    "UPDATE steps SET status = 'SUCCEEDED', result = 'null', lease_token = NULL, "
    "finished_at_ms = ?, updated_at_ms = ? "
    "WHERE id = ? AND lease_token = ? AND lease_epoch = ? AND status = 'RUNNING'"
)
_PG_CLAIM_BATCH = f"""
UPDATE steps SET status = 'RUNNING', lease_token = $1 || id, lease_epoch = lease_epoch + 1,
    attempt = attempt + 1, owner_node = $2, lease_expires_at_ms = $3::bigint + 30000,
    started_at_ms = $3::bigint, updated_at_ms = $3::bigint
WHERE id IN (SELECT id FROM steps
             WHERE status IN ('READY', 'RETRY_WAIT') AND ready_at_ms <= $3::bigint
             ORDER BY priority, ready_at_ms LIMIT {BATCH} FOR UPDATE SKIP LOCKED)
RETURNING id, lease_token, lease_epoch
"""
_PG_COMMIT_BATCH = """
UPDATE steps AS s SET status = 'SUCCEEDED', result = 'null', lease_token = NULL,
    finished_at_ms = $4::bigint, updated_at_ms = $4::bigint
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS c (id, token, epoch)
WHERE s.id = c.id AND s.lease_token = c.token AND s.lease_epoch = c.epoch
    AND s.status = 'RUNNING'
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- SQLite --------------------------------------------------------------------------


def _sqlite_create(path: str, rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    ddl = SQLITE_DDL.read_text() if SQLITE_DDL.exists() else _FALLBACK_DDL
    conn.executescript(ddl)
    now = _now_ms()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO workflows VALUES ('wf', 'raw', 'RUNNING', ?, ?)", (now, now))
    conn.executemany(
        "INSERT INTO steps (id, workflow_id, name, agent, status, priority, max_attempts, "
        "base_backoff_ms, max_backoff_ms, input, created_at_ms, updated_at_ms, ready_at_ms) "
        "VALUES (?, 'wf', ?, 'echo', 'READY', 1, 3, 1000, 60000, 'null', ?, ?, ?)",
        ((f"s{i:08d}", f"s{i}", now, now, now - rows + i) for i in range(rows)),
    )
    conn.execute("COMMIT")
    conn.close()


def _sqlite_open(path: str, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    # The set-up pragmas may meet another client's lock (opening the WAL index):
    # wait for it here; only the timed loop below uses the store's busy_timeout=0.
    conn.execute(f"PRAGMA busy_timeout = {SETUP_BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.execute("PRAGMA cache_size = -16000")
    conn.execute("SELECT count(*) FROM workflows").fetchone()
    conn.execute("PRAGMA busy_timeout = 0")
    return conn


def _sqlite_begin(conn: sqlite3.Connection) -> None:
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError:
            time.sleep(random.uniform(0, _BUSY_SLEEP_MAX_S))


def _sqlite_commit(conn: sqlite3.Connection) -> None:
    while True:
        try:
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError:  # busy at commit (a checkpoint): retry it
            time.sleep(random.uniform(0, _BUSY_SLEEP_MAX_S))


def _sqlite_client(path: str, sync: str, name: str, gate: Any, out: Any) -> None:
    conn = _sqlite_open(path, sync)
    claims = 0
    stop_at = _wait_for_start(gate, out, name)
    while time.time() < stop_at:
        _sqlite_begin(conn)
        now = _now_ms()
        row = conn.execute(_SQLITE_SELECT, (now,)).fetchone()
        if row is None:
            _sqlite_commit(conn)
            break
        conn.execute(_SQLITE_UPDATE, (uuid.uuid4().hex, name, now + 30_000, now, now, row[0]))
        _sqlite_commit(conn)
        claims += 1
    conn.close()
    out.put((name, claims))


def _sqlite_batch_client(path: str, sync: str, name: str, gate: Any, out: Any) -> None:
    conn = _sqlite_open(path, sync)
    done = 0
    stop_at = _wait_for_start(gate, out, name)
    while time.time() < stop_at:
        _sqlite_begin(conn)
        now = _now_ms()
        rows = conn.execute(_SQLITE_SELECT_BATCH, (now,)).fetchall()
        leases = [(row[0], uuid.uuid4().hex, row[1]) for row in rows]
        conn.executemany(
            _SQLITE_UPDATE,
            ((token, name, now + 30_000, now, now, sid) for sid, token, _ in leases),
        )
        _sqlite_commit(conn)
        if not leases:
            break
        _sqlite_begin(conn)
        now = _now_ms()
        conn.executemany(
            _SQLITE_COMMIT_ONE, ((now, now, sid, token, epoch) for sid, token, epoch in leases)
        )
        _sqlite_commit(conn)
        done += len(leases)
    conn.close()
    out.put((name, done))


def sqlite_run(clients: int, seconds: float, sync: str = "NORMAL") -> dict[str, Any]:
    batch = sync.endswith(" batch")
    sync = sync.removesuffix(" batch")
    with tempfile.TemporaryDirectory(prefix="relaymesh-raw-") as tmp:
        path = str(Path(tmp) / "raw.db")
        per_client_s = 80_000 if batch else 40_000
        _sqlite_create(path, rows=int(per_client_s * seconds * max(1, clients)))
        if batch:
            label = f"SQLite sync={sync}, batch of {BATCH} claimed + committed"
            return _run_clients(_sqlite_batch_client, (path, sync), clients, seconds, label)
        return _run_clients(_sqlite_client, (path, sync), clients, seconds, f"SQLite sync={sync}")


# -- PostgreSQL ----------------------------------------------------------------------


def _pg_dsn(admin_dsn: str, dbname: str) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path="/" + dbname))


def _pg_client(dsn: str, mode: str, name: str, gate: Any, out: Any) -> None:
    import asyncio

    import asyncpg

    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        if mode == "one-statement, synchronous_commit=off":
            await conn.execute("SET synchronous_commit = off")
        claims = 0
        try:
            stop_at = _wait_for_start(gate, out, name)
            while time.time() < stop_at:
                now = _now_ms()
                if mode == "batch":
                    rows = await conn.fetch(_PG_CLAIM_BATCH, uuid.uuid4().hex, name, now)
                    if not rows:
                        break
                    await conn.execute(
                        _PG_COMMIT_BATCH,
                        [r[0] for r in rows],
                        [r[1] for r in rows],
                        [r[2] for r in rows],
                        _now_ms(),
                    )
                    claims += len(rows)
                    continue
                if mode.startswith("one-statement"):
                    got = await conn.fetchval(_PG_CLAIM_ONE, uuid.uuid4().hex, name, now)
                else:
                    async with conn.transaction():
                        got = await conn.fetchval(_PG_SELECT, now)
                        if got is not None:
                            await conn.execute(_PG_UPDATE, uuid.uuid4().hex, name, now, got)
                if got is None:
                    break
                claims += 1
        finally:
            await conn.close()
        return claims

    out.put((name, asyncio.run(run())))


def pg_run(
    clients: int, seconds: float, mode: str = "one-statement", admin_dsn: str = ADMIN_DSN
) -> dict[str, Any]:
    import psycopg

    dbname = f"bench_raw_{uuid.uuid4().hex[:10]}"
    dsn = _pg_dsn(admin_dsn, dbname)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        rows = int((40_000 if mode == "batch" else 15_000) * seconds * max(1, clients))
        now = _now_ms()
        with psycopg.connect(dsn) as conn:
            conn.execute(_PG_DDL)
            conn.execute(
                "INSERT INTO workflows VALUES ('wf', 'raw', 'RUNNING', %s, %s)", (now, now)
            )
            conn.execute(
                "INSERT INTO steps (id, workflow_id, name, agent, status, priority, "
                "max_attempts, base_backoff_ms, max_backoff_ms, input, created_at_ms, "
                "updated_at_ms, ready_at_ms) "
                "SELECT 's' || lpad(i::text, 8, '0'), 'wf', 's' || i, 'echo', 'READY', 1, 3, "
                "1000, 60000, 'null', %s, %s, %s - %s + i FROM generate_series(0, %s - 1) AS i",
                (now, now, now, rows, rows),
            )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE steps")
        label = f"PostgreSQL SKIP LOCKED, {mode}"
        if mode == "batch":
            label = f"PostgreSQL SKIP LOCKED, batch of {BATCH} claimed + committed"
        return _run_clients(_pg_client, (dsn, mode), clients, seconds, label)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# -- shared --------------------------------------------------------------------------


def _wait_for_start(gate: Any, out: Any, name: str) -> float:
    """Tell the parent this client is connected, wait for the common start; returns
    when to stop (wall clock)."""
    out.put(("ready", name))
    go, stop_at = gate
    go.wait()
    return float(stop_at.value)


def _run_clients(
    target: Any, args: tuple[Any, ...], clients: int, seconds: float, label: str
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    stop_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=target, args=(*args, f"c{i}", (go, stop_at), out))
        for i in range(clients)
    ]
    counts: dict[str, int] = {}
    ready = 0
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + seconds + 120
        while len(counts) < len(procs):
            try:
                kind, value = out.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError(f"{label}: a client failed or hung") from None
                continue
            if kind == "ready":
                ready += 1
                if ready == len(procs):  # every client connected: start together
                    stop_at.value = time.time() + seconds
                    go.set()
            else:
                counts[kind] = value
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    total = sum(counts.values())
    return {
        "label": label,
        "clients": clients,
        "seconds": seconds,
        "claims": total,
        "per_s": total / seconds,
        "shares": sorted((c / total if total else 0.0 for c in counts.values()), reverse=True),
    }


CASES: tuple[tuple[str, int, str], ...] = (
    ("sqlite", 1, "NORMAL"),
    ("sqlite", 2, "NORMAL"),
    ("sqlite", 1, "FULL"),
    ("sqlite", 2, "FULL"),
    ("pg", 4, "one-statement"),
    ("pg", 4, "transaction"),
    ("pg", 4, "one-statement, synchronous_commit=off"),
)
BATCH_CASES: tuple[tuple[str, int, str], ...] = (
    ("sqlite", 1, "NORMAL batch"),
    ("sqlite", 2, "NORMAL batch"),
    ("pg", 4, "batch"),
)


def run_all(
    quick: bool, runs: int | None = None, cases: tuple[tuple[str, int, str], ...] | None = None
) -> list[dict[str, Any]]:
    """Every case, ``runs`` times each; one summary row per case (median claims/s)."""
    runs = runs or (1 if quick else 3)
    seconds = 1.5 if quick else 2.0
    rows = []
    for backend, clients, variant in cases or CASES + BATCH_CASES:
        results = []
        for _ in range(runs):
            if backend == "sqlite":
                results.append(sqlite_run(clients, seconds, variant))
            else:
                results.append(pg_run(clients, seconds, variant))
        med = sorted(results, key=lambda r: r["per_s"])[len(results) // 2]
        row = {
            "backend": backend,
            "label": med["label"],
            "clients": clients,
            "runs": [round(r["per_s"]) for r in results],
            "median_per_s": statistics.median(r["per_s"] for r in results),
            "shares": [round(s, 3) for s in med["shares"]],
            "batch": variant.endswith("batch"),
        }
        print(
            f"  raw {row['label']:<40} clients={clients} "
            f"median={row['median_per_s']:,.0f}/s runs={row['runs']} shares={row['shares']}",
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args(argv)
    run_all(args.quick, args.runs)


if __name__ == "__main__":
    main()
