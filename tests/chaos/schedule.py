"""The seeded fault schedule and the steady load for the host scenarios.

``HostChaos`` keeps a cluster busy (workflows of ``record`` script steps, some holding
lock keys, topped up whenever fewer than ``unfinished_target`` steps are left) and
injects faults chosen by a seeded ``random.Random``: the seed is printed first and
``RELAYMESH_CHAOS_SEED`` replays it. Gaps between faults are random but bounded; no
gap waits for an event (conditions are polled with deadlines). Every fault and every
submitted workflow goes to the cluster's event log for the history checker.

Fault kinds: ``kill`` (SIGKILL a busy node, wait for its steps to be taken from it,
restart it under its old name), ``freeze`` (SIGSTOP past the lease, then SIGCONT),
``partition`` / ``partition_oneway`` (nftables drop between a minority and the rest),
``loss`` (``numgen random mod 100 < N`` drop between every pair of hosts),
``pg_restart`` (``pg_ctl restart -m fast`` of the primary), ``pg_failover`` (stop the
primary hard, promote the replica; a later ``pg_rebuild`` makes a fresh synchronous
replica of the new primary).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from relaymesh.ops import services
from relaymesh.settings import load_settings
from relaymesh.work.workflow import parse_workflow
from tests.chaos.hosts import HostCluster, running_by_owner, step_counts, store_read
from tests.pgcluster import PgCluster

LOCK_KEYS = ("res:a", "res:b", "res:c")


def make_workflow(rng: random.Random, index: int, journal: str, n_steps: int) -> dict[str, Any]:
    """Three interleaved chains of short ``record`` steps; one step in four needs one of
    ``LOCK_KEYS`` (the lock-exclusivity promise has something to check)."""
    steps: list[dict[str, Any]] = []
    for i in range(n_steps):
        step: dict[str, Any] = {
            "name": f"s{i:03d}",
            "agent": "record",
            "input": {"journal": journal, "seconds": round(rng.uniform(0.05, 0.4), 3)},
            "retry": {"max_attempts": 30, "base_backoff_ms": 50},
        }
        if i >= 3:
            step["depends_on"] = [f"s{i - 3:03d}"]
        if rng.random() < 0.25:
            step["locks"] = [rng.choice(LOCK_KEYS)]
        steps.append(step)
    return {"name": f"hosts-{index}", "steps": steps}


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of ``pid``'s sockets, read in ``pid``'s own network namespace."""
    inodes: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def pg_sessions(server_url: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(server_url, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT pid, state, host(client_addr) AS addr, client_port FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(run())


@dataclass
class HostChaos:
    c: HostCluster
    rng: random.Random
    store_url: str
    lease_ms: int
    pg: PgCluster | None = None
    steps_per_workflow: int = 60
    unfinished_target: int = 80
    t0: float = field(default_factory=time.monotonic)
    workflows: list[str] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    rebuild_due: float | None = None
    log_lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.2f}s] {message}"
        self.log_lines.append(line)
        print(line, flush=True)

    def pause(self, low_s: float, high_s: float) -> None:
        """A bounded random gap in the schedule (the fault's duration, not a wait)."""
        time.sleep(self.rng.uniform(low_s, high_s))

    def fault(self, kind: str, **fields: Any) -> None:
        self.faults.append({"kind": kind, **fields})
        self.log(f"{kind} {fields}")

    # -- load ---------------------------------------------------------------------------

    def submit(self) -> None:
        """Submit one workflow straight through the store (a CLI process per submit is
        seconds on a busy machine). A submit retried after an outage may land twice: the
        extra copy is just more work that must finish too."""
        doc = make_workflow(
            self.rng, len(self.workflows), str(self.c.journal), self.steps_per_workflow
        )
        spec = parse_workflow(
            json.dumps(doc),
            known_agents={"record", "echo", "sleep", "fail"},
            settings=load_settings(self.c.config),
        )
        wid = str(
            store_read(self.store_url, lambda st: services.submit_workflow(st, spec, "chaos"))
        )
        self.workflows.append(wid)
        self.c.events.record("submitted", workflow_id=wid, steps=len(doc["steps"]))

    def top_up(self) -> None:
        counts = step_counts(self.store_url)
        unfinished = sum(v for k, v in counts.items() if k not in ("SUCCEEDED", "CANCELLED"))
        while unfinished < self.unfinished_target:
            self.submit()
            unfinished += self.steps_per_workflow

    # -- faults ---------------------------------------------------------------------------

    def pick_busy(self, candidates: Sequence[str]) -> str:
        """A candidate that holds RUNNING steps now, if one does within a few seconds."""
        deadline = time.monotonic() + 10
        while True:
            held = running_by_owner(self.store_url)
            busy = sorted(n for n in candidates if held.get(n))
            if busy or time.monotonic() > deadline:
                return self.rng.choice(busy or sorted(candidates))
            time.sleep(0.1)

    def wait_taken(self, owner: str, held: dict[str, int], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = running_by_owner(self.store_url).get(owner, {})
            if not any(now.get(sid) == epoch for sid, epoch in held.items()):
                return True
            time.sleep(0.2)
        return False

    def do_kill(self) -> None:
        victim = self.pick_busy(self.c.up())
        held = running_by_owner(self.store_url).get(victim, {})
        self.c.kill(victim)
        self.fault("kill", node=victim, running=len(held))
        taken = self.wait_taken(victim, held, 3 * self.lease_ms / 1000)
        self.log(f"{victim}'s steps taken over: {taken}")
        self.pause(0.2, 1.5)
        self.c.start(victim)
        self.c.events.record("restart", node=victim)
        self.log(f"restarted {victim} under its old name")

    def _pg_freeze(self, pid: int) -> None:
        """SIGSTOP ``pid`` at a moment none of its sessions is inside a transaction (a
        process stopped mid-transaction keeps its row locks: .notes/chaos.md)."""
        assert self.pg is not None
        server = self.pg.server_url(self.pg.primary)
        for _ in range(400):
            os.kill(pid, 19)  # SIGSTOP
            ports = client_ports(pid)
            try:
                sessions = pg_sessions(server)
            except (OSError, asyncpg.PostgresError):
                return  # the store is down: no transaction of ours can be open
            if all(s["state"] == "idle" for s in sessions if s["client_port"] in ports):
                return
            os.kill(pid, 18)  # SIGCONT
            time.sleep(self.rng.uniform(0.005, 0.05))
        raise AssertionError("the node never stopped outside a database transaction")

    def do_freeze(self) -> None:
        node = self.pick_busy(self.c.up())
        self.c.stop(node, self._pg_freeze if self.pg is not None else None)
        hold_s = self.lease_ms / 1000 + self.rng.uniform(0.5, 2.0)
        self.fault("freeze", node=node, hold_s=round(hold_s, 2))
        try:
            time.sleep(hold_s)  # the injected fault: stopped past its lease
        finally:
            self.c.cont(node)

    def _minority(self) -> tuple[list[str], list[str]]:
        hosts = sorted(self.c.network.hosts)
        size = 1 if len(hosts) <= 3 else self.rng.choice((1, 2))
        minority = sorted(self.rng.sample(hosts, size))
        return minority, [h for h in hosts if h not in minority]

    def do_partition(self, one_way: bool) -> None:
        minority, majority = self._minority()
        if one_way and self.rng.random() < 0.5:
            src, dst = majority, minority
        else:
            src, dst = minority, majority
        self.c.network.partition(src, dst, one_way=one_way)
        kind = "partition_oneway" if one_way else "partition"
        self.c.events.record(kind, a=src, b=dst, one_way=one_way, nodes=self._nodes_on)
        self.fault(kind, a=src, b=dst)
        self.pause(3, 8)
        self.c.network.heal()
        self.c.events.record("heal")
        self.log("healed")

    @property
    def _nodes_on(self) -> dict[str, str]:
        return {name: self.c.host_node(name).host for name in self.c.nodes}

    def do_loss(self) -> None:
        pct = self.rng.choice((10, 20, 30))
        hosts = sorted(self.c.network.hosts)
        self.c.network.loss(hosts, pct)
        self.c.events.record("loss", hosts=hosts, pct=pct)
        self.fault("loss", pct=pct)
        self.pause(4, 8)
        self.c.network.heal()
        self.c.events.record("heal")
        self.log("healed")

    def do_pg_restart(self) -> None:
        assert self.pg is not None
        started = time.monotonic()
        self.pg.restart(self.pg.primary, "fast")
        self.c.events.record("pg_restart", server=self.pg.primary.name)
        self.fault(
            "pg_restart", server=self.pg.primary.name, s=round(time.monotonic() - started, 2)
        )

    def do_pg_failover(self) -> None:
        assert self.pg is not None and self.pg.replica is not None
        old = self.pg.stop_primary("immediate")
        self.c.events.record("pg_stop_primary", server=old.name)
        new = self.pg.promote()
        self.c.events.record("pg_failover", old=old.name, new=new.name)
        self.fault("pg_failover", old=old.name, new=new.name)
        self.rebuild_due = time.monotonic() + self.rng.uniform(8, 15)

    def maybe_rebuild(self) -> None:
        if self.pg is None or self.rebuild_due is None or time.monotonic() < self.rebuild_due:
            return
        rebuilt = self.pg.rebuild_replica()
        self.rebuild_due = None
        self.c.events.record("pg_rebuild", server=rebuilt.name, primary=self.pg.primary.name)
        self.fault("pg_rebuild", server=rebuilt.name)

    def inject(self, kind: str) -> None:
        if kind in ("pg_failover",) and (self.pg is None or self.pg.replica is None):
            kind = "pg_restart"
        {
            "kill": self.do_kill,
            "freeze": self.do_freeze,
            "partition": lambda: self.do_partition(False),
            "partition_oneway": lambda: self.do_partition(True),
            "loss": self.do_loss,
            "pg_restart": self.do_pg_restart,
            "pg_failover": self.do_pg_failover,
        }[kind]()

    def run(self, kinds: Sequence[str], duration_s: float, gap_s: tuple[float, float]) -> None:
        """Every kind once in a seeded order, then random kinds until ``duration_s``."""
        order = list(kinds)
        self.rng.shuffle(order)
        end = time.monotonic() + duration_s
        while order or time.monotonic() < end:
            self.top_up()
            self.maybe_rebuild()
            kind = order.pop() if order else self.rng.choice(list(kinds))
            self.inject(kind)
            self.pause(*gap_s)
        if self.rebuild_due is not None:
            self.rebuild_due = 0
            self.maybe_rebuild()

    def wait_finished(self, timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        while True:
            counts = step_counts(self.store_url)
            open_steps = {
                k: v
                for k, v in counts.items()
                if v and k not in ("SUCCEEDED", "CANCELLED", "DEAD_LETTER")
            }
            if not open_steps or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)
