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
    seed(healthy, MemberStatus.ALIVE, MemberStatus.ALIVE, MemberStatus.DEAD)
    code, doc = summary(healthy)
    assert code == 0
    assert doc["healthy"] is True
    assert doc["members"] == {"alive": 2, "suspect": 0, "dead": 1, "left": 0}

    degraded = f"sqlite:///{tmp_path / 'b.db'}"
    seed(degraded, MemberStatus.ALIVE, MemberStatus.SUSPECT)
    code, doc = summary(degraded)
    assert code == 1
    assert doc["healthy"] is False

    unhealthy = f"sqlite:///{tmp_path / 'c.db'}"
    seed(unhealthy, MemberStatus.LEFT)
    assert summary(unhealthy)[0] == 2


def test_a_failed_check_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--store", f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", "mesh-summary"]
    )
    assert result.exit_code == 3
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
