"""Speed with a big history: the same drain on an empty store and on one that already
holds up to 1,000,000 finished steps (and their ownership events), both stores.

``python -m bench.retention_bigstore [--quick] [--only sqlite|postgresql]``
(``make bench-retention``; ``make bench`` runs it too):

* One store per size and backend: empty, or ``SIZES`` finished steps of
  history (10-step SUCCEEDED workflows over the last 6 days, one ``claimed``
  ownership event per step), written with bulk SQL (``INSERT ... SELECT`` over a
  generated series), not through the API. The history is inside the default
  ``finished_after_s`` (7 days), so the nodes' own retention pass leaves it alone.
  PostgreSQL gets ``VACUUM ANALYZE`` after each fill (what autovacuum would have done
  over 6 days); SQLite gets nothing (a node never runs ANALYZE).
* In each of ``ROUNDS`` rounds, every store in turn (so a change of the machine's
  load hits every size alike; the median per size is reported): a backlog of 20,000
  no-op ``echo`` steps (20 workflows of 1,000) is drained by 2 ``relaymesh node run``
  processes with the default settings (only
  ``guard.max_load`` raised, as in work_throughput); the rate is counted as there
  (steps started after both nodes had claimed, over the time to the last commit).
  Then submit-to-start latency of one-step workflows at 50/s on the idle nodes.
* Load averages are recorded before and after each run: the machine is shared.

Results: ``bench/results/retention_bigstore.md`` and an SVG plot (rows vs steps/s)
``docs/retention-bench.svg``; docs/benchmarks.md has its own section with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.work_throughput import (
    GUARD_ENV,
    Cluster,
    FreshStore,
    _migrate,
    _submit,
    _submit_steady,
    backend_available,
    fresh_store,
    log,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "retention_bigstore.md"
PLOT = REPO / "docs" / "retention-bench.svg"
RAW = REPO / "bench" / "results" / "retention_bigstore.json"

SIZES = (0, 250_000, 1_000_000)
QUICK_SIZES = (0, 100_000)
DRAIN_STEPS = 20_000
QUICK_DRAIN_STEPS = 5_000
NODES = 2
ROUNDS = 3
TARGET_RATIO = 0.90
DAY_MS = 86_400_000


# -- the history, in bulk --------------------------------------------------------------


def _fill_sqlite(path: Path, start: int, end: int, now_ms: int) -> None:
    """Steps ``start..end-1`` of the history (10 per workflow), their workflows and one
    claimed event each, in one transaction."""
    span = 6 * DAY_MS
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        params = {"a": start, "b": end - 1, "t0": now_ms - span, "dt": span / max(1, end)}
        series = "WITH RECURSIVE n(i) AS (SELECT :a UNION ALL SELECT i + 1 FROM n WHERE i < :b)"
        conn.execute(
            f"""{series}
            INSERT INTO workflows (id, name, status, created_at_ms, updated_at_ms)
            SELECT printf('h%08x%023d', (i / 10) * 2654435761 % 4294967296, i / 10),
                   'history', 'SUCCEEDED', CAST(:t0 + i * :dt AS INTEGER),
                   CAST(:t0 + i * :dt AS INTEGER) + 1000
            FROM n WHERE i % 10 = 0""",
            params,
        )
        conn.execute(
            f"""{series}
            INSERT INTO steps (id, workflow_id, name, agent, status, priority, attempt,
                max_attempts, base_backoff_ms, max_backoff_ms, lease_token, lease_epoch,
                owner_node, depends_on, locks, input, result, created_at_ms, updated_at_ms,
                ready_at_ms, started_at_ms, finished_at_ms, heartbeat_at_ms)
            SELECT printf('%08x%024d', i * 2654435761 % 4294967296, i),
                   printf('h%08x%023d', (i / 10) * 2654435761 % 4294967296, i / 10),
                   's' || (i % 10), 'echo', 'SUCCEEDED', 1, 1, 3, 500, 30000,
                   'history', 1, 'gone-node', '[]', '[]', '{{}}', '{{"ok": 1}}',
                   CAST(:t0 + i * :dt AS INTEGER), CAST(:t0 + i * :dt AS INTEGER) + 20,
                   CAST(:t0 + i * :dt AS INTEGER), CAST(:t0 + i * :dt AS INTEGER) + 5,
                   CAST(:t0 + i * :dt AS INTEGER) + 20, CAST(:t0 + i * :dt AS INTEGER) + 5
            FROM n""",
            params,
        )
        conn.execute(
            f"""{series}
            INSERT INTO ownership_events (step_id, node, event, lease_epoch, at_ms)
            SELECT printf('%08x%024d', i * 2654435761 % 4294967296, i), 'gone-node',
                   'claimed', 1, CAST(:t0 + i * :dt AS INTEGER) + 5
            FROM n""",
            params,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _fill_postgres(url: str, start: int, end: int, now_ms: int) -> None:
    import psycopg

    span = 6 * DAY_MS
    dt = span / max(1, end)
    t0 = now_ms - span
    with psycopg.connect(url, autocommit=False) as pg:
        args = {"a": start, "b": end - 1, "t0": t0, "dt": dt}
        pg.execute(
            """INSERT INTO workflows (id, name, status, created_at_ms, updated_at_ms)
            SELECT 'h' || md5((i / 10)::text), 'history', 'SUCCEEDED',
                   (%(t0)s + i * %(dt)s)::bigint, (%(t0)s + i * %(dt)s)::bigint + 1000
            FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i WHERE i %% 10 = 0""",
            args,
        )
        pg.execute(
            """INSERT INTO steps (id, workflow_id, name, agent, status, priority, attempt,
                max_attempts, base_backoff_ms, max_backoff_ms, lease_token, lease_epoch,
                owner_node, input, result, created_at_ms, updated_at_ms, ready_at_ms,
                started_at_ms, finished_at_ms, heartbeat_at_ms)
            SELECT md5(i::text), 'h' || md5((i / 10)::text), 's' || (i %% 10), 'echo',
                   'SUCCEEDED', 1, 1, 3, 500, 30000, 'history', 1, 'gone-node', '{}',
                   '{"ok": 1}', t, t + 20, t, t + 5, t + 20, t + 5
            FROM (SELECT i, (%(t0)s + i * %(dt)s)::bigint AS t
                  FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i) AS g""",
            args,
        )
        pg.execute(
            """INSERT INTO ownership_events (step_id, node, event, lease_epoch, at_ms)
            SELECT md5(i::text), 'gone-node', 'claimed', 1, (%(t0)s + i * %(dt)s)::bigint + 5
            FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i""",
            args,
        )
        pg.commit()
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")


def grow(store: FreshStore, have: int, want: int) -> float:
    """Add history steps ``have..want-1``; returns seconds taken."""
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    if store.backend == "sqlite":
        _fill_sqlite(store.path, have, want, now_ms)
    else:
        _fill_postgres(store.url, have, want, now_ms)
    return time.perf_counter() - started


# -- one measurement -------------------------------------------------------------------


def _wait(
    store: FreshStore, sql: str, expected: int, timeout_s: float, params: tuple[Any, ...] = ()
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = store.query(sql, params)
        if rows and rows[0][0] >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done after {timeout_s} s: {rows}")
        time.sleep(0.2)


def drain(store: FreshStore, steps: int, tmp: Path, tag: str) -> dict[str, Any]:
    name = f"drain-{tag}"
    per_wf = 1000
    workflows = [(name, min(per_wf, steps - i)) for i in range(0, steps, per_wf)]
    load_before = os.getloadavg()
    submit_s = asyncio.run(_submit(store.url, workflows))
    mine = f"SELECT id FROM workflows WHERE name = '{name}'"
    cluster = Cluster(store.url, NODES, tmp, GUARD_ENV, tag)
    try:
        cluster.start()
        _wait(
            store,
            f"SELECT count(*) FROM steps WHERE workflow_id IN ({mine}) AND status = 'SUCCEEDED'",
            steps,
            timeout_s=max(300.0, steps / 20),
        )
        warnings = cluster.errors()
    finally:
        cluster.stop()
    rows = store.query(
        "SELECT owner_node, started_at_ms, finished_at_ms FROM steps "
        f"WHERE workflow_id IN ({mine}) AND status = 'SUCCEEDED'"
    )
    first: dict[str, int] = {}
    for owner, started, _ in rows:
        first[owner] = min(first.get(owner, started), started)
    t_all = max(first.values())
    t_end = max(r[2] for r in rows)
    after_all = sum(1 for r in rows if r[1] >= t_all)
    return {
        "steps": len(rows),
        "per_s": after_all * 1000.0 / max(1, t_end - t_all),
        "whole_per_s": len(rows) * 1000.0 / max(1, t_end - min(r[1] for r in rows)),
        "submit_per_s": steps / submit_s,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "warnings": warnings[:3],
    }


def latency(store: FreshStore, seconds: float, tmp: Path, tag: str) -> dict[str, Any]:
    cluster = Cluster(store.url, NODES, tmp, GUARD_ENV, tag)
    load_before = os.getloadavg()
    try:
        cluster.start()
        cluster.wait_ready()
        time.sleep(0.5)  # an idle cluster, not a starting one
        mark_ms = int(time.time() * 1000) - 1000
        count = asyncio.run(_submit_steady(store.url, 50.0, seconds))
        # A parameter, not a literal: psycopg reads "%" in the text as a placeholder.
        mine = "SELECT id FROM workflows WHERE name LIKE ? AND created_at_ms >= ?"
        _wait(
            store,
            f"SELECT count(*) FROM steps WHERE workflow_id IN ({mine}) AND status = 'SUCCEEDED'",
            count,
            timeout_s=120,
            params=("lat%", mark_ms),
        )
    finally:
        cluster.stop()
    rows = store.query(
        f"SELECT started_at_ms - ready_at_ms FROM steps WHERE workflow_id IN ({mine})",
        ("lat%", mark_ms),
    )
    values = sorted(float(r[0]) for r in rows)
    return {
        "samples": len(values),
        "p50_ms": statistics.median(values),
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def suite(
    backend: str, sizes: tuple[int, ...], steps: int, rounds: int, tmp: Path
) -> list[dict[str, Any]]:
    """One store per size, filled once; then ``rounds`` rounds that drain each store in
    turn, so a change of the machine's load hits every size alike. Per size: the
    median of its rounds."""
    with contextlib.ExitStack() as stack:
        stores = {}
        for size in sizes:
            store = stack.enter_context(fresh_store(backend, tmp))
            asyncio.run(_migrate(store.url))
            fill_s = grow(store, 0, size) if size else 0.0
            log(f"{backend}: store with {size:,} finished steps ready (fill {fill_s:.0f} s)")
            stores[size] = (store, fill_s)
        runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        for round_no in range(rounds):
            for size in sizes:
                store, _ = stores[size]
                tag = f"{backend[:2]}{size}-{round_no}-{uuid.uuid4().hex[:4]}"
                run = drain(store, steps, tmp, tag)
                run["latency"] = latency(store, 5.0, tmp, tag + "l")
                log(
                    f"  round {round_no + 1}, {size:,} finished: {run['per_s']:.0f} steps/s, "
                    f"submit-to-start p50 {run['latency']['p50_ms']:.0f} ms "
                    f"(load {run['load_before'][0]:.1f} -> {run['load_after'][0]:.1f})"
                )
                runs[size].append(run)
        out = []
        for size in sizes:
            store, fill_s = stores[size]
            done = runs[size]
            median = sorted(done, key=lambda r: r["per_s"])[len(done) // 2]
            out.append(
                {
                    "backend": backend,
                    "history_steps": size,
                    "rows_steps": store.query("SELECT count(*) FROM steps")[0][0],
                    "rows_events": store.query("SELECT count(*) FROM ownership_events")[0][0],
                    "fill_s": fill_s,
                    "drain": median,
                    "drain_rates": [r["per_s"] for r in done],
                    "latency": {
                        "p50_ms": statistics.median(r["latency"]["p50_ms"] for r in done),
                        "p99_ms": statistics.median(r["latency"]["p99_ms"] for r in done),
                    },
                    "loads": [(r["load_before"][0], r["load_after"][0]) for r in done],
                }
            )
    return out


# -- output ----------------------------------------------------------------------------


def _svg(results: list[dict[str, Any]]) -> str:
    """A small line plot, steps/s against rows in the store, one line per backend."""
    width, height, left, bottom, top, right = 640, 360, 70, 50, 30, 150
    xs = [r["rows_steps"] for r in results] or [1]
    ys = [r["drain"]["per_s"] for r in results] or [1]
    x_max = max(xs) * 1.05 or 1
    y_max = max(ys) * 1.15 or 1

    def px(x: float) -> float:
        return left + x / x_max * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - y / y_max * (height - bottom - top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<line x1="{left}" y1="{py(0)}" x2="{width - right}" y2="{py(0)}" stroke="black"/>',
        f'<line x1="{left}" y1="{py(0)}" x2="{left}" y2="{top}" stroke="black"/>',
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">'
        "steps already in the store (finished history + drained)</text>",
        f'<text x="16" y="{(top + height - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + height - bottom) / 2})">drain steps/s</text>',
    ]
    for i in range(5):
        x = x_max * i / 4
        y = y_max * i / 4
        parts.append(
            f'<text x="{px(x)}" y="{py(0) + 16}" text-anchor="middle">{x / 1e6:.2f}M</text>'
        )
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4}" text-anchor="end">{y:.0f}</text>')
    colors = {"sqlite": "#1f77b4", "postgresql": "#d62728"}
    for k, backend in enumerate(("sqlite", "postgresql")):
        line = [r for r in results if r["backend"] == backend]
        if not line:
            continue
        points = " ".join(f"{px(r['rows_steps']):.1f},{py(r['drain']['per_s']):.1f}" for r in line)
        color = colors[backend]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for r in line:
            parts.append(
                f'<circle cx="{px(r["rows_steps"]):.1f}" cy="{py(r["drain"]["per_s"]):.1f}" '
                f'r="4" fill="{color}"/>'
            )
        ly = top + 20 + 20 * k
        parts.append(
            f'<line x1="{width - right + 15}" y1="{ly}" x2="{width - right + 40}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - right + 45}" y="{ly + 4}">{backend}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render(results: list[dict[str, Any]], steps: int) -> str:
    lines = [
        "| store | steps in the store at the end (+ events) | drain steps/s, median "
        "(each round) | vs empty | submit-to-start p50 / p99 | 1-min load avg per round |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        base = next(b for b in results if b["backend"] == r["backend"] and b["history_steps"] == 0)
        ratio = r["drain"]["per_s"] / max(1e-9, base["drain"]["per_s"])
        lines.append(
            f"| {r['backend']} | {r['rows_steps']:,} ({r['rows_events']:,}) | "
            f"{r['drain']['per_s']:,.0f} ({', '.join(f'{x:,.0f}' for x in r['drain_rates'])}) | "
            f"{ratio:.0%} | "
            f"{r['latency']['p50_ms']:.0f} / {r['latency']['p99_ms']:.0f} ms | "
            f"{', '.join(f'{a:.1f}->{b:.1f}' for a, b in r['loads'])} |"
        )
    verdicts = []
    for backend in ("sqlite", "postgresql"):
        line = [r for r in results if r["backend"] == backend]
        if len(line) < 2:
            continue
        ratio = line[-1]["drain"]["per_s"] / max(1e-9, line[0]["drain"]["per_s"])
        met = "met" if ratio >= TARGET_RATIO else "NOT met"
        verdicts.append(
            f"- {backend}: {line[-1]['history_steps']:,} finished steps -> {ratio:.0%} of the "
            f"empty store's rate (target >= {TARGET_RATIO:.0%}: {met})"
        )
    return (
        f"Drain of {steps:,} no-op steps, {NODES} nodes, default settings "
        "(only `guard.max_load` raised); the stores drained in turn, round by round.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(verdicts)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller history and drain")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), action="append")
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    steps = QUICK_DRAIN_STEPS if args.quick else DRAIN_STEPS
    results: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="rm-bench-ret-") as tmp:
        for backend in args.only or ("sqlite", "postgresql"):
            why = backend_available(backend)
            if why:
                log(f"{backend}: skipped ({why})")
                continue
            results += suite(backend, sizes, steps, 1 if args.quick else ROUNDS, Path(tmp))
            _write(results, steps, started, plot=not args.quick)  # each backend as it ends


def _write(results: list[dict[str, Any]], steps: int, started: str, *, plot: bool) -> None:
    text = f"Run {started}, load averages (1/5/15 min) at the end: {os.getloadavg()}\n\n"
    text += render(results, steps)
    print(text, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    RAW.write_text(json.dumps(results, indent=2))
    if plot:
        PLOT.write_text(_svg(results))


if __name__ == "__main__":
    sys.exit(main())
