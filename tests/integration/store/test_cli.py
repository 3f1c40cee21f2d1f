"""``relaymesh store migrate`` / ``relaymesh store backup`` through click's runner."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from relaymesh.cli.main import main
from relaymesh.store.queries import load_migrations


def test_migrate_prints_the_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    result = runner.invoke(main, ["--store", url, "store", "migrate"])
    assert result.exit_code == 0, result.output
    latest = len(load_migrations("sqlite"))
    assert f"schema version {latest}" in result.output
    result = runner.invoke(main, ["store", "migrate", "--json"], env={"RELAYMESH_STORE_URL": url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"store": url, "schema_version": latest}


def test_backup_writes_a_copy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    assert runner.invoke(main, ["--store", url, "store", "migrate"]).exit_code == 0
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps({"name": "w", "steps": [{"name": "a", "agent": "echo"}]}))
    submitted = runner.invoke(main, ["--store", url, "submit", str(workflow)])
    assert submitted.exit_code == 0, submitted.output
    wid = submitted.output.strip().splitlines()[-1]
    target = tmp_path / "copy.db"
    result = runner.invoke(main, ["--store", url, "store", "backup", str(target), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["path"] == str(target) and doc["bytes"] == target.stat().st_size
    # The copy holds the store's rows, not only its schema.
    copy, original = sqlite3.connect(target), sqlite3.connect(tmp_path / "cli.db")
    try:
        for table, columns in (("workflows", "id, name, status"), ("steps", "id, name, status")):
            sql = f"SELECT {columns} FROM {table} ORDER BY id"
            assert copy.execute(sql).fetchall() == original.execute(sql).fetchall()
        assert copy.execute("SELECT id FROM workflows").fetchall() == [(wid,)]
        latest = len(load_migrations("sqlite"))
        assert copy.execute("SELECT max(version) FROM schema_version").fetchone()[0] == latest
    finally:
        copy.close()
        original.close()
    result = runner.invoke(main, ["--store", url, "store", "backup", str(target)])
    assert result.exit_code == 0 and f"wrote {target}" in result.output


@pytest.mark.parametrize("url", ["mysql://nope/x", "sqlite:////nonexistent-dir/x.db"])
def test_errors_are_one_line(url: str) -> None:
    result = CliRunner().invoke(main, ["--store", url, "store", "migrate"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def _multi_host(url: str, refused_port: int) -> str:
    """``url`` behind a dead first host, with a password in the query string (trust
    authentication ignores it; the output must never show it)."""
    scheme, rest = url.split("://", 1)
    user, _, tail = rest.partition("@")
    hostport, _, path = tail.partition("/")
    return (
        f"{scheme}://{user}@127.0.0.1:{refused_port},{hostport}/{path}"
        "?target_session_attrs=read-write&password=s3cret"
    )


@pytest.mark.pg
def test_multi_host_url_through_the_cli(tmp_path: Path) -> None:
    """`store migrate`, `submit`, `tasks`, `store backup` on a multi-host URL whose first
    host is down: each reaches the primary behind it and never prints the password."""
    from tests.conftest import require_pg
    from tests.e2e.harness import free_port
    from tests.pgutil import fresh_pg_database_sync

    with fresh_pg_database_sync(require_pg()) as pg_url:
        _multi_host_session(tmp_path, _multi_host(pg_url, free_port()))


def _multi_host_session(tmp_path: Path, url: str) -> None:
    runner = CliRunner()
    env = {"RELAYMESH_STORE_URL": url}
    result = runner.invoke(main, ["store", "migrate", "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema_version"] == len(load_migrations("postgres"))
    assert doc["store"] == url.replace("s3cret", "***")
    flow = json.dumps({"name": "w", "steps": [{"name": "a", "agent": "echo", "input": {}}]})
    result = runner.invoke(main, ["submit", "-"], env=env, input=flow)
    assert result.exit_code == 0, result.output
    workflow_id = result.output.strip().splitlines()[-1]
    result = runner.invoke(main, ["tasks", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [s["workflow_id"] for s in json.loads(result.output)] == [workflow_id]
    target = tmp_path / "dump.json"
    result = runner.invoke(main, ["store", "backup", str(target)], env=env)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and "password=***" in result.output
    dump = json.loads(target.read_text())
    assert [w["id"] for w in dump["tables"]["workflows"]] == [workflow_id]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cret@h1:5432,h2:x/db",
        "postgresql://u@h1,h2/db?target_session_attrs=writable&password=s3cret",
    ],
)
def test_bad_multi_host_url_is_one_line_without_the_password(url: str) -> None:
    result = CliRunner().invoke(main, ["--store", url, "store", "migrate"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "s3cret" not in result.output
