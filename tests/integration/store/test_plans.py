"""Query plans of the hot queries on a store with a big finished history, both stores.

20,000 finished steps (2,000 workflows, one ownership event each) are written in bulk
(the benchmark's own fill, ``bench/retention_bigstore.py``), then a little live work
through the API. Every query the claim, commit, heartbeat, submit, queue-lag and
list paths run must reach ``steps``, ``ownership_events`` and ``workflows`` through an
index: never a full scan (SQLite ``SCAN`` without an index, PostgreSQL ``Seq Scan``),
and a full index walk only over a partial index of unfinished steps. PostgreSQL is
checked after ``VACUUM ANALYZE`` with both the custom plan asyncpg's first runs get and
the generic plan it may settle on (``plan_cache_mode = force_generic_plan``). SQLite is
checked without ANALYZE, as nodes run it. ``step_counts`` (the ``steps{status}``
gauge, an operator's figure cached by the node) counts every row by nature and is
left out.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.retention_bigstore import _fill_postgres, _fill_sqlite
from relaymesh.store import Store
from relaymesh.store.queries import load_queries
from tests.integration.store.conftest import step, workflow

# sql_store: rows aged, tied or bulk-filled with SQL behind the store's back.
pytestmark = [pytest.mark.asyncio, pytest.mark.sql_store]

HISTORY_STEPS = 20_000
BIG = ("steps", "ownership_events", "workflows")
PARTIAL_UNFINISHED = {"steps_claimable", "steps_running_expiry", "steps_running_owner"}

HOT_BOTH = (
    "claim_candidates",
    "claim_candidates_low",
    "claim_update",
    "fence_heartbeat",
    "fence_success",
    "fence_retry",
    "fence_dead_letter",
    "fence_release",
    "ready_dependents",
    "deps_all_succeeded",
    "workflow_shapes",
    "lease_states",
    "upstream_results",
    "expired_running",
    "dead_owner_running",
    "promote_retries",
    "queue_lag",
    "leases_held_by",
    "running_by_owner_status",
    "workflow_steps",
    "steps_list",
    "steps_list_status",
    "steps_list_workflow",
    "ownership_events_list",
    "audit_query",
    "workflows_list",
    "retention_workflow_candidates",
)
"""The hot queries both backends have under one name (their plans checked on each)."""
HOT_SQLITE = (
    *HOT_BOTH,
    "claim_events",
    "events_insert",
    "workflow_set_status",
    "workflows_step_counts",
)
HOT_POSTGRES = (*HOT_BOTH, "claim_fast")

# Values of a plausible call per parameter type (a limit, a cutoff far above every row,
# the agent the rows have): the custom plan then is the one a real call gets.
_PG_VALUES = {
    "integer": "100",
    "bigint": "4000000000000000000",
    "smallint": "1",
    "text": "'echo'",
    "text[]": "'{echo}'",
    "bigint[]": "'{1}'",
}


@pytest.fixture
async def big(store_url: str, store: Store, tmp_path: Path) -> str:
    now_ms = int(time.time() * 1000)
    if store_url.startswith("sqlite"):
        _fill_sqlite(Path(store_url.removeprefix("sqlite:///")), 0, HISTORY_STEPS, now_ms)
    else:
        _fill_postgres(store_url, 0, HISTORY_STEPS, now_ms)
    for _ in range(20):
        await store.submit_workflow(
            workflow(step("a"), step("b", depends_on=("a",)), step("c", locks=("k",))), "t"
        )
    claims = await store.claim_steps("w", limit=10, lease_ms=60_000)
    await store.commit_success_many("w", [(c.lease, {}) for c in claims[:5]])
    for i in range(50):
        await store.record_audit("t", "note", None, {"i": i})
    return store_url


def _sqlite_scans(conn: sqlite3.Connection, sql: str) -> Iterator[str]:
    params = dict.fromkeys(re.findall(r":(\w+)", sql))
    for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
        yield str(row[3])


def _sqlite_problem(detail: str) -> bool:
    """A full scan of a big table, unless through a partial index of unfinished steps."""
    match = re.match(r"SCAN (\w+)(?: AS \w+)?(?: USING (?:COVERING )?INDEX (\w+))?", detail)
    if not match:
        return False
    table, index = match.groups()
    aliases = {"w": "workflows", "s": "steps", "e": "ownership_events", "u": "steps"}
    return aliases.get(table, table) in BIG and index not in PARTIAL_UNFINISHED


async def test_sqlite_hot_queries_use_indexes_on_a_big_store(big: str) -> None:
    if not big.startswith("sqlite"):
        pytest.skip("the SQLite plans; PostgreSQL has its own test below")
    queries = load_queries("sqlite")
    conn = sqlite3.connect(big.removeprefix("sqlite:///"))
    try:
        assert conn.execute("SELECT count(*) FROM steps").fetchone()[0] > HISTORY_STEPS
        bad = {
            name: plan
            for name in HOT_SQLITE
            for plan in [" | ".join(_sqlite_scans(conn, queries[name]))]
            if any(_sqlite_problem(d) for d in plan.split(" | "))
        }
    finally:
        conn.close()
    assert not bad, json.dumps(bad, indent=1)


def _pg_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _pg_nodes(child)


def _pg_problem(node: dict[str, Any]) -> bool:
    return node.get("Relation Name") in BIG and node["Node Type"] == "Seq Scan"


@pytest.mark.parametrize("mode", ["auto", "force_generic_plan"])
async def test_postgres_hot_queries_use_indexes_on_a_big_store(big: str, mode: str) -> None:
    if big.startswith("sqlite"):
        pytest.skip("the PostgreSQL plans; SQLite has its own test above")
    queries = load_queries("postgres")
    conn = await asyncpg.connect(big, statement_cache_size=0)
    bad: dict[str, list[str]] = {}
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        for name in HOT_POSTGRES:
            await conn.execute(f"PREPARE hot AS {queries[name]}")
            try:
                types = await conn.fetchval(
                    "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'hot'"
                )
                args = ", ".join(_PG_VALUES[t] for t in types)
                text = await conn.fetchval(
                    f"EXPLAIN (FORMAT JSON) EXECUTE hot({args})"
                    if types
                    else "EXPLAIN (FORMAT JSON) EXECUTE hot"
                )
            finally:
                await conn.execute("DEALLOCATE hot")
            nodes = list(_pg_nodes(json.loads(text)[0]["Plan"]))
            if any(_pg_problem(n) for n in nodes):
                bad[name] = [
                    f"{n['Node Type']} {n.get('Relation Name', '')} {n.get('Index Name', '')}"
                    for n in nodes
                    if "Scan" in n["Node Type"]
                ]
    finally:
        await conn.close()
    assert not bad, json.dumps(bad, indent=1)
