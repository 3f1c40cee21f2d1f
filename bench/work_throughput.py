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
* **Ceilings** (``bench/raw_claims``): the store's raw single-row claims/s, and the
  batched ceiling (claim 64 + fenced commit 64 per transaction pair, stock driver)
  that the RelayMesh rows are compared with (ratio) in the same run.
* **Idle**: 3 idle nodes on one SQLite store: READY=1 (sd_notify) time, CPU and RSS
  per node; the read commands' wall time; a 10,000-step submit through the CLI.

Every figure is the median of several runs (``--quick``: fewer, smaller). Nodes run
with the shipped settings (``defaults``) and, on the target node counts, ``tuned``
(``CONFIGS``); ``guard.max_load`` is raised in both so other work on the machine
cannot pause the workers mid-run. Node CPU per step leaves out start-up (each node's
CPU is taken when its worker starts). Every process started here is killed and every
database created is dropped, whatever happens. The PNG plots of docs/benchmarks.md
are drawn at the end (``bench/plots.py``).
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

# Targets from issue 9 (the ratios are to the batched store ceiling of the same run).
TARGET_CEILING_RATIO = 0.45
TARGET_CPU_US_PER_STEP = 60.0
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
TARGET_IDLE_CPU_PCT = 0.5
TARGET_IDLE_RSS_MB = 50.0
TARGET_READ_S = 0.25
TARGET_READY_S = 1.0
TARGET_SUBMIT_10K_S = 1.0
TARGET_NODES = {"sqlite": 2, "postgresql": 4}

CONFIGS: dict[str, dict[str, str]] = {
    "defaults": {},
    # What a user chasing throughput would set: bigger claim batches (fewer, larger
    # transactions; coarser sharing between nodes) and more slots for task agents.
    "tuned": {"RELAYMESH_WORKER__CLAIM_BATCH": "1024", "RELAYMESH_WORKER__SLOTS": "64"},
}
GUARD_ENV = {"RELAYMESH_GUARD__MAX_LOAD": "1000"}
"""Raised in every run so other work on the shared machine cannot pause the workers."""


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
    config: str = "defaults"
    idle_nodes: int = 3
    idle_s: float = 20.0
    read_runs: int = 5

    @property
    def env(self) -> dict[str, str]:
        return {**GUARD_ENV, **CONFIGS[self.config]}


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
    idle_s=8.0,
    read_runs=3,
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
    env_extra: dict[str, str]
    tag: str
    notify: bool = False
    """Give each node its own ``NOTIFY_SOCKET``: ``ready_s`` is when its READY=1 came."""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)
    _started: list[float] = field(default_factory=list)
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
            **self.env_extra,
            RELAYMESH_NODE__STATE_DIR=str(state),
        )
        env.pop("RELAYMESH_CONFIG", None)
        for i, port in enumerate(ports):
            name = f"{self.tag}-n{i + 1}"
            path = self.tmp / f"{name}.log"
            node_env = env
            if self.notify:
                sock_path = str(self.tmp / f"notify-{name}.sock")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(sock_path)
                self._sockets.append(sock)
                node_env = dict(env, NOTIFY_SOCKET=sock_path)
            self._started.append(time.monotonic())
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
                    env=node_env,
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

    def wait_notified(self, timeout_s: float = 60.0) -> list[float]:
        """Seconds from each node's start to its READY=1 (``notify`` clusters)."""
        deadline = time.monotonic() + timeout_s
        self.ready_s = []
        for sock, started in zip(self._sockets, self._started, strict=True):
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    message = sock.recv(4096)
                except TimeoutError:
                    raise RuntimeError(f"no READY=1 within {timeout_s} s") from None
                if b"READY=1" in message.split(b"\n"):
                    self.ready_s.append(time.monotonic() - started)
                    break
        return self.ready_s

    def cpu_each_s(self) -> list[float]:
        """User + system CPU seconds each node process has used so far."""
        out = []
        tick = os.sysconf("SC_CLK_TCK")
        for proc in self.procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                out.append(0.0)
                continue
            out.append((int(fields[11]) + int(fields[12])) / tick)
        return out

    def cpu_s(self) -> float:
        """User + system CPU seconds the node processes have used so far."""
        return sum(self.cpu_each_s())

    def rss_mb(self) -> list[float]:
        out = []
        for proc in self.procs:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
        return out

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
        for sock in self._sockets:
            sock.close()

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
        cluster = Cluster(store.url, nodes, tmp, plan.env, tag)
        try:
            cluster.start()
            # Start-up (imports, migration check, joining) is not per-step work: take
            # each node's CPU when its worker starts (polled every 5 ms).
            cpu_ready = _cpu_at_worker_start(cluster)
            ready_wall_ms = int(time.time() * 1000)
            _wait_done(store, plan.steps, timeout_s=max(120.0, plan.steps / 100))
            cpu_s = cluster.cpu_s() - sum(cpu_ready)
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
    after_ready = sum(1 for r in rows if r[1] >= ready_wall_ms) or len(rows)
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
        "cpu_us_per_step": cpu_s * 1e6 / max(1, after_ready),
        "submit_per_s": plan.steps / submit_s,
        "conflicts": conflicts,
        "reruns": reruns,
        "warnings": warnings[:5],
    }


def _cpu_at_worker_start(cluster: Cluster, timeout_s: float = 60.0) -> list[float]:
    deadline = time.monotonic() + timeout_s
    cpu: list[float | None] = [None] * cluster.count
    while any(c is None for c in cpu):
        for i in range(cluster.count):
            if cpu[i] is None and b'"worker_started"' in cluster.logs[i].read_bytes():
                cpu[i] = cluster.cpu_each_s()[i]
            elif cpu[i] is None and cluster.procs[i].poll() is not None:
                raise RuntimeError(f"node {cluster.names[i]} exited early")
        if time.monotonic() > deadline:
            raise RuntimeError("workers not started")
        time.sleep(0.005)
    return [float(c or 0.0) for c in cpu]


def latency_run(backend: str, nodes: int, plan: Plan, tmp: Path, tag: str) -> dict[str, Any]:
    with fresh_store(backend, tmp) as store:
        asyncio.run(_migrate(store.url))
        cluster = Cluster(store.url, nodes, tmp, plan.env, tag)
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
        tag = f"d{backend[:2]}{nodes}{plan.config[0]}r{i}"
        run = drain_run(backend, nodes, plan, tmp, tag)
        log(
            f"    run {i + 1}: {run['per_s']:,.0f}/s, cpu {run['cpu_us_per_step']:.0f} us/step, "
            f"submit {run['submit_per_s']:,.0f} steps/s, {time.monotonic() - started:.0f} s"
        )
        runs.append(run)
    med = _median_run(runs, "per_s")
    row = {
        **med,
        "config": plan.config,
        "runs": [round(r["per_s"]) for r in runs],
        "median_per_s": statistics.median(r["per_s"] for r in runs),
        "median_whole_per_s": statistics.median(r["whole_per_s"] for r in runs),
        "median_cpu_us_per_step": statistics.median(r["cpu_us_per_step"] for r in runs),
        "min_share_ratio": min(min(r["shares"]) * nodes for r in runs),
        "conflicts": sum(r["conflicts"] for r in runs),
        "reruns": sum(r["reruns"] for r in runs),
    }
    log(
        f"  drain   {backend:<10} nodes={nodes} {plan.config} "
        f"median={row['median_per_s']:,.0f}/s runs={row['runs']} "
        f"whole={row['median_whole_per_s']:,.0f}/s shares={[round(x, 3) for x in row['shares']]} "
        f"cpu={row['median_cpu_us_per_step']:.0f}us/step conflicts={row['conflicts']} "
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
        nodes = TARGET_NODES[backend]
        if nodes in plan.node_counts:
            tuned = Plan(**{**plan.__dict__, "config": "tuned"})
            out["drain"].append(_drain_row(backend, nodes, tuned, tmp))
        nodes = TARGET_NODES[backend]
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


# -- idle cost, CLI commands, big submits ---------------------------------------------------


def _timed_cli(args: list[str], url: str, cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "relaymesh"), "--store", url, *args],
        cwd=str(cwd),
        capture_output=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "RELAYMESH_CONFIG"},
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"relaymesh {' '.join(args)} failed: {proc.stderr[-500:]!r}")
    return took


def idle_suite(plan: Plan, tmp: Path) -> dict[str, Any]:
    """``idle_nodes`` idle nodes on one SQLite store: READY=1 time, then CPU and RSS per
    node over ``idle_s`` (after a few seconds of settling); the read commands against
    that store while the nodes run; a 10,000-step submit through the CLI per store."""
    out: dict[str, Any] = {}
    with fresh_store("sqlite", tmp) as store:
        asyncio.run(_migrate(store.url))
        cluster = Cluster(store.url, plan.idle_nodes, tmp, plan.env, "idle", notify=True)
        try:
            cluster.start()
            ready_s = cluster.wait_notified()
            cluster.wait_ready()
            wf_path = tmp / "one.json"
            wf_path.write_text(
                json.dumps({"name": "one", "steps": [{"name": "a", "agent": "echo"}]})
            )
            wf = subprocess.run(
                [str(BIN / "relaymesh"), "--store", store.url, "submit", str(wf_path)],
                capture_output=True,
                text=True,
                check=True,
                cwd=str(tmp),
            ).stdout.strip()
            _wait_done(store, 1, timeout_s=30)
            time.sleep(3.0)  # settle: the first gossip rounds and view writes are start-up
            cpu0 = cluster.cpu_each_s()
            t0 = time.monotonic()
            time.sleep(plan.idle_s)
            cpu1 = cluster.cpu_each_s()
            window = time.monotonic() - t0
            rss = cluster.rss_mb()
            reads: dict[str, list[float]] = {}
            for name, args in (
                ("tasks --json", ["tasks", "--json"]),
                ("status WF --json", ["status", wf, "--json"]),
                ("mesh-summary --json", ["mesh-summary", "--json"]),
            ):
                reads[name] = [_timed_cli(args, store.url, tmp) for _ in range(plan.read_runs)]
        finally:
            cluster.stop()
    out["ready_s"] = ready_s
    out["cpu_pct"] = [(b - a) * 100 / window for a, b in zip(cpu0, cpu1, strict=True)]
    out["rss_mb"] = rss
    out["reads_s"] = {k: statistics.median(v) for k, v in reads.items()}
    out["reads_runs_s"] = reads
    log(
        f"  idle    {plan.idle_nodes} nodes: READY=1 after {[round(x, 2) for x in ready_s]} s; "
        f"CPU {[round(x, 2) for x in out['cpu_pct']]} % of a core; RSS "
        f"{[round(x) for x in rss]} MB"
    )
    for name, took in out["reads_s"].items():
        log(f"  read    {name}: median {took:.3f} s")
    big = tmp / "big.json"
    big.write_text(
        json.dumps(
            {"name": "big", "steps": [{"name": f"s{i}", "agent": "echo"} for i in range(10_000)]}
        )
    )
    out["submit_10k_s"] = {}
    for backend in ("sqlite", "postgresql"):
        if backend_available(backend) is not None:
            continue
        took = []
        for _ in range(plan.read_runs):
            with fresh_store(backend, tmp) as store:
                asyncio.run(_migrate(store.url))
                took.append(_timed_cli(["submit", str(big)], store.url, tmp))
        out["submit_10k_s"][backend] = statistics.median(took)
        log(f"  submit  10,000 steps, CLI, {backend}: median {statistics.median(took):.3f} s")
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


def ceilings(raw: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The batched store ceiling per backend: the best batched raw case of the run."""
    out: dict[str, dict[str, Any]] = {}
    for r in raw or []:
        if not r.get("batch"):
            continue
        backend = "sqlite" if r["backend"] == "sqlite" else "postgresql"
        if backend not in out or r["median_per_s"] > out[backend]["median_per_s"]:
            out[backend] = r
    return out


def render(
    plan: Plan,
    quick: bool,
    rm: dict[str, Any] | None,
    peers: dict[str, Any] | None,
    raw: list[dict[str, Any]] | None,
    idle: dict[str, Any] | None,
    load: dict[str, str],
    took_s: float,
) -> str:
    from bench.run_all import describe_machine

    lines = [
        "# Work throughput (`bench/work_throughput.py`)",
        "",
        f"- machine: {describe_machine()}",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{'--quick' if quick else 'full'}, {took_s:.0f} s",
        "- load average (1, 5, 15 min) during the run: "
        + "; ".join(f"{k} {v}" for k, v in load.items()),
        f"- drain backlog: {plan.steps:,} no-op `echo` steps in workflows of "
        f"{plan.steps_per_workflow:,} independent steps; {plan.runs} run(s) per row, median; "
        "nodes: `relaymesh node run` with the shipped settings (`defaults`) or "
        f"`tuned` ({', '.join(f'{k}={v}' for k, v in CONFIGS['tuned'].items())}); "
        "`guard.max_load` raised in both. Node CPU per step excludes start-up (taken when "
        "each worker starts)",
        f"- latency: one-step workflows at {plan.rate:g}/s for {plan.latency_s:g} s on an "
        f"idle cluster, {plan.latency_runs} run(s), median of each run's p50 / p99; "
        "`started_at - ready_at` from the step rows (store clock)",
        "",
    ]
    ceil = ceilings(raw)
    drain_by: dict[tuple[str, int, str], dict[str, Any]] = {}
    lat_by: dict[str, dict[str, Any]] = {}
    if rm is not None:
        lines += [
            "## RelayMesh: draining a pre-submitted backlog",
            "",
            "| store | nodes | settings | steps/s (all nodes running) | runs | "
            "/ batched ceiling | whole drain steps/s | share per node | node CPU us/step | "
            "lease conflicts | re-runs |",
            "| --- | ---: | --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for row in rm["drain"]:
            drain_by[(row["backend"], row["nodes"], row["config"])] = row
            shares = " / ".join(f"{s:.0%}" for s in row["shares"])
            c = ceil.get(row["backend"])
            ratio = f"{row['median_per_s'] / c['median_per_s']:.2f}x" if c else "-"
            lines.append(
                f"| {row['backend']} | {row['nodes']} | {row['config']} | "
                f"{row['median_per_s']:,.0f} | {', '.join(f'{v:,}' for v in row['runs'])} | "
                f"{ratio} | {row['median_whole_per_s']:,.0f} | {shares} | "
                f"{row['median_cpu_us_per_step']:.0f} | {row['conflicts']} | {row['reruns']} |"
            )
        lines += [
            "",
            "## RelayMesh: submit-to-start latency, idle cluster, default settings",
            "",
            "| store | nodes | p50 ms | p99 ms | per-run p50 | per-run p99 | samples |",
            "| --- | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for row in rm["latency"]:
            lat_by[row["backend"]] = row
            lines.append(
                f"| {row['backend']} | {row['nodes']} | {row['p50_ms']:.1f} | "
                f"{row['p99_ms']:.1f} | {', '.join(f'{v:.1f}' for v in row['runs_p50'])} | "
                f"{', '.join(f'{v:.1f}' for v in row['runs_p99'])} | "
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
            "## Store ceilings, no RelayMesh code (`bench/raw_claims.py`)",
            "",
            "| case | clients | steps (or claims)/s | runs | share per client |",
            "| --- | ---: | ---: | --- | --- |",
        ]
        for r in raw:
            shares = " / ".join(f"{s:.0%}" for s in r["shares"])
            lines.append(
                f"| {r['label']} | {r['clients']} | {r['median_per_s']:,.0f} | "
                f"{', '.join(f'{v:,}' for v in r['runs'])} | {shares} |"
            )
        lines.append("")
    if idle is not None:
        lines += [
            f"## Idle nodes ({plan.idle_nodes} on one SQLite store, default settings), "
            "read commands, big submits",
            "",
            "| node | READY=1 after s | idle CPU % of a core | RSS MB |",
            "| --- | ---: | ---: | ---: |",
        ]
        for n, (r, c, m) in enumerate(
            zip(idle["ready_s"], idle["cpu_pct"], idle["rss_mb"], strict=True), start=1
        ):
            lines.append(f"| n{n} | {r:.2f} | {c:.2f} | {m:.0f} |")
        lines += ["", "| command (CLI process, wall clock, median) | s |", "| --- | ---: |"]
        for name, took in idle["reads_s"].items():
            lines.append(f"| `relaymesh {name}` | {took:.3f} |")
        for backend, took in idle["submit_10k_s"].items():
            lines.append(f"| `relaymesh submit` 10,000-step workflow, {backend} | {took:.3f} |")
        lines.append("")
    lines += ["## Targets (issue 9)", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    for backend, nodes in TARGET_NODES.items():
        row = drain_by.get((backend, nodes, "defaults"))
        c = ceil.get(backend)
        if row and c:
            ratio = row["median_per_s"] / c["median_per_s"]
            lines.append(
                f"| defaults >= {TARGET_CEILING_RATIO}x the batched ceiling, {backend}, "
                f"{nodes} nodes | {row['median_per_s']:,.0f} vs {c['median_per_s']:,.0f} = "
                f"{ratio:.2f}x | {_met(ratio >= TARGET_CEILING_RATIO)} |"
            )
        if row:
            cpu = row["median_cpu_us_per_step"]
            lines.append(
                f"| node CPU <= {TARGET_CPU_US_PER_STEP:.0f} us per step, {backend}, {nodes} "
                f"nodes | {cpu:.0f} us | {_met(cpu <= TARGET_CPU_US_PER_STEP)} |"
            )
            fair = row["min_share_ratio"]
            lines.append(
                f"| writers fair, {backend} (lowest share / even share, worst run) | "
                f"{fair:.2f} | {_met(fair >= 0.5)} |"
            )
            clean = row["conflicts"] == 0 and row["reruns"] == 0
            lines.append(
                f"| no re-runs, no lease conflicts, {backend} | {row['reruns']} re-runs, "
                f"{row['conflicts']} conflicts | {_met(clean)} |"
            )
        if peers is not None and row:
            peer, value = (
                ("huey", peers["huey_drain"]["median_per_s"])
                if backend == "sqlite"
                else ("procrastinate", peers["procrastinate_drain"]["median_per_s"])
            )
            lines.append(
                f"| ratio to {peer}, {backend} | {row['median_per_s'] / max(1.0, value):.1f}x "
                f"| (issue: 7x huey, 40x procrastinate) "
                f"{_met(row['median_per_s'] / max(1.0, value) >= (7 if peer == 'huey' else 40))} |"
            )
        lat = lat_by.get(backend)
        if lat:
            ok = lat["p50_ms"] <= TARGET_P50_MS and lat["p99_ms"] <= TARGET_P99_MS
            lines.append(
                f"| submit-to-start p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms "
                f"at {plan.rate:g} steps/s, {backend} | p50 {lat['p50_ms']:.1f} ms, p99 "
                f"{lat['p99_ms']:.1f} ms | {_met(ok)} |"
            )
    if idle is not None:
        cpu, rss = max(idle["cpu_pct"]), max(idle["rss_mb"])
        lines += [
            f"| idle node <= {TARGET_IDLE_CPU_PCT} % of a core | worst {cpu:.2f} % | "
            f"{_met(cpu <= TARGET_IDLE_CPU_PCT)} |",
            f"| idle node <= {TARGET_IDLE_RSS_MB:.0f} MB RSS | worst {rss:.0f} MB | "
            f"{_met(rss <= TARGET_IDLE_RSS_MB)} |",
        ]
        worst_read = max(idle["reads_s"].values())
        lines.append(
            f"| read commands <= {TARGET_READ_S} s | worst {worst_read:.3f} s | "
            f"{_met(worst_read <= TARGET_READ_S)} |"
        )
        ready = max(idle["ready_s"])
        lines.append(
            f"| `node run` READY=1 <= {TARGET_READY_S:g} s | worst {ready:.2f} s | "
            f"{_met(ready <= TARGET_READY_S)} |"
        )
        for backend, took in idle["submit_10k_s"].items():
            lines.append(
                f"| 10,000-step submit <= {TARGET_SUBMIT_10K_S:g} s, {backend} | {took:.3f} s | "
                f"{_met(took <= TARGET_SUBMIT_10K_S)} |"
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
        "--only",
        action="append",
        choices=("relaymesh", "peers", "raw", "idle"),
        default=None,
    )
    parser.add_argument("--nodes", type=int, action="append", default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.nodes:
        overrides["node_counts"] = tuple(args.nodes)
    if args.runs:
        overrides["runs"] = args.runs
        overrides["latency_runs"] = args.runs
    if args.steps:
        overrides["steps"] = args.steps
    if overrides:
        plan = Plan(**{**plan.__dict__, **overrides})
    only = set(args.only or ("raw", "relaymesh", "peers", "idle"))
    started = time.monotonic()
    load: dict[str, str] = {"before": _load()}
    fsync_before = _fsyncs_per_s(Path(tempfile.gettempdir()))
    log(f"  load average before: {load['before']}; disk: {fsync_before:,.0f} fdatasync/s")
    rm = peers = raw = idle = None
    with tempfile.TemporaryDirectory(prefix="relaymesh-bench-work-") as tmp_name:
        tmp = Path(tmp_name)
        if "raw" in only:
            from bench import raw_claims

            raw = raw_claims.run_all(args.quick)
            load["after the ceilings"] = _load()
        if "relaymesh" in only:
            rm = relaymesh_suite(plan, tmp)
            load["after RelayMesh"] = _load()
        if "peers" in only:
            peers = peers_suite(plan, tmp)
            load["after the peers"] = _load()
        if "idle" in only:
            idle = idle_suite(plan, tmp)
            load["after the idle nodes"] = _load()
    fsync_after = _fsyncs_per_s(Path(tempfile.gettempdir()))
    log(f"  load average after: {load[list(load)[-1]]}; disk: {fsync_after:,.0f} fdatasync/s")
    load["disk"] = f"{fsync_before:,.0f} fdatasync/s before, {fsync_after:,.0f} after"
    text = render(plan, args.quick, rm, peers, raw, idle, load, time.monotonic() - started)
    log("")
    log(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        data = {
            "plan": {**plan.__dict__, "env": plan.env},
            "relaymesh": rm,
            "peers": peers,
            "raw": raw,
            "ceilings": ceilings(raw),
            "idle": idle,
            "load": load,
        }
        RESULTS.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
        try:
            from bench import plots

            for path in plots.write_all(data, REPO / "docs"):
                log(f"  plot: {path}")
        except ImportError as exc:
            log(f"  plots skipped: {exc} (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
