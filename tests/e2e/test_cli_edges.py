"""The CLI as a new operator meets it, through real ``relaymesh`` processes: global
options after the command, a mistyped SQLite path, bad addresses refused before the
mesh or the store is touched, nodes that are not in the mesh, mesh-prune's default,
and backups (only RelayMesh's tables; a missing directory named as such)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymesh.model import MemberStatus, MeshNode
from relaymesh.store import open_store
from relaymesh.store.queries import own_tables
from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import RELAYMESH, NodeProc, free_port


def run(*args: str, cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")}
    return subprocess.run(
        [RELAYMESH, *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_global_options_after_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    assert run("store", "migrate", "--store", url, cwd=tmp_path).returncode == 0
    assert (tmp_path / "late.db").exists() and not (tmp_path / "relaymesh.db").exists()
    listed = run("tasks", "--store", url, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    equals = run("workflows", "--json", f"--store={url}", "--log-level", "warning", cwd=tmp_path)
    assert equals.returncode == 0 and json.loads(equals.stdout) == [], equals.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[worker]\nslots = "many"\n')
    line = one_error_line(run("tasks", "--store", url, "--config", str(bad), cwd=tmp_path))
    assert "worker.slots" in line


READ_COMMANDS = [
    ["tasks"],
    ["status", "wf-1"],
    ["workflows"],
    ["dead"],
    ["audit-query"],
    ["settings-history"],
    ["schedules"],
    ["store", "stats"],
    ["store", "backup", "copy.db"],
    ["maintenance", "--node-id", "n1"],
    ["reload-settings"],
    ["serve-web", "--bind", "127.0.0.1:0"],
    ["node", "run", "--bind", "127.0.0.1:0"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_a_mistyped_sqlite_path_is_refused(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "relaymseh.db"
    result = run("--store", f"sqlite:///{typo}", *args, cwd=tmp_path, timeout_s=30)
    line = one_error_line(result)
    assert f"no store at {typo}" in line and "store migrate" in line, line
    assert not typo.exists(), "a new empty store was created"


def test_store_migrate_and_create_store_make_a_store(tmp_path: Path) -> None:
    made = tmp_path / "made.db"
    assert run("--store", f"sqlite:///{made}", "store", "migrate", cwd=tmp_path).returncode == 0
    assert run("--store", f"sqlite:///{made}", "tasks", cwd=tmp_path).returncode == 0

    fresh = tmp_path / "fresh.db"
    http = free_port()
    argv = [RELAYMESH, "--store", f"sqlite:///{fresh}", "node", "run", "--create-store"]
    argv += ["--bind", f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{http}"]
    with (tmp_path / "node.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    node = NodeProc("n", 0, http, tmp_path / "node.log", proc)
    try:
        wait_until(lambda: node.healthy() or not node.running(), 30, what="node healthy")
        assert node.running(), (tmp_path / "node.log").read_text()
        assert fresh.exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_node_run_refuses_bad_options_before_joining(
    make_cluster: ClusterFactory, busy_port: int
) -> None:
    c = make_cluster()
    c.add_nodes("n1")
    c.start("n1")
    base = ["node", "run", "--name", "bad", "--seeds-file", str(c.seeds)]
    base += ["--bind", f"127.0.0.1:{free_port()}"]
    for http, expected in (
        ("garbage", "--http: expected HOST:PORT"),
        ("127.0.0.1:99999", "port out of range"),
    ):
        result = c.cli(*base, "--http", http, check=False)
        assert expected in one_error_line(result)
    # A busy port is found only by binding it (before gossip starts); the node's own log
    # lines of its short shutdown come first, the error line last.
    busy = c.cli(*base, "--http", f"127.0.0.1:{busy_port}", check=False)
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert busy.stderr.strip().splitlines()[-1].startswith("error: cannot serve HTTP on")
    # Had it joined, n1 would know it (ALIVE, then LEFT) from the join's push/pull.
    members = c.http_json("n1", "/healthz")["members"]
    assert sum(int(members[s]) for s in ("alive", "suspect", "dead", "left")) == 1, members
    assert [m["name"] for m in c.api("/api/members")] == ["n1"]


def test_serve_web_refuses_bad_binds(tmp_path: Path, busy_port: int) -> None:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    assert run("--store", url, "store", "migrate", cwd=tmp_path).returncode == 0
    for bind, expected in (
        ("garbage", "--bind: expected HOST:PORT"),
        ("127.0.0.1:70000", "port out of range"),
        (f"127.0.0.1:{busy_port}", f"cannot serve HTTP on 127.0.0.1:{busy_port}"),
    ):
        line = one_error_line(run("--store", url, "serve-web", "--bind", bind, cwd=tmp_path))
        assert expected in line, line


def seed_mesh(url: str, left_for_ms: dict[str, int]) -> None:
    """Mesh rows as a node would report them: ``name`` LEFT for ``ms`` (0: ALIVE)."""

    async def go() -> None:
        store = await open_store(url)
        try:
            now = await store.now_ms()
            rows = [
                MeshNode(
                    name,
                    f"127.0.0.1:{i + 1}",
                    MemberStatus.LEFT if ms else MemberStatus.ALIVE,
                    1,
                    {},
                    now - ms,
                )
                for i, (name, ms) in enumerate(left_for_ms.items())
            ]
            await store.upsert_mesh_nodes("n1", rows)
        finally:
            await store.close()

    asyncio.run(go())


def test_nodes_not_in_the_mesh_and_prune_default(
    tmp_path: Path, store_backend: str | None
) -> None:
    url = store_backend or f"sqlite:///{tmp_path / 'mesh.db'}"
    seed_mesh(url, {"n1": 0, "gone": 60_000, "recent": 1_000})
    line = one_error_line(run("--store", url, "maintenance", "--node-id", "zzz", cwd=tmp_path))
    assert "'zzz' is not in the mesh (known: gone, n1, recent)" in line
    line = one_error_line(run("--store", url, "reload-settings", "--node", "nosuch", cwd=tmp_path))
    assert "'nosuch' is not in the mesh" in line
    ok = run("--store", url, "reload-settings", "--node", "n1", "--json", cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)["node"] == "n1", ok.stderr
    assert run("--store", url, "maintenance", "--node-id", "n1", cwd=tmp_path).returncode == 0

    # The default age: the settings' maintenance.mesh_prune_older_than_ms (24 h unless set).
    default = run("--store", url, "mesh-prune", "--json", cwd=tmp_path)
    assert default.returncode == 0 and json.loads(default.stdout) == {"pruned": 0}, default.stderr
    config = tmp_path / "prune.toml"
    config.write_text("[maintenance]\nmesh_prune_older_than_ms = 30000\n")
    pruned = run("--store", url, "--config", str(config), "mesh-prune", "--json", cwd=tmp_path)
    assert json.loads(pruned.stdout) == {"pruned": 1}, pruned.stderr
    explicit = run("--store", url, "mesh-prune", "--older-than-ms", "0", "--json", cwd=tmp_path)
    assert json.loads(explicit.stdout) == {"pruned": 1}


def test_backups(tmp_path: Path, store_backend: str | None) -> None:
    url = store_backend or f"sqlite:///{tmp_path / 'b.db'}"
    assert run("--store", url, "store", "migrate", cwd=tmp_path).returncode == 0
    missing = tmp_path / "no-such-dir" / "copy"
    line = one_error_line(run("--store", url, "store", "backup", str(missing), cwd=tmp_path))
    assert "directory" in line and "no-such-dir" in line and "does not exist" in line, line
    assert "unavailable" not in line and "store" not in line.split("directory")[0][7:]
    if store_backend is None:
        return
    # Another application's table in the same schema stays out of the dump.
    import asyncpg

    async def foreign_table() -> None:
        conn = await asyncpg.connect(store_backend)
        try:
            await conn.execute("CREATE TABLE other_app_secrets (v text)")
            await conn.execute("INSERT INTO other_app_secrets VALUES ('not yours')")
        finally:
            await conn.close()

    asyncio.run(foreign_table())
    dump = tmp_path / "dump.json"
    done = run("--store", url, "store", "backup", str(dump), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tables = set(json.loads(dump.read_text())["tables"])
    assert tables == set(own_tables("postgres")), tables
    assert "not yours" not in dump.read_text()
