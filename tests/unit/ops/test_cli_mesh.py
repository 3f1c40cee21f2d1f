"""``mesh-summary`` exit codes through the real command (in process, SQLite)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from relaymesh.cli.main import main
from relaymesh.model import MemberStatus, MeshNode
from relaymesh.store import open_store


def seed(url: str, *statuses: MemberStatus) -> None:
    async def go() -> None:
        store = await open_store(url)
        try:
            now = await store.now_ms()
            nodes = [
                MeshNode(f"n{i}", f"127.0.0.1:{i + 1}", status, 1, {}, now)
                for i, status in enumerate(statuses)
            ]
            await store.upsert_mesh_nodes("test", nodes)
        finally:
            await store.close()

    asyncio.run(go())


def summary(url: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(main, ["--store", url, "mesh-summary", "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def test_exit_codes_follow_the_verdict(tmp_path: Path) -> None:
    healthy = f"sqlite:///{tmp_path / 'a.db'}"
    seed(healthy, MemberStatus.ALIVE, MemberStatus.ALIVE, MemberStatus.LEFT)
    code, doc = summary(healthy)
    assert code == 0
    assert (doc["healthy"], doc["status"], doc["reasons"]) == (True, "healthy", [])
    assert doc["members"] == {"alive": 2, "suspect": 0, "dead": 0, "left": 1}

    dead = f"sqlite:///{tmp_path / 'd.db'}"
    seed(dead, MemberStatus.ALIVE, MemberStatus.ALIVE, MemberStatus.DEAD)
    code, doc = summary(dead)
    assert code == 1
    assert (doc["healthy"], doc["status"], doc["reasons"]) == (False, "degraded", ["DEAD: n2"])

    degraded = f"sqlite:///{tmp_path / 'b.db'}"
    seed(degraded, MemberStatus.ALIVE, MemberStatus.SUSPECT)
    code, doc = summary(degraded)
    assert code == 1
    assert doc["healthy"] is False
    assert doc["reasons"] == ["SUSPECT: n1"]

    unhealthy = f"sqlite:///{tmp_path / 'c.db'}"
    seed(unhealthy, MemberStatus.LEFT)
    code, doc = summary(unhealthy)
    assert code == 2
    assert (doc["status"], doc["reasons"]) == ("unhealthy", ["no ALIVE member"])


def test_human_output_has_one_line_per_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    seed(url, MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD)
    result = CliRunner().invoke(main, ["--store", url, "mesh-summary"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:3] == ["mesh: degraded", "  - SUSPECT: n1", "  - DEAD: n2"]


def test_an_open_breaker_audited_by_a_live_node_is_degraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'br.db'}"
    seed(url, MemberStatus.ALIVE)

    async def audit(to: str) -> None:
        store = await open_store(url)
        try:
            details = {"agent": "fetch", "from": "CLOSED", "to": to, "node": "n0"}
            await store.record_audit("node:n0", "breaker_transition", "fetch", details)
        finally:
            await store.close()

    asyncio.run(audit("OPEN"))
    code, doc = summary(url)
    assert (code, doc["reasons"]) == (1, ["breaker OPEN: agent fetch on n0"])
    asyncio.run(audit("CLOSED"))
    assert summary(url)[0] == 0


def test_a_failed_check_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--store", f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", "mesh-summary"]
    )
    assert result.exit_code == 3
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_running_steps_on_a_dead_owner_past_the_reclaim_window_exit_2(tmp_path: Path) -> None:
    import time

    from relaymesh.clock import FakeClock
    from relaymesh.model import StepSpec, WorkflowSpec
    from relaymesh.store.sqlite import SqliteStore

    def seed_stuck(path: Path, dead_for_ms: int) -> str:
        async def go() -> None:
            # The claim happened before the death: on a clock set back that far.
            now_ms = time.time_ns() // 1_000_000
            clock = FakeClock(wall_start_ms=now_ms - dead_for_ms - 1_000)
            store = SqliteStore(str(path), clock=clock)
            await store.connect()
            try:
                await store.migrate()
                spec = WorkflowSpec(name="w", steps=(StepSpec(name="a", agent="echo", input=None),))
                await store.submit_workflow(spec, "test")
                assert len(await store.claim_steps("n1", limit=1, lease_ms=3_600_000)) == 1
                nodes = [
                    MeshNode("n0", "127.0.0.1:1", MemberStatus.ALIVE, 1, {}, now_ms),
                    MeshNode("n1", "127.0.0.1:2", MemberStatus.DEAD, 1, {}, now_ms - dead_for_ms),
                ]
                await store.upsert_mesh_nodes("test", nodes)
            finally:
                await store.close()

        asyncio.run(go())
        return f"sqlite:///{path}"

    # Default settings: 6 x 4 x 1000 ms suspicion + 1000 ms maintenance = a 25 s window.
    code, doc = summary(seed_stuck(tmp_path / "fresh.db", dead_for_ms=1_000))
    assert code == 1
    assert doc["reasons"] == ["DEAD: n1", "1 RUNNING step(s) owned by n1 (DEAD), reclaim pending"]

    code, doc = summary(seed_stuck(tmp_path / "stuck.db", dead_for_ms=60_000))
    assert code == 2
    assert doc["status"] == "unhealthy"
    assert doc["reasons"] == [
        "1 RUNNING step(s) owned by n1 (DEAD) past the reclaim window (25000 ms)",
        "DEAD: n1",
    ]
