"""Work throughput: no-op steps end to end (submit -> claim -> commit) on real nodes.

What one run measures (``python -m bench.run_all --only work_throughput [--quick]``,
or ``python -m bench.work_throughput [--quick] [--only relaymesh|peers|raw]``):

* **Drain**: a backlog of no-op ``echo`` steps (workflows of many independent steps)
  is submitted to a fresh store (a new SQLite file; a new PostgreSQL database, dropped
  after), then 1, 2 or 4 ``relaymesh node run`` processes are started on it (one
  mesh, loopback). From the step rows (store clock): the rate is the steps started
  after every node had claimed its first one, over the time from then to the last
  commit; the whole-drain rate (first start to last commit) is shown beside it. Each
  node's share of the claims (``ownership_events``) shows whether writers are fair.
* **Latency**: on an idle cluster, one-step workflows are submitted at a steady
  50 steps/s; submit-to-start is ``started_at - ready_at`` of each step (store clock).
* **Peers**, same workload and machine: huey (SqliteHuey, process workers = cores)
  and procrastinate (PostgreSQL, one worker process per core), ``bench/peers/``.
* **Ceiling**: the store's raw single-row claim transactions/s (``bench/raw_claims``).

Every figure is the median of several runs (``--quick``: fewer, smaller). Nodes run
with the default settings except ``worker.slots`` (``--slots``; the claim batch is
bounded by free slots) and ``guard.max_load`` (raised so other work on the machine
cannot pause the workers mid-run). Every process started here is killed and every
database created is dropped, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "work_throughput.md"
BIN = Path(sys.executable).parent
PG_ADMIN_DSN = os.environ.get(
    "RELAYMESH_BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)

# Targets from issue 3 ("Benchmarks").
TARGET_SQLITE_2_NODES = 5000.0
TARGET_PG_4_NODES = 2000.0
TARGET_P50_MS = {"sqlite": 10.0, "postgresql": 5.0}
HUEY_ELSEWHERE = 1750.0
PROCRASTINATE_ELSEWHERE = (200.0, 340.0)
DEFAULT_SLOTS = 4
"""``worker.slots`` as shipped (relaymesh/settings.py)."""


@dataclass(frozen=True)
class Plan:
    runs: int
    steps: int
    steps_per_workflow: int
    latency_s: float
    latency_runs: int
    rate: float
    huey_tasks: int
    procrastinate_jobs: int
    node_counts: tuple[int, ...] = (1, 2, 4)
    slots: int = 64
    default_slots_rows: bool = True


FULL = Plan(
    runs=3,
    steps=20_000,
    steps_per_workflow=1000,
    latency_s=5.0,
    latency_runs=3,
    rate=50.0,
    huey_tasks=20_000,
    procrastinate_jobs=3000,
)
QUICK = Plan(
    runs=1,
    steps=5000,
    steps_per_workflow=1000,
    latency_s=4.0,
    latency_runs=1,
    rate=50.0,
    huey_tasks=5000,
    procrastinate_jobs=1500,
)


def log(msg: str) -> None:
    print(msg, flush=True)


# -- stores ----------------------------------------------------------------------------


class FreshStore:
    """A new, empty store for one run: a SQLite file in ``tmp`` or a PostgreSQL
    database created through ``PG_ADMIN_DSN``. ``drop()`` removes it."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        token = uuid.uuid4().hex[:10]
        if backend == "sqlite":
            self.path = tmp / f"store-{token}.db"
            self.url = f"sqlite:///{self.path}"
            self.dbname = ""
        else:
            self.dbname = f"bench_work_{token}"
            self.url = urlunsplit(urlsplit(PG_ADMIN_DSN)._replace(path="/" + self.dbname))

    def create(self) -> None:
        if self.backend == "postgresql":
            import psycopg

            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
        else:
            import psycopg

            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read with the plain driver (no RelayMesh code on the measuring side)."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as pg:
            return pg.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]


@contextlib.contextmanager
def fresh_store(backend: str, tmp: Path) -> Iterator[FreshStore]:
    store = FreshStore(backend, tmp)
    store.create()
    try:
        yield store
    finally:
        store.drop()


def backend_available(backend: str) -> str | None:
    """None when RelayMesh can open this backend, else why not."""
    if backend == "sqlite":
        return None
    try:
        import relaymesh.store.postgres  # noqa: F401
    except ImportError as exc:
        return f"relaymesh.store.postgres not importable yet ({exc})"
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}"
    return None


async def _submit(url: str, workflows: list[tuple[str, int]]) -> float:
    """Submit ``(name, steps)`` workflows of independent echo steps the way
    ``relaymesh submit`` does (``services.submit_workflow``); returns seconds taken."""
    from relaymesh.model import StepSpec, WorkflowSpec
    from relaymesh.ops import services
    from relaymesh.store import open_store

    store = await open_store(url)
    try:
        started = time.perf_counter()
        for name, n in workflows:
            spec = WorkflowSpec(
                name=name,
                steps=tuple(StepSpec(name=f"s{i}", agent="echo", input=i) for i in range(n)),
            )
            await services.submit_workflow(store, spec, "bench")
        return time.perf_counter() - started
    finally:
        await store.close()


async def _migrate(url: str) -> None:
    from relaymesh.store import open_store

    store = await open_store(url)
    await store.close()


async def _submit_steady(url: str, rate: float, seconds: float) -> int:
    """One-step workflows at ``rate`` per second for ``seconds``; returns how many."""
    from relaymesh.model import StepSpec, WorkflowSpec
    from relaymesh.ops import services
    from relaymesh.store import open_store

    store = await open_store(url)
    try:
        count = int(rate * seconds)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(count):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            spec = WorkflowSpec(name=f"lat{i}", steps=(StepSpec(name="s", agent="echo", input=i),))
            await services.submit_workflow(store, spec, "bench")
        return count
    finally:
        await store.close()


# -- node processes --------------------------------------------------------------------


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (gossip uses both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port")


@dataclass
class Cluster:
    """``count`` ``relaymesh node run`` processes on one store, one mesh."""

    url: str
    count: int
    tmp: Path
    slots: int
    tag: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def start(self) -> None:
        ports = [free_port() for _ in range(self.count)]
        seeds = self.tmp / f"seeds-{self.tag}"
        seeds.write_text("".join(f"127.0.0.1:{p}\n" for p in ports))
        state = self.tmp / f"state-{self.tag}"
        state.mkdir(exist_ok=True)
        env = dict(
            os.environ,
            RELAYMESH_STORE_URL=self.url,
            RELAYMESH_LOG_LEVEL="info",
            RELAYMESH_WORKER__SLOTS=str(self.slots),
            RELAYMESH_GUARD__MAX_LOAD="1000",
            RELAYMESH_NODE__STATE_DIR=str(state),
        )
        env.pop("RELAYMESH_CONFIG", None)
        for i, port in enumerate(ports):
            name = f"{self.tag}-n{i + 1}"
            path = self.tmp / f"{name}.log"
            with path.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        str(BIN / "relaymesh"),
                        "node",
                        "run",
                        "--name",
                        name,
                        "--bind",
                        f"127.0.0.1:{port}",
                        "--seeds-file",
                        str(seeds),
                        "--create-store",
                    ],
                    env=env,
                    cwd=str(self.tmp),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
            self.logs.append(path)
            self.names.append(name)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every node's worker has started (its ``worker_started`` log line)."""
        deadline = time.monotonic() + timeout_s
        pending = set(range(self.count))
        while pending:
            for i in sorted(pending):
                if b'"worker_started"' in self.logs[i].read_bytes():
                    pending.discard(i)
                elif self.procs[i].poll() is not None:
                    tail = self.logs[i].read_bytes()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"node {self.names[i]} exited early:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes not ready after {timeout_s} s: {sorted(pending)}")
            time.sleep(0.05)

    def cpu_s(self) -> float:
        """User + system CPU seconds the node processes have used so far."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for proc in self.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def errors(self) -> list[str]:
        """Warning and error log lines (store errors, lease conflicts...), first few."""
        found = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if '"level": "warning"' in line or '"level": "error"' in line:
                    found.append(line[:300])
        return found


def _wait_done(store: FreshStore, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = store.query("SELECT count(*) FROM steps WHERE status = 'SUCCEEDED'")
        if rows and rows[0][0] >= expected:
            return
        if time.monotonic() > deadline:
            counts = store.query("SELECT status, count(*) FROM steps GROUP BY status")
            raise RuntimeError(f"not drained after {timeout_s} s: {counts}")
        time.sleep(0.1)


# -- RelayMesh runs --------------------------------------------------------------------


def drain_run(backend: str, nodes: int, plan: Plan, tmp: Path, tag: str) -> dict[str, Any]:
    per_wf = plan.steps_per_workflow
    workflows = [
        (f"drain{i}", min(per_wf, plan.steps - i * per_wf))
        for i in range((plan.steps + per_wf - 1) // per_wf)
    ]
    with fresh_store(backend, tmp) as store:
        submit_s = asyncio.run(_submit(store.url, workflows))
        cluster = Cluster(store.url, nodes, tmp, plan.slots, tag)
        try:
            cluster.start()
            _wait_done(store, plan.steps, timeout_s=max(120.0, plan.steps / 100))
            cpu_s = cluster.cpu_s()
        finally:
            cluster.stop()
        rows = store.query(
            "SELECT owner_node, started_at_ms, finished_at_ms FROM steps WHERE status = 'SUCCEEDED'"
        )
        claims = dict(
            store.query(
                "SELECT node, count(*) FROM ownership_events WHERE event = 'claimed' GROUP BY node"
            )
        )
        conflicts = store.query("SELECT count(*) FROM lease_conflicts")[0][0]
        reruns = store.query("SELECT count(*) FROM steps WHERE attempt > 1")[0][0]
        warnings = cluster.errors()
    first_by_node: dict[str, int] = {}
    for owner, started, _ in rows:
        first_by_node[owner] = min(first_by_node.get(owner, started), started)
    t_all = max(first_by_node.values())
    t_first = min(r[1] for r in rows)
    t_end = max(r[2] for r in rows)
    after_all = sum(1 for r in rows if r[1] >= t_all)
    window_by_node: dict[str, int] = {}
    for owner, started, _ in rows:
        if started >= t_all:
            window_by_node[owner] = window_by_node.get(owner, 0) + 1
    window_ms = max(1, t_end - t_all)
    total = sum(claims.values()) or 1
    return {
        "backend": backend,
        "nodes": nodes,
        "steps": len(rows),
        "active_nodes": len(first_by_node),
        "per_s": after_all * 1000.0 / window_ms,
        "window_steps": after_all,
        "whole_per_s": len(rows) * 1000.0 / max(1, t_end - t_first),
        # Fairness over the window where every node was running (start-up skew on a
        # busy 2-core host would otherwise count as unfairness); all claims beside it.
        "shares": sorted((c / max(1, after_all) for c in window_by_node.values()), reverse=True),
        "shares_all_claims": sorted((c / total for c in claims.values()), reverse=True),
        "cpu_us_per_step": cpu_s * 1e6 / max(1, len(rows)),
        "submit_per_s": plan.steps / submit_s,
        "conflicts": conflicts,
        "reruns": reruns,
        "warnings": warnings[:5],
    }


def latency_run(backend: str, nodes: int, plan: Plan, tmp: Path, tag: str) -> dict[str, Any]:
    with fresh_store(backend, tmp) as store:
        asyncio.run(_migrate(store.url))
        cluster = Cluster(store.url, nodes, tmp, plan.slots, tag)
        try:
            cluster.start()
            cluster.wait_ready()
            time.sleep(0.5)  # let the mesh settle: an idle cluster, not a starting one
            count = asyncio.run(_submit_steady(store.url, plan.rate, plan.latency_s))
            _wait_done(store, count, timeout_s=60)
        finally:
            cluster.stop()
        rows = store.query(
            "SELECT started_at_ms - ready_at_ms FROM steps WHERE status = 'SUCCEEDED'"
        )
    values = sorted(float(r[0]) for r in rows)
    return {
        "backend": backend,
        "nodes": nodes,
        "samples": len(values),
        "p50_ms": statistics.median(values),
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        "max_ms": values[-1],
    }


def _median_run(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return sorted(results, key=lambda r: r[key])[len(results) // 2]


def _drain_row(backend: str, nodes: int, plan: Plan, tmp: Path) -> dict[str, Any]:
    runs = []
    for i in range(plan.runs):
        started = time.monotonic()
        run = drain_run(backend, nodes, plan, tmp, f"d{backend[:2]}{nodes}s{plan.slots}r{i}")
        log(
            f"    run {i + 1}: {run['per_s']:,.0f}/s, submit {run['submit_per_s']:,.0f} steps/s, "
            f"{time.monotonic() - started:.0f} s"
        )
        runs.append(run)
    med = _median_run(runs, "per_s")
    row = {
        **med,
        "slots": plan.slots,
        "runs": [round(r["per_s"]) for r in runs],
        "median_per_s": statistics.median(r["per_s"] for r in runs),
        "median_whole_per_s": statistics.median(r["whole_per_s"] for r in runs),
    }
    log(
        f"  drain   {backend:<10} nodes={nodes} slots={plan.slots} "
        f"median={row['median_per_s']:,.0f}/s runs={row['runs']} "
        f"whole={row['median_whole_per_s']:,.0f}/s shares={[round(x, 3) for x in row['shares']]} "
        f"cpu={row['cpu_us_per_step']:.0f}us/step conflicts={row['conflicts']} "
        f"reruns={row['reruns']}"
    )
    for line in med["warnings"]:
        log(f"    node warning: {line}")
    return row


def relaymesh_suite(plan: Plan, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"drain": [], "latency": [], "skipped": {}}
    for backend in ("sqlite", "postgresql"):
        why = backend_available(backend)
        if why is not None:
            out["skipped"][backend] = why
            log(f"  {backend}: skipped: {why}")
            continue
        for nodes in plan.node_counts:
            out["drain"].append(_drain_row(backend, nodes, plan, tmp))
        if plan.default_slots_rows:
            # The same target configurations with the shipped worker.slots, for contrast.
            nodes = 2 if backend == "sqlite" else 4
            if nodes in plan.node_counts:
                # One smaller run: with 4 rows per transaction this is the slow case.
                default = Plan(
                    **{
                        **plan.__dict__,
                        "slots": DEFAULT_SLOTS,
                        "runs": 1,
                        "steps": min(plan.steps, 5000 if backend == "sqlite" else 2000),
                    }
                )
                out["drain"].append(_drain_row(backend, nodes, default, tmp))
        for nodes in plan.node_counts:
            runs = [
                latency_run(backend, nodes, plan, tmp, f"l{backend[:2]}{nodes}r{i}")
                for i in range(plan.latency_runs)
            ]
            row = {
                "backend": backend,
                "nodes": nodes,
                "samples": [r["samples"] for r in runs],
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "runs_p50": [r["p50_ms"] for r in runs],
                "runs_p99": [r["p99_ms"] for r in runs],
            }
            out["latency"].append(row)
            log(
                f"  latency {backend:<10} nodes={nodes} p50={row['p50_ms']:.1f} ms "
                f"p99={row['p99_ms']:.1f} ms runs_p50={row['runs_p50']} "
                f"runs_p99={row['runs_p99']}"
            )
    return out


# -- peers and ceiling -----------------------------------------------------------------


def _peer(module: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args[0]} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def peers_suite(plan: Plan, tmp: Path) -> dict[str, Any]:
    cores = str(os.cpu_count() or 1)
    out: dict[str, Any] = {}
    huey_dir = tmp / "huey"
    huey_dir.mkdir(exist_ok=True)
    runs = [
        _peer(
            "bench.peers.huey_run",
            [
                "throughput",
                "--dir",
                str(huey_dir),
                "--tasks",
                str(plan.huey_tasks),
                "--workers",
                cores,
            ],
            600,
        )
        for _ in range(plan.runs)
    ]
    out["huey_drain"] = {
        "runs": [r["per_s"] for r in runs],
        "median_per_s": statistics.median(r["per_s"] for r in runs),
        "tasks": plan.huey_tasks,
        "workers": int(cores),
    }
    log(
        f"  huey          drain median={out['huey_drain']['median_per_s']:,.0f}/s "
        f"runs={out['huey_drain']['runs']}"
    )
    runs = [
        _peer(
            "bench.peers.huey_run",
            [
                "latency",
                "--dir",
                str(huey_dir),
                "--rate",
                str(plan.rate),
                "--seconds",
                str(plan.latency_s),
                "--workers",
                cores,
            ],
            300,
        )
        for _ in range(plan.latency_runs)
    ]
    out["huey_latency"] = {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "runs_p50": [r["p50_ms"] for r in runs],
    }
    log(
        f"  huey          latency p50={out['huey_latency']['p50_ms']:.1f} ms "
        f"p99={out['huey_latency']['p99_ms']:.1f} ms"
    )
    pg_args = ["--admin-dsn", PG_ADMIN_DSN, "--procs", cores, "--concurrency", "4"]
    runs = [
        _peer(
            "bench.peers.procrastinate_run",
            ["throughput", "--jobs", str(plan.procrastinate_jobs), *pg_args],
            900,
        )
        for _ in range(plan.runs)
    ]
    out["procrastinate_drain"] = {
        "runs": [r["per_s"] for r in runs],
        "median_per_s": statistics.median(r["per_s"] for r in runs),
        "jobs": plan.procrastinate_jobs,
        "procs": int(cores),
        "shares": _median_run(runs, "per_s")["shares"],
    }
    log(
        f"  procrastinate drain median={out['procrastinate_drain']['median_per_s']:,.0f}/s "
        f"runs={out['procrastinate_drain']['runs']}"
    )
    runs = [
        _peer(
            "bench.peers.procrastinate_run",
            ["latency", "--rate", str(plan.rate), "--seconds", str(plan.latency_s), *pg_args],
            300,
        )
        for _ in range(plan.latency_runs)
    ]
    out["procrastinate_latency"] = {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "runs_p50": [r["p50_ms"] for r in runs],
    }
    log(
        f"  procrastinate latency p50={out['procrastinate_latency']['p50_ms']:.1f} ms "
        f"p99={out['procrastinate_latency']['p99_ms']:.1f} ms"
    )
    return out


# -- report ----------------------------------------------------------------------------


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _fsyncs_per_s(directory: Path, seconds: float = 1.0) -> float:
    """8 kB write + fdatasync per round for ``seconds``: what each durable commit costs
    on this disk (huey's default synchronous=FULL and PostgreSQL's commits wait on it)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"x" * 8192
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            count += 1
        return count / seconds
    finally:
        os.close(fd)
        path.unlink()


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(
    plan: Plan,
    quick: bool,
    rm: dict[str, Any] | None,
    peers: dict[str, Any] | None,
    raw: list[dict[str, Any]] | None,
    load_before: str,
    load_after: str,
    took_s: float,
) -> str:
    from bench.run_all import describe_machine

    lines = [
        "# Work throughput (`bench/work_throughput.py`)",
        "",
        f"- machine: {describe_machine()}",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{'--quick' if quick else 'full'}, {took_s:.0f} s; load average (1, 5, 15 min) "
        f"before {load_before}, after {load_after}",
        f"- drain backlog: {plan.steps} no-op `echo` steps in workflows of "
        f"{plan.steps_per_workflow} independent steps; {plan.runs} run(s) per row, median; "
        f"nodes: `relaymesh node run`, `worker.slots={plan.slots}`, other settings default "
        "(`guard.max_load` raised)",
        f"- latency: one-step workflows at {plan.rate:g}/s for {plan.latency_s:g} s on an "
        f"idle cluster, {plan.latency_runs} run(s), median of each run's p50 / p99; "
        "`started_at - ready_at` from the step rows (store clock)",
        "",
    ]
    drain_by: dict[tuple[str, int], dict[str, Any]] = {}
    lat_by: dict[tuple[str, int], dict[str, Any]] = {}
    raw_by = {(r["backend"], r["label"], r["clients"]): r for r in raw or []}
    if rm is not None:
        lines += [
            "## RelayMesh: draining a pre-submitted backlog",
            "",
            "| store | nodes | worker.slots | backlog | steps/s (all nodes running) | runs | "
            "whole drain steps/s | claims share per node (all running) | node CPU us/step | "
            "lease conflicts | re-runs |",
            "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
        ]
        for row in rm["drain"]:
            if row["slots"] == plan.slots:
                drain_by[(row["backend"], row["nodes"])] = row
            shares = " / ".join(f"{s:.0%}" for s in row["shares"])
            lines.append(
                f"| {row['backend']} | {row['nodes']} | {row['slots']} | {row['steps']:,} | "
                f"{row['median_per_s']:,.0f} | "
                f"{', '.join(f'{v:,}' for v in row['runs'])} | "
                f"{row['median_whole_per_s']:,.0f} | {shares} | "
                f"{row['cpu_us_per_step']:.0f} | {row['conflicts']} | {row['reruns']} |"
            )
        lines += [
            "",
            "## RelayMesh: submit-to-start latency, idle cluster",
            "",
            "| store | nodes | p50 ms | p99 ms | per-run p50 | samples |",
            "| --- | ---: | ---: | ---: | --- | --- |",
        ]
        for row in rm["latency"]:
            lat_by[(row["backend"], row["nodes"])] = row
            lines.append(
                f"| {row['backend']} | {row['nodes']} | {row['p50_ms']:.1f} | "
                f"{row['p99_ms']:.1f} | {', '.join(f'{v:.1f}' for v in row['runs_p50'])} | "
                f"{', '.join(str(s) for s in row['samples'])} |"
            )
        for backend, why in rm["skipped"].items():
            lines.append(f"\n{backend}: not measured: {why}")
        lines.append("")
    if peers is not None:
        hd, hl = peers["huey_drain"], peers["huey_latency"]
        pd, pl = peers["procrastinate_drain"], peers["procrastinate_latency"]
        lines += [
            "## Peers, same workload, same machine, same run",
            "",
            "| system | setup | drain tasks/s | runs | latency p50 ms | p99 ms |",
            "| --- | --- | ---: | --- | ---: | ---: |",
            f"| huey {_version('huey')} | SqliteHuey defaults, consumer `-k process "
            f"-w {hd['workers']}`, {hd['tasks']} tasks | {hd['median_per_s']:,.0f} | "
            f"{', '.join(f'{v:,.0f}' for v in hd['runs'])} | {hl['p50_ms']:.1f} | "
            f"{hl['p99_ms']:.1f} |",
            f"| procrastinate {_version('procrastinate')} | {pd['procs']} worker processes "
            f"x concurrency 4, {pd['jobs']} jobs | {pd['median_per_s']:,.0f} | "
            f"{', '.join(f'{v:,.0f}' for v in pd['runs'])} | {pl['p50_ms']:.1f} | "
            f"{pl['p99_ms']:.1f} |",
            "",
        ]
    if raw is not None:
        lines += [
            "## Ceiling: raw single-row claim transactions (`bench/raw_claims.py`)",
            "",
            "| store | clients | claims/s | runs | share per client |",
            "| --- | ---: | ---: | --- | --- |",
        ]
        for r in raw:
            shares = " / ".join(f"{s:.0%}" for s in r["shares"])
            lines.append(
                f"| {r['label']} | {r['clients']} | {r['median_per_s']:,.0f} | "
                f"{', '.join(f'{v:,}' for v in r['runs'])} | {shares} |"
            )
        lines.append("")
    lines += ["## Targets (issue 3)", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    sq2 = drain_by.get(("sqlite", 2))
    pg4 = drain_by.get(("postgresql", 4))
    if sq2:
        lines.append(
            f"| >= {TARGET_SQLITE_2_NODES:,.0f} steps/s, SQLite, 2 nodes | "
            f"{sq2['median_per_s']:,.0f} | {_met(sq2['median_per_s'] >= TARGET_SQLITE_2_NODES)} |"
        )
    if pg4:
        lines.append(
            f"| >= {TARGET_PG_4_NODES:,.0f} steps/s, PostgreSQL, 4 nodes | "
            f"{pg4['median_per_s']:,.0f} | {_met(pg4['median_per_s'] >= TARGET_PG_4_NODES)} |"
        )
    ceilings = {
        "sqlite": raw_by.get(("sqlite", "SQLite sync=NORMAL", 2)),
        "postgresql": raw_by.get(("pg", "PostgreSQL SKIP LOCKED, one-statement", 4)),
    }
    for backend, best_nodes in (("sqlite", 2), ("postgresql", 4)):
        row = drain_by.get((backend, best_nodes))
        ceiling = ceilings[backend]
        if row and ceiling:
            ratio = ceiling["median_per_s"] / max(1.0, row["median_per_s"])
            lines.append(
                f"| within 3x of the raw claim ceiling, {backend} ({best_nodes} nodes vs "
                f"{ceiling['clients']} raw clients) | {row['median_per_s']:,.0f} vs "
                f"{ceiling['median_per_s']:,.0f} (ceiling / RelayMesh = {ratio:.2f}) | "
                f"{_met(ratio <= 3.0)} |"
            )
    if peers is not None and drain_by:
        best = max(r["median_per_s"] for r in drain_by.values())
        hd = peers["huey_drain"]["median_per_s"]
        pd = peers["procrastinate_drain"]["median_per_s"]
        if sq2:
            lines.append(
                f"| ahead of huey (SQLite; ~{HUEY_ELSEWHERE:,.0f}/s elsewhere) | RelayMesh "
                f"SQLite 2 nodes {sq2['median_per_s']:,.0f} vs huey {hd:,.0f} | "
                f"{_met(sq2['median_per_s'] > hd)} |"
            )
        if pg4:
            lines.append(
                f"| ahead of procrastinate ({PROCRASTINATE_ELSEWHERE[0]:.0f}-"
                f"{PROCRASTINATE_ELSEWHERE[1]:.0f}/s elsewhere) | RelayMesh PostgreSQL 4 "
                f"nodes {pg4['median_per_s']:,.0f} vs procrastinate {pd:,.0f} | "
                f"{_met(pg4['median_per_s'] > pd)} |"
            )
        del best
    for backend, target in TARGET_P50_MS.items():
        rows = [r for (b, _), r in lat_by.items() if b == backend]
        if rows:
            worst = max(r["p50_ms"] for r in rows)
            measured = ", ".join(f"{r['nodes']} node(s) {r['p50_ms']:.1f} ms" for r in rows)
            lines.append(
                f"| submit-to-start p50 <= {target:g} ms at {plan.rate:g} steps/s, {backend} "
                f"| {measured} | "
                f"{_met(worst <= target)} |"
            )
    fair_rows = list(drain_by.values())
    if fair_rows:
        worst_share = min(
            (min(r["shares"]) * r["nodes"] for r in fair_rows if r["nodes"] > 1), default=1.0
        )
        lines.append(
            f"| writers fair | lowest node share / even share = {worst_share:.2f} (1.00 is "
            f"perfectly even) | {_met(worst_share >= 0.5)} (threshold: no node below half "
            "its even share) |"
        )
    lines.append("")
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", action="append", choices=("relaymesh", "peers", "raw"), default=None
    )
    parser.add_argument("--slots", type=int, default=None, help="worker.slots of the nodes")
    parser.add_argument("--nodes", type=int, action="append", default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.slots:
        overrides["slots"] = args.slots
    if args.nodes:
        overrides["node_counts"] = tuple(args.nodes)
    if args.runs:
        overrides["runs"] = args.runs
        overrides["latency_runs"] = args.runs
    if args.steps:
        overrides["steps"] = args.steps
    if overrides:
        plan = Plan(**{**plan.__dict__, **overrides})
    only = set(args.only or ("relaymesh", "peers", "raw"))
    started = time.monotonic()
    load_before = _load()
    fsync_before = _fsyncs_per_s(Path(tempfile.gettempdir()))
    log(f"  load average before: {load_before}; disk: {fsync_before:,.0f} fdatasync/s")
    rm = peers = raw = None
    with tempfile.TemporaryDirectory(prefix="relaymesh-bench-work-") as tmp_name:
        tmp = Path(tmp_name)
        if "raw" in only:
            from bench import raw_claims

            raw = raw_claims.run_all(args.quick)
        if "relaymesh" in only:
            rm = relaymesh_suite(plan, tmp)
        if "peers" in only:
            peers = peers_suite(plan, tmp)
    load_after = _load()
    fsync_after = _fsyncs_per_s(Path(tempfile.gettempdir()))
    log(f"  load average after: {load_after}; disk: {fsync_after:,.0f} fdatasync/s")
    load_before += f", disk {fsync_before:,.0f} fdatasync/s"
    load_after += f", disk {fsync_after:,.0f} fdatasync/s"
    text = render(
        plan, args.quick, rm, peers, raw, load_before, load_after, time.monotonic() - started
    )
    log("")
    log(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        (RESULTS.with_suffix(".json")).write_text(
            json.dumps(
                {"plan": plan.__dict__, "relaymesh": rm, "peers": peers, "raw": raw},
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
