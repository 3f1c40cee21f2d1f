"""``relaymesh store stats`` and a retention pass through the real command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from relaymesh.model import MemberStatus, MeshNode
from relaymesh.store import open_store
from tests.e2e.harness import RELAYMESH
from tests.integration.store.retention_helpers import WEEK_MS, age, finished

pytestmark = pytest.mark.asyncio


def relaymesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RELAYMESH, *args], check=False, capture_output=True, text=True, timeout=60
    )


def stats(config: Path, url: str) -> Any:
    done = relaymesh("--config", str(config), "--store", url, "store", "stats", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_store_stats_and_a_retention_pass(tmp_path: Path, store_backend: str | None) -> None:
    url = store_backend or f"sqlite:///{tmp_path / 'store.db'}"
    store = await open_store(url)
    try:
        old = await finished(store, 2)
        await age(url, old, 2 * WEEK_MS)
        await finished(store, 1)
        # maintenance --node-id runs as a node of the mesh (a name not in it is refused).
        n1 = MeshNode("n1", "127.0.0.1:1", MemberStatus.ALIVE, 1, {}, await store.now_ms())
        await store.upsert_mesh_nodes("n1", [n1])
    finally:
        await store.close()
    config = tmp_path / "relaymesh.toml"
    config.write_text("[retention]\nfinished_after_s = 604800\nbatch_size = 1\n")

    before = stats(config, url)
    assert before["tables"]["workflows"]["rows"] == 3
    assert before["tables"]["steps"]["rows"] == 9
    assert isinstance(before["tables"]["steps"]["bytes"], int)
    assert isinstance(before["tables"]["steps"]["oldest"], int)
    assert before["next_pass"]["workflows:SUCCEEDED"] == 2

    done = relaymesh(
        "--config", str(config), "--store", url, "maintenance", "--node-id", "n1", "--json"
    )
    assert done.returncode == 0, done.stderr
    # Exactly one JSON document on stdout: the pass's log line (retention_pass) went to
    # stderr, as every command's logs do.
    assert json.loads(done.stdout)["retention"]["workflows"] == 2
    assert "retention_pass" in done.stderr

    after = stats(config, url)
    assert after["tables"]["workflows"]["rows"] == 1
    assert after["tables"]["steps"]["rows"] == 3
    assert after["next_pass"]["workflows:SUCCEEDED"] == 0
    audit = relaymesh("--store", url, "audit-query", "--action", "retention", "--json")
    assert audit.returncode == 0, audit.stderr
    (row,) = json.loads(audit.stdout)
    assert row["details"]["deleted"]["workflows"] == 2
    human = relaymesh("--config", str(config), "--store", url, "store", "stats")
    assert human.returncode == 0 and "next retention pass removes:" in human.stdout
    assert "workflows:SUCCEEDED: 0" in human.stdout


async def test_archive_show_and_store_restore(tmp_path: Path, store_backend: str | None) -> None:
    url = store_backend or f"sqlite:///{tmp_path / 'store.db'}"
    store = await open_store(url)
    try:
        old = await finished(store, 2)
        await age(url, old, 2 * WEEK_MS)
    finally:
        await store.close()
    archive_dir = tmp_path / "archive"
    config = tmp_path / "relaymesh.toml"
    config.write_text(f"[retention]\narchive_dir = {json.dumps(str(archive_dir))}\n")
    done = relaymesh(
        "--config", str(config), "--store", url, "maintenance", "--node-id", "n1", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retention"]["workflows"] == 2
    (file,) = archive_dir.iterdir()

    shown = relaymesh("archive", "show", str(file), "--json")
    assert shown.returncode == 0, shown.stderr
    assert sorted(w["id"] for w in json.loads(shown.stdout)) == sorted(old)
    assert all(w["steps"] == {"SUCCEEDED": 3} for w in json.loads(shown.stdout))
    human = relaymesh("archive", "show", str(file))
    assert human.returncode == 0 and old[0] in human.stdout
    bad = relaymesh("archive", "show", str(config))
    assert bad.returncode == 0 and "damaged" in bad.stderr  # not gzip: nothing listed

    restored = relaymesh("--store", url, "store", "restore", str(archive_dir), "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["imported"] == 2
    status = relaymesh("--store", url, "status", old[0], "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["workflow"]["id"] == old[0]

    backup = tmp_path / "backup.out"
    assert relaymesh("--store", url, "store", "backup", str(backup)).returncode == 0
    refused = relaymesh("--store", url, "store", "restore", str(backup))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "only into an empty store" in refused.stderr
    missing = relaymesh("--store", url, "store", "restore", str(tmp_path / "nope"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot read")
