"""SQLite query plans that throughput depends on, pinned (EXPLAIN QUERY PLAN on the
migrated schema without ANALYZE, as a fresh node file has it)."""

from __future__ import annotations

import re
import sqlite3

import pytest

from relaymesh.store.queries import load_migrations, load_queries

Q = load_queries("sqlite")


@pytest.fixture(scope="module")
def conn() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(Q["schema_version_create"])
    for migration in load_migrations("sqlite"):
        for statement in migration.statements:
            db.execute(statement)
    return db


def plan(conn: sqlite3.Connection, name: str) -> str:
    sql = Q[name]
    params = dict.fromkeys(re.findall(r":(\w+)", sql))
    return " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.parametrize("name", ["claim_candidates", "claim_candidates_low"])
def test_claims_walk_the_claimable_index_without_a_sort(
    conn: sqlite3.Connection, name: str
) -> None:
    text = plan(conn, name)
    assert "USING INDEX steps_claimable" in text
    assert "TEMP B-TREE" not in text


@pytest.mark.parametrize(
    "name",
    ["fence_heartbeat", "fence_success", "ready_dependents", "conflicts_insert", "workflow_shapes"],
)
def test_batch_writes_find_their_rows_by_key(conn: sqlite3.Connection, name: str) -> None:
    """The per-commit statements take a JSON list of ids: each must look its rows up by
    key, never scan the steps table."""
    text = plan(conn, name)
    assert "SCAN steps" not in text and "SCAN s " not in text and "SCAN w " not in text
    assert "USING INDEX" in text or "USING COVERING INDEX" in text
