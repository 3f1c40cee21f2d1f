"""Work under chaos: 3 ``relaymesh node run`` processes run workflows of short steps
while nodes are SIGKILLed and restarted under their old names, others are frozen
(SIGSTOP) past their lease and resumed, and, on PostgreSQL, the nodes' database
connections are terminated under them.

Promises checked at the end: every workflow SUCCEEDED; every step SUCCEEDED exactly
once (one result, committed by the final lease: the epoch in the side-effect journal
matches); no step left RUNNING/READY/DEAD_LETTER; a killed node's steps were reclaimed
through the DEAD verdict (ownership event ``dead_owner``), and a frozen node's stale
writes after SIGCONT were rejected (``conflicts``). The fault schedule is random but
seeded (``RELAYMESH_CHAOS_SEED``) and logged.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.chaos.conftest import REPORT, chaos_seed
from tests.conftest import require_pg, wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import Cluster, record_step

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(600)]

NODES = ("n1", "n2", "n3")
LEASE_MS = 6000
SETTINGS: dict[str, dict[str, Any]] = {
    "worker": {"slots": 3, "lease_ms": LEASE_MS, "heartbeat_ms": 1000, "poll_ms": 100},
}
CYCLES = 3  # each: one SIGKILL + restart, one SIGSTOP past the lease + SIGCONT
STEPS_PER_WORKFLOW = 120
WIDTH = 3  # parallel chains per workflow
MAX_WORKFLOWS = 10
TOP_UP_BELOW = 150  # submit another workflow when fewer unfinished steps remain
MAX_ATTEMPTS = 20  # every reclaim costs an attempt; chaos must not exhaust them


def make_workflow(rng: random.Random, index: int, journal: Path) -> dict[str, Any]:
    """``WIDTH`` interleaved chains of echo / sleep / record steps, joined every 15."""
    steps: list[dict[str, Any]] = []
    for i in range(STEPS_PER_WORKFLOW):
        name = f"s{i:03d}"
        seconds = round(rng.uniform(0.05, 0.2), 3)
        kind = rng.choice(("record", "record", "echo", "sleep"))
        if kind == "record":
            step = record_step(name, journal, seconds)
        elif kind == "echo":
            step = {"name": name, "agent": "echo", "input": {"i": i, "wf": index}}
        else:
            step = {"name": name, "agent": "sleep", "input": {"seconds": seconds}}
        deps = [f"s{i - WIDTH:03d}"] if i >= WIDTH else []
        if i % 15 == 14:
            deps = sorted({*deps, *(f"s{j:03d}" for j in range(i - WIDTH, i))})
        if deps:
            step["depends_on"] = deps
        step["retry"] = {"max_attempts": MAX_ATTEMPTS, "base_backoff_ms": 50}
        steps.append(step)
    return {"name": f"chaos-{index}", "steps": steps}


@dataclass
class Chaos:
    """The fault schedule against one cluster, and what it did (for the assertions)."""

    c: Cluster
    rng: random.Random
    pg_url: str | None = None
    t0: float = field(default_factory=time.monotonic)
    frozen: set[str] = field(default_factory=set)
    workflows: list[str] = field(default_factory=list)
    kills: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    freezes: list[tuple[str, dict[str, int], int]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.2f}s] {message}"
        self.log_lines.append(line)
        print(line, flush=True)

    def pause(self, low_s: float, high_s: float) -> None:
        """A bounded random gap in the fault schedule (not a wait for an event)."""
        time.sleep(self.rng.uniform(low_s, high_s))

    def up(self) -> list[str]:
        return [n for n in NODES if self.c.nodes[n].running() and n not in self.frozen]

    def api(self, path: str) -> Any:
        """GET ``path`` from a running node that is not frozen (a frozen one never answers)."""
        for name in self.up():
            try:
                return self.c.http_json(name, path)
            except (OSError, ValueError, http.client.HTTPException):
                continue
        raise AssertionError(f"no node answers {path}")

    def tasks(self, status: str | None = None) -> list[dict[str, Any]]:
        query = f"&status={status}" if status else ""
        doc: list[dict[str, Any]] = self.api(f"/api/tasks?limit=10000{query}")
        return doc

    def running_by_owner(self) -> dict[str, dict[str, int]]:
        held: dict[str, dict[str, int]] = {}
        for s in self.tasks("RUNNING"):
            held.setdefault(str(s["owner_node"]), {})[s["id"]] = int(s["lease_epoch"])
        return held

    def submit(self) -> None:
        index = len(self.workflows)
        self.workflows.append(self.c.submit(make_workflow(self.rng, index, self.c.journal)))
        self.log(f"submitted workflow {index}: {self.workflows[-1]}")

    def top_up(self) -> None:
        unfinished = [s for s in self.tasks() if s["status"] != "SUCCEEDED"]
        if len(unfinished) < TOP_UP_BELOW and len(self.workflows) < MAX_WORKFLOWS:
            self.submit()

    def pick_busy(self, exclude: set[str]) -> str:
        """A random node that holds RUNNING steps now (waits for one with a deadline)."""
        chosen: list[str] = []

        def busy() -> bool:
            held = self.running_by_owner()
            names = sorted(n for n in self.up() if n not in exclude and held.get(n))
            if names:
                chosen.append(self.rng.choice(names))
            return bool(names)

        wait_until(busy, 30, interval_s=0.1, what="a node holding RUNNING steps")
        return chosen[-1]

    def wait_reclaimed(self, owner: str, held: dict[str, int], timeout_s: float) -> None:
        def reclaimed() -> bool:
            by_id = {s["id"]: s for s in self.tasks()}
            return all(
                not (
                    by_id[sid]["status"] == "RUNNING"
                    and by_id[sid]["owner_node"] == owner
                    and int(by_id[sid]["lease_epoch"]) == epoch
                )
                for sid, epoch in held.items()
            )

        wait_until(reclaimed, timeout_s, interval_s=0.2, what=f"{owner}'s steps reclaimed")

    def kill_and_restart(self) -> None:
        victim = self.pick_busy(exclude=set())
        self.c.signal(victim, signal.SIGKILL)
        self.c.wait_exit(victim, 10)
        orphans = self.running_by_owner().get(victim, {})
        self.log(f"SIGKILL {victim}: {len(orphans)} RUNNING steps orphaned")
        self.kills.append((victim, orphans))
        # Well under the lease: only the DEAD verdict can recover them this fast.
        self.wait_reclaimed(victim, orphans, LEASE_MS / 1000 * 3)
        self.log(f"{victim}'s steps reclaimed")
        self.pause(0.2, 1.5)
        start_nodes(self.c, victim)
        self.log(f"restarted {victim} under its old name")

    def freeze_and_resume(self) -> None:
        node = self.pick_busy(exclude=set())
        if self.pg_url is None:
            self.c.freeze(node)
        else:
            pg_freeze(self.c, node, self.pg_url, self.rng)
        self.frozen.add(node)
        frozen_at = time.monotonic()
        held = self.running_by_owner().get(node, {})
        since_ms = time.time_ns() // 1_000_000
        hold_s = LEASE_MS / 1000 + self.rng.uniform(0.5, 2.0)
        self.log(f"SIGSTOP {node} for {hold_s:.2f}s holding {len(held)} RUNNING steps")
        self.freezes.append((node, held, since_ms))
        try:
            self.wait_reclaimed(node, held, hold_s + 30)
            remaining = hold_s - (time.monotonic() - frozen_at)
            if remaining > 0:
                time.sleep(remaining)  # the injected fault: frozen past its lease
        finally:
            self.c.signal(node, signal.SIGCONT)
            self.frozen.discard(node)
        self.log(f"SIGCONT {node}")
        wait_until(self.c.nodes[node].healthy, 30, what=f"{node} answering again")


def start_nodes(c: Cluster, *names: str) -> None:
    """``Cluster.start`` with a longer deadline: Python processes starting on a loaded
    2-core box can take longer than the harness's own 20 s."""
    c.start(*names, wait=False)
    for name in names:
        node = c.nodes[name]
        wait_until(lambda n=node: n.healthy() or not n.running(), 90, what=f"{name} healthy")  # type: ignore[misc]
        assert node.running(), c.log_tail(name)


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of ``pid``'s sockets: its PostgreSQL connections' client ports."""
    inodes: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def pg_query(sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(require_pg())
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def backends(store_url: str) -> list[dict[str, Any]]:
    """The test database's server sessions: state, client port, open transaction, query."""
    return pg_query(
        "SELECT pid, state, client_port, wait_event_type, wait_event, query,"
        " (extract(epoch FROM now() - xact_start) * 1000)::bigint AS xact_ms"
        " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        urlsplit(store_url).path.lstrip("/"),
    )


def pg_freeze(c: Cluster, name: str, store_url: str, rng: random.Random) -> None:
    """SIGSTOP ``name`` at a moment none of its sessions is inside a transaction.

    The PostgreSQL twin of ``Cluster.freeze``: a process stopped in the middle of a
    transaction keeps its row locks until it resumes (see .notes/chaos.md). Stop, look
    at the sessions whose client port is one of the stopped process's sockets, and if
    one is not idle, resume and try again a moment later."""
    pid = c.nodes[name].pid
    for _ in range(400):
        os.kill(pid, signal.SIGSTOP)
        ports = client_ports(pid)
        if all(b["state"] == "idle" for b in backends(store_url) if b["client_port"] in ports):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(rng.uniform(0.005, 0.05))
    raise AssertionError(f"{name} never stopped outside a database transaction")


def store_errors(c: Cluster, name: str) -> float:
    """``relaymesh_store_errors_total`` summed over operations, from one node's /metrics."""
    url_path = "/metrics"
    conn = http.client.HTTPConnection("127.0.0.1", c.nodes[name].http_port, timeout=3)
    try:
        conn.request("GET", url_path)
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("relaymesh_store_errors_total")
    )


def terminate_backends(store_url: str) -> int:
    """Kill every server connection to the test database, as a failover would."""
    database = urlsplit(store_url).path.lstrip("/")

    async def run() -> int:
        conn = await asyncpg.connect(require_pg())
        try:
            killed = await conn.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
                database,
            )
        finally:
            await conn.close()
        return int(killed)

    return asyncio.run(run())


def drop_connections(c: Cluster, chaos: Chaos, pg_url: str) -> float:
    """Terminate the nodes' database connections; wait until the nodes count the errors."""
    before = {n: store_errors(c, n) for n in chaos.up()}
    killed = terminate_backends(pg_url)
    chaos.log(f"pg_terminate_backend: {killed} connections")
    gained: dict[str, float] = {}

    def counted() -> bool:
        for name, value in before.items():
            try:
                gained[name] = store_errors(c, name) - value
            except (OSError, http.client.HTTPException):
                continue
        return sum(gained.values()) > 0

    wait_until(counted, 30, interval_s=0.2, what="nodes to count store errors")
    chaos.log(f"store errors counted: {gained}")
    return sum(gained.values())


def run_scenario(c: Cluster, chaos: Chaos, pg_url: str | None) -> dict[str, Any]:
    c.add_nodes(*NODES)
    start_nodes(c, *NODES)
    for name in NODES:
        c.wait_members(name, len(NODES), timeout_s=30)
    chaos.submit()
    chaos.submit()
    errors_seen = 0.0
    terminations = 0
    for cycle in range(CYCLES):
        chaos.log(f"-- cycle {cycle}")
        chaos.top_up()
        chaos.kill_and_restart()
        chaos.pause(0.5, 2.0)
        if pg_url is not None:
            errors_seen += drop_connections(c, chaos, pg_url)
            terminations += 1
        chaos.top_up()
        chaos.freeze_and_resume()
        chaos.pause(0.5, 2.0)
    return {"errors_seen": errors_seen, "terminations": terminations}


def check_promises(c: Cluster, chaos: Chaos) -> dict[str, Any]:
    docs = [
        c.wait_workflow(wid, {"SUCCEEDED", "FAILED", "CANCELLED"}, 150) for wid in chaos.workflows
    ]
    chaos.log("all workflows finished")
    for doc in docs:
        assert doc["workflow"]["status"] == "SUCCEEDED", doc["workflow"]
    steps = [s for doc in docs for s in doc["steps"]]
    assert len(steps) == len(chaos.workflows) * STEPS_PER_WORKFLOW
    # The operator's view agrees: every step listed, every one SUCCEEDED, no dead letter.
    listed = Counter(s["status"] for s in c.cli_json("tasks", "--limit", "10000"))
    assert listed == {"SUCCEEDED": len(steps)}, listed
    assert c.cli_json("dead", "--limit", "100") == []

    done = {
        (j["step_id"], j["epoch"], j["node"]) for j in c.journal_lines() if j["phase"] == "done"
    }
    for s in steps:
        assert s["status"] == "SUCCEEDED", s
        assert s["result"] is not None, s
        if s["agent"] == "record":
            # The one committed result is the run of the final lease, and its side
            # effect carries that lease's epoch.
            assert s["result"]["epoch"] == s["lease_epoch"], s
            assert s["result"]["node"] == s["owner_node"], s
            assert (s["id"], s["lease_epoch"], s["owner_node"]) in done, s
        elif s["agent"] == "echo":
            assert s["result"] == s["input"], s

    events = c.cli_json("ownership-events", "--limit", "10000")
    by_step: dict[str, Counter[str]] = {}
    for e in events:
        by_step.setdefault(e["step_id"], Counter())[e["event"]] += 1
    for s in steps:
        ev = by_step.get(s["id"], Counter())
        reclaims = ev["dead_owner"] + ev["lease_expired"] + ev["released"]
        # One claim per lease; every lease but the last ended in a reclaim or release.
        assert ev["claimed"] == 1 + reclaims, (s["name"], s["id"], dict(ev))

    dead_owner = {(e["step_id"], e["node"]) for e in events if e["event"] == "dead_owner"}
    orphaned = 0
    for victim, orphans in chaos.kills:
        for sid in orphans:
            orphaned += 1
            assert (sid, victim) in dead_owner, (victim, sid, by_step.get(sid))
    assert orphaned > 0, "no kill ever orphaned a RUNNING step: the scenario proved nothing"

    conflicts = c.cli_json("conflicts", "--limit", "10000")
    final = {s["id"]: s for s in steps}
    for x in conflicts:
        expected, actual = int(x["expected_epoch"]), x["actual_epoch"]
        # Every rejected write was a zombie's: an older lease than the step's. A retried
        # commit of one's own lease (it landed before its connection dropped) is done,
        # never a conflict with its own epoch.
        assert actual is None or int(actual) > expected, x
        if x["event"] == "commit_success":
            assert final[x["step_id"]]["lease_epoch"] != expected, x
    frozen_held = {(node, sid) for node, held, _ in chaos.freezes for sid in held}

    def zombies() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = chaos.api("/api/conflicts?limit=10000")
        return [x for x in rows if (x["node"], x["step_id"]) in frozen_held]

    wait_until(lambda: bool(zombies()), 30, interval_s=0.5, what="a frozen node's writes rejected")
    return {
        "steps": len(steps),
        "conflicts": len(conflicts),
        "zombie_rejections": len(zombies()),
    }


def execute(c: Cluster, tmp_path: Path, label: str, pg_url: str | None) -> None:
    seed = chaos_seed()
    chaos = Chaos(c, random.Random(seed), pg_url)
    chaos.log(f"{label}: chaos seed {seed} (RELAYMESH_CHAOS_SEED={seed} replays the schedule)")
    started = time.monotonic()
    try:
        extra = run_scenario(c, chaos, pg_url)
        summary = check_promises(c, chaos)
    finally:
        (tmp_path / "chaos-schedule.log").write_text("\n".join(chaos.log_lines) + "\n")
    wall_s = time.monotonic() - started
    summary.update(
        extra,
        workflows=len(chaos.workflows),
        kills=len(chaos.kills),
        freezes=len(chaos.freezes),
        wall_s=round(wall_s, 1),
        seed=seed,
    )
    REPORT.append(f"{label}: {json.dumps(summary)}")
    chaos.log(f"{label}: {summary}")


def test_sqlite_cluster_survives_kills_and_freezes(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    c = make_cluster(settings=SETTINGS)
    execute(c, tmp_path, "work chaos, SQLite", None)


def test_postgres_cluster_survives_kills_freezes_and_dropped_connections(
    make_cluster: ClusterFactory, tmp_path: Path, pg_store_url: str
) -> None:
    c = make_cluster(settings=SETTINGS, store_url=pg_store_url)
    execute(c, tmp_path, "work chaos, PostgreSQL", pg_store_url)
