"""procrastinate (PostgreSQL) on the RelayMesh no-op workload; prints one JSON line.

    python -m bench.peers.procrastinate_run throughput --jobs 5000 --procs 2 --concurrency 4
    python -m bench.peers.procrastinate_run latency --rate 50 --seconds 10 --procs 2

Each run creates a fresh database (``CREATE DATABASE`` through ``--admin-dsn``),
applies procrastinate's schema, and drops the database at the end. ``throughput``
defers the backlog first (``batch_defer``), then starts ``procrastinate worker``
processes; the rate comes from procrastinate's own event rows (store clock): jobs
started after every worker had started one, over the time from then to the last
success. ``latency`` defers one job at a time at a steady rate to idle workers and
reads deferred -> started from the same event rows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parents[2]
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


THROUGHPUT_SQL = """
WITH firsts AS (
    SELECT j.worker_id, min(e.at) AS first_at
    FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id
    WHERE e.type = 'started' GROUP BY j.worker_id
), w AS (SELECT max(first_at) AS t_all, min(first_at) AS t_first FROM firsts),
ends AS (SELECT max(at) AS t_end FROM procrastinate_events WHERE type = 'succeeded')
SELECT
    (SELECT count(*) FROM procrastinate_events, w WHERE type = 'started' AND at >= w.t_all),
    extract(epoch FROM ends.t_end - w.t_all),
    extract(epoch FROM ends.t_end - w.t_first),
    (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),
    (SELECT count(*) FROM firsts)
FROM w, ends
"""
"""Per worker, when it started its first job; the window opens when every worker had.
Returns: jobs started in the window, the window, the whole drain, jobs succeeded,
workers that ran a job."""


def _dsn_for(admin_dsn: str, dbname: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


def _start_workers(dsn: str, procs: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, RELAYMESH_BENCH_PROCRASTINATE_DSN=dsn, PYTHONPATH=str(REPO))
    exe = Path(sys.executable).parent / "procrastinate"
    return [
        subprocess.Popen(
            [
                str(exe),
                "--app=bench.peers.procrastinate_tasks.app",
                "worker",
                f"--name=w{i}",
                f"--concurrency={concurrency}",
            ],
            env=env,
            cwd=str(REPO),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(procs)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class FreshDatabase:
    """``CREATE DATABASE`` on enter, ``DROP DATABASE ... WITH (FORCE)`` on exit."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"bench_proc_{uuid.uuid4().hex[:10]}"
        self.dsn = _dsn_for(admin_dsn, self.name)

    def __enter__(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self.dsn

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _app(dsn: str):  # type: ignore[no-untyped-def]
    os.environ["RELAYMESH_BENCH_PROCRASTINATE_DSN"] = dsn
    from bench.peers.procrastinate_tasks import app

    return app


def throughput(
    admin_dsn: str, jobs: int, procs: int, concurrency: int, timeout_s: float
) -> dict[str, object]:
    with FreshDatabase(admin_dsn) as dsn:
        app = _app(dsn)
        with app.open():
            app.schema_manager.apply_schema()
            noop = app.tasks["noop"]
            started = time.perf_counter()
            for i in range(0, jobs, 1000):
                noop.batch_defer(*([{}] * min(1000, jobs - i)))
            defer_s = time.perf_counter() - started
        workers = _start_workers(dsn, procs, concurrency)
        try:
            deadline = time.monotonic() + timeout_s
            with psycopg.connect(dsn, autocommit=True) as conn:
                while True:
                    left = conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo','doing')"
                    ).fetchone()
                    if left == (0,):
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"procrastinate did not drain: {left}")
                    time.sleep(0.05)
                # Read while the workers still run: a worker's row, and so the jobs'
                # worker_id, goes away when it shuts down.
                row = conn.execute(THROUGHPUT_SQL).fetchone()
                shares = [
                    r[0]
                    for r in conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs GROUP BY worker_id ORDER BY 1 DESC"
                    ).fetchall()
                ]
        finally:
            _stop(workers)
    assert row is not None
    after_all, window_s, full_s, succeeded, active = row
    return {
        "system": "procrastinate",
        "jobs": jobs,
        "succeeded": succeeded,
        "procs": procs,
        "concurrency": concurrency,
        "active_workers": active,
        "shares": [round(n / max(1, jobs), 3) for n in shares],
        "defer_s": round(defer_s, 3),
        "window_s": round(float(window_s), 3),
        "per_s": round(after_all / float(window_s), 1) if window_s else None,
        "full_per_s": round(jobs / float(full_s), 1) if full_s else None,
    }


def latency(
    admin_dsn: str, rate: float, seconds: float, procs: int, concurrency: int
) -> dict[str, object]:
    with FreshDatabase(admin_dsn) as dsn:
        app = _app(dsn)
        with app.open():
            app.schema_manager.apply_schema()
            workers = _start_workers(dsn, procs, concurrency)
            try:
                noop = app.tasks["noop"]
                # Warm up: one job per worker process, then wait until all are done.
                noop.batch_defer(*([{}] * procs))
                with psycopg.connect(dsn, autocommit=True) as conn:
                    deadline = time.monotonic() + 30
                    while conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
                    ).fetchone() != (0,):
                        if time.monotonic() > deadline:
                            raise SystemExit("procrastinate workers did not start")
                        time.sleep(0.05)
                    first_id = conn.execute("SELECT max(id) FROM procrastinate_jobs").fetchone()
                count = int(rate * seconds)
                t0 = time.perf_counter()
                for i in range(count):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    noop.defer()
                with psycopg.connect(dsn, autocommit=True) as conn:
                    deadline = time.monotonic() + 60
                    while conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
                    ).fetchone() != (0,):
                        if time.monotonic() > deadline:
                            raise SystemExit("procrastinate did not finish the latency run")
                        time.sleep(0.05)
                    assert first_id is not None
                    rows = conn.execute(
                        """
                        SELECT extract(epoch FROM s.at - d.at) * 1000
                        FROM procrastinate_events d JOIN procrastinate_events s
                          ON s.job_id = d.job_id AND s.type = 'started'
                        WHERE d.type = 'deferred' AND d.job_id > %s
                        """,
                        (first_id[0],),
                    ).fetchall()
            finally:
                _stop(workers)
    values = sorted(float(r[0]) for r in rows)
    return {
        "system": "procrastinate",
        "procs": procs,
        "concurrency": concurrency,
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("throughput", "latency"))
    parser.add_argument("--admin-dsn", default=ADMIN_DSN)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.mode == "throughput":
        out = throughput(args.admin_dsn, args.jobs, args.procs, args.concurrency, args.timeout)
    else:
        out = latency(args.admin_dsn, args.rate, args.seconds, args.procs, args.concurrency)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
