"""huey (SqliteHuey) on the RelayMesh no-op workload; prints one JSON line.

    python -m bench.peers.huey_run throughput --dir D --tasks 20000 --workers 2
    python -m bench.peers.huey_run latency --dir D --rate 50 --seconds 10 --workers 2

``throughput`` puts the backlog in the queue first (huey's serialized messages, one
transaction), then starts ``huey_consumer`` (process
workers, as many as asked) and polls the queue length every 5 ms: the rate is the
tasks dequeued from the first poll that saw the backlog shrink to the poll that saw it
empty. ``latency`` starts the consumer on an empty queue, enqueues at a steady rate and
reports each task's enqueue-to-start time (consumer defaults: 0.1 s polling with
backoff, which is what an idle huey does).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _start_consumer(db: str, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, RELAYMESH_BENCH_HUEY_DB=db, PYTHONPATH=str(REPO))
    consumer = Path(sys.executable).parent / "huey_consumer"
    return subprocess.Popen(
        [str(consumer), "bench.peers.huey_tasks.huey", "-w", str(workers), "-k", "process", "-q"],
        env=env,
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGINT, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    # Process workers are in the consumer's group: make sure none outlives it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def throughput(db: str, tasks: int, workers: int, timeout_s: float) -> dict[str, object]:
    os.environ["RELAYMESH_BENCH_HUEY_DB"] = db
    from bench.peers.huey_tasks import huey, noop

    started = time.perf_counter()
    # The backlog goes in as huey's own serialized messages, in one transaction: each
    # ``noop()`` call would be a transaction of its own (an fsync under huey's default
    # synchronous=FULL), which is setup time, not what is measured.
    message = huey.serialize_task(noop.s())
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO task (queue, data, priority) VALUES (?, ?, 0)",
            ((huey.storage.name, message) for _ in range(tasks)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    enqueue_s = time.perf_counter() - started
    if huey.pending_count() != tasks:
        raise SystemExit(f"huey sees {huey.pending_count()} tasks, not {tasks}")
    proc = _start_consumer(db, workers)
    try:
        deadline = time.monotonic() + timeout_s
        first_t: float | None = None
        first_pending = tasks
        while True:
            pending = huey.pending_count()
            now = time.perf_counter()
            if first_t is None and pending < tasks:
                first_t, first_pending = now, pending
            if pending == 0:
                end_t = now
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"huey did not drain: {pending} left")
            time.sleep(0.005)
    finally:
        _stop(proc)
    assert first_t is not None
    window_s = end_t - first_t
    return {
        "system": "huey",
        "tasks": tasks,
        "workers": workers,
        "enqueue_s": round(enqueue_s, 3),
        "window_s": round(window_s, 3),
        "per_s": round(first_pending / window_s, 1) if window_s > 0 else None,
    }


def latency(db: str, rate: float, seconds: float, workers: int) -> dict[str, object]:
    os.environ["RELAYMESH_BENCH_HUEY_DB"] = db
    from bench.peers.huey_tasks import huey, stamp

    proc = _start_consumer(db, workers)
    try:
        # Wait until the consumer runs a task before the steady phase starts.
        stamp(time.time()).get(blocking=True, timeout=30)
        handles = []
        count = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            handles.append(stamp(time.time()))
        values = [h.get(blocking=True, timeout=60) for h in handles]
    finally:
        _stop(proc)
    del huey
    values.sort()
    return {
        "system": "huey",
        "workers": workers,
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("throughput", "latency"))
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    db = str(Path(args.dir) / f"huey-{os.getpid()}.db")
    if args.mode == "throughput":
        out = throughput(db, args.tasks, args.workers, args.timeout)
    else:
        out = latency(db, args.rate, args.seconds, args.workers)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
