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
