"""Recovery end to end: kill -9 of a node mid-workflow, drain on SIGTERM, hard cancel."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import pid_alive, record_step

pytestmark = pytest.mark.slow

LONG_LEASE = {"worker": {"lease_ms": 60_000, "heartbeat_ms": 1_000}}


def test_kill9_steps_reclaimed_via_dead_verdict(
    make_cluster: ClusterFactory, store_backend: str | None
) -> None:
    c = make_cluster(settings=LONG_LEASE, store_url=store_backend)
    c.add_nodes("n1", "n2", "n3")
    c.start("n1", "n2", "n3")
    for name in c.nodes:
        c.wait_members(name, 3)
    steps = [record_step(f"s{i}", c.journal, 2.0) for i in range(4)]
    steps.append({"name": "join", "agent": "echo", "depends_on": [s["name"] for s in steps]})
    wid = c.submit({"name": "kill9", "steps": steps})

    held: dict[str, list[dict[str, object]]] = {}

    def someone_running() -> bool:
        started = {(j["step_id"], j["node"]) for j in c.journal_lines() if j["phase"] == "start"}
        running = [
            s
            for s in c.status(wid)["steps"]
            if s["status"] == "RUNNING" and (s["id"], s["owner_node"]) in started
        ]
        held.clear()
        for s in running:
            held.setdefault(str(s["owner_node"]), []).append(s)
        return bool(held)

    wait_until(someone_running, 30, interval_s=0.1, what="a node running steps")
    victim = max(held, key=lambda n: len(held[n]))
    victim_steps = {str(s["id"]): int(s["lease_epoch"]) for s in held[victim]}  # type: ignore[call-overload]
    c.signal(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    killed_wall_ms = time.time() * 1000
    c.wait_exit(victim, 5)

    def reclaimed() -> bool:
        by_id = {s["id"]: s for s in c.status(wid)["steps"]}
        return all(
            by_id[sid]["lease_epoch"] > epoch and by_id[sid]["owner_node"] != victim
            for sid, epoch in victim_steps.items()
        )

    wait_until(reclaimed, 25, interval_s=0.1, what=f"{victim}'s steps to be reclaimed")
    recovery_s = time.monotonic() - killed_at
    assert recovery_s < 25, recovery_s  # the lease is 60 s: this was the DEAD verdict

    # The mesh table says when the survivors saw it die (wall clock), not when they wrote.
    survivor = next(n for n in c.nodes if n != victim)

    def victim_row() -> dict[str, Any]:
        members = c.http_json(survivor, "/api/members")
        return next(m for m in members if m["name"] == victim)  # type: ignore[no-any-return]

    wait_until(lambda: victim_row()["status"] == "DEAD", 10, what="the DEAD row in the store")
    assert killed_wall_ms <= victim_row()["status_changed_at"] <= time.time() * 1000

    doc = c.wait_workflow(wid, {"SUCCEEDED"}, 60)
    for step in doc["steps"]:
        assert step["status"] == "SUCCEEDED"
        if step["agent"] == "record":
            # The committed result is the run of the final lease, never a stale one.
            assert step["result"]["epoch"] == step["lease_epoch"]
            assert step["result"]["node"] == step["owner_node"]
    for sid in victim_steps:
        final = next(s for s in doc["steps"] if s["id"] == sid)
        assert final["result"]["node"] != victim

    events = c.cli_json("ownership-events", "--limit", "1000")
    dead_owner = {e["step_id"] for e in events if e["event"] == "dead_owner"}
    assert set(victim_steps) <= dead_owner, (victim_steps, events)
    claims = Counter(e["step_id"] for e in events if e["event"] == "claimed")
    reclaims = Counter(e["step_id"] for e in events if e["event"] == "dead_owner")
    for step in doc["steps"]:
        # One claim, plus one more per reclaim from the dead node; nothing else.
        assert claims[step["id"]] == 1 + reclaims[step["id"]], step["name"]
        assert reclaims[step["id"]] <= 1, json.dumps(
            [e for e in events if e["step_id"] == step["id"]]
        )
    conflicts = c.cli_json("conflicts", "--limit", "1000")
    assert not [x for x in conflicts if x["event"] == "commit_success"], conflicts
    recover_audit = c.cli_json("audit-query", "--action", "recover")
    # The reclaim was audited, by a surviving node acting on the DEAD verdict.
    assert any(
        victim in r["details"].get("owners", []) and r["actor"].startswith("node:")
        for r in recover_audit
    ), recover_audit


def test_sigterm_drains_and_another_node_finishes(make_cluster: ClusterFactory) -> None:
    c = make_cluster(
        settings={**LONG_LEASE, "worker": {**LONG_LEASE["worker"], "drain_timeout_s": 1}}
    )
    c.add_nodes("a", "b")
    c.start("a", "b")
    c.wait_members("a", 2)
    c.wait_members("b", 2)
    work = record_step("work", c.journal, 0.5)
    work["input"]["first_run_seconds"] = 60
    wid = c.submit({"name": "drain", "steps": [work]})

    first: dict[str, object] = {}

    def started() -> bool:
        step = c.status(wid)["steps"][0]
        if step["status"] == "RUNNING" and c.journal_lines():
            first.update(step)
            return True
        return False

    wait_until(started, 20, interval_s=0.1, what="the step to start")
    owner = str(first["owner_node"])
    other = "b" if owner == "a" else "a"
    agent_pid = int(c.journal_lines()[0]["pid"])
    c.signal(owner, signal.SIGTERM)
    t0 = time.monotonic()
    assert c.wait_exit(owner, 15) == 0
    assert time.monotonic() - t0 < 15
    assert not pid_alive(agent_pid)  # the drain killed the agent's process group

    doc = c.wait_workflow(wid, {"SUCCEEDED"}, 20)
    assert time.monotonic() - t0 < 30  # far below the 60 s lease: the lease was released
    step = doc["steps"][0]
    assert step["result"]["node"] == other
    events = [e for e in c.cli_json("ownership-events") if e["step_id"] == step["id"]]
    assert any(e["event"] == "released" and e["node"] == owner for e in events), events
    assert not any(j["phase"] == "done" and j["node"] == owner for j in c.journal_lines())


def test_hard_cancel_kills_the_running_agent(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    c.add_nodes("solo")
    c.start("solo")
    wid = c.submit({"name": "cancel", "steps": [record_step("long", c.journal, 60)]})
    wait_until(lambda: bool(c.journal_lines()), 20, interval_s=0.1, what="the agent to start")
    pid = int(c.journal_lines()[0]["pid"])
    assert pid_alive(pid)
    result = c.cli_json("cancel", wid, "--mode", "hard")
    assert result["cancelled"] == 1
    step_id = c.status(wid)["steps"][0]["id"]
    assert result["fenced_running"] == [step_id]
    wait_until(lambda: not pid_alive(pid), 10, what="the agent to be killed")
    doc = c.status(wid)
    assert doc["workflow"]["status"] == "CANCELLED"
    assert doc["steps"][0]["status"] == "CANCELLED"
    assert [j["phase"] for j in c.journal_lines()] == ["start"]
    audit = c.cli_json("audit-query", "--task-id", wid, "--action", "cancel")
    assert audit[0]["details"]["mode"] == "hard"
