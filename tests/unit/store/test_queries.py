from __future__ import annotations

import re
from pathlib import Path

import pytest

from relaymesh.store.queries import load_migrations, load_queries, own_tables, split_statements
from relaymesh.store.retention import ROW_QUERIES

STORE = Path(__file__).resolve().parents[3] / "relaymesh" / "store"


@pytest.mark.parametrize(
    ("backend", "module"), [("sqlite", "sqlite.py"), ("postgres", "postgres.py")]
)
def test_every_named_query_used_exists(backend: str, module: str) -> None:
    source = STORE / module
    assert source.exists(), f"the {backend} backend {module} is missing"
    queries = load_queries(backend)
    text = source.read_text()
    used = set(re.findall(r'Q\["(\w+)"\]', text)) | set(re.findall(r'pairs\("(\w+)"\)', text))
    # Q[f"retention_delete_{table}"]: every query of that prefix counts as run.
    prefixes = tuple(re.findall(r'Q\[f"(\w+)\{', text))
    used |= {name for name in queries if prefixes and name.startswith(prefixes)}
    assert used, "the backend calls its queries as Q[name]"
    used |= {name for pair in ROW_QUERIES.values() for name in pair}  # Q[row_queries(t)[i]]
    assert used <= set(queries), used - set(queries)
    unused = set(queries) - used
    assert not unused, f"named queries nobody runs: {unused}"
    assert all(sql and not sql.endswith(";") for sql in queries.values())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_are_numbered_without_gaps(backend: str) -> None:
    migrations = load_migrations(backend)
    assert migrations, f"no {backend} migrations"
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.statements for m in migrations)


def test_split_statements() -> None:
    text = "-- c\nCREATE TABLE a (\n  x INT\n);\nCREATE INDEX i ON a (x);\n\n"
    assert split_statements(text) == ("CREATE TABLE a (\n  x INT\n)", "CREATE INDEX i ON a (x)")


# Statements only one backend needs, each with the reason; everything else has one name
# (and the same meaning and parameters) in both files.
SQLITE_ONLY = {
    "data_version": "PRAGMA: the change check behind wait_for_work",
    "stats_freelist_count": "PRAGMA",
    "stats_auto_vacuum": "PRAGMA",
    "claim_events": "no INSERT inside a CTE in SQLite (PostgreSQL's claim_update does both)",
}
POSTGRES_ONLY = {
    "migrate_lock": "advisory lock (SQLite: BEGIN IMMEDIATE serialises migrators)",
    "now_ms": "the server's clock (SQLite: the host clock, read in Python)",
    "notify_work": "LISTEN/NOTIFY",
    "claim_fast": "one-round-trip claim (SQLite claims in process, no round trips)",
    "workflows_lock": "row locks (SQLite: BEGIN IMMEDIATE serialises writers)",
    "workflows_lock_for_steps": "row locks",
    "workflows_share_for_steps": "row locks (success commits share the workflow row)",
    "reclaim_lock_rows": "row locks",
    "retention_still_final": "re-check under row locks",
    "retention_step_ids": "row locks",
    "fence_success_landed": "idempotent retry after a connection died mid-COMMIT",
    "fence_failure_landed": "idempotent retry after a connection died mid-COMMIT",
    "fence_release_landed": "idempotent retry after a connection died mid-COMMIT",
    "backup_tables": "backup is a JSON dump (SQLite: the backup API)",
    "archive_candidates": "a read-only pick (SQLite: the delete's own candidates query)",
    "restore_columns": "information_schema (SQLite: PRAGMA table_info)",
    "restore_lock": "a table lock (SQLite: BEGIN IMMEDIATE serialises writers)",
    "restore_steps_seq": "the steps.seq sequence (SQLite has rowid)",
}


def test_both_backends_name_the_same_queries() -> None:
    sqlite, postgres = set(load_queries("sqlite")), set(load_queries("postgres"))
    assert SQLITE_ONLY.keys() <= sqlite, SQLITE_ONLY.keys() - sqlite
    assert POSTGRES_ONLY.keys() <= postgres, POSTGRES_ONLY.keys() - postgres
    assert sqlite - SQLITE_ONLY.keys() == postgres - POSTGRES_ONLY.keys(), (
        f"only in sqlite: {sorted(sqlite - postgres - SQLITE_ONLY.keys())}; "
        f"only in postgres: {sorted(postgres - sqlite - POSTGRES_ONLY.keys())}"
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_named_query_is_one_statement(backend: str) -> None:
    # A merge once left a "=======" line after a query: SQLite then refused the PRAGMA
    # ("one statement at a time") and PostgreSQL's stats query was a syntax error.
    for name, sql in load_queries(backend).items():
        assert not re.search(r"^(<{7}|={7}|>{7})", sql, re.M), f"{name}: a merge marker"
        assert len(split_statements(sql + ";")) == 1, f"{name} holds more than one statement"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_own_tables_are_what_the_migrations_create(backend: str) -> None:
    tables = own_tables(backend)
    assert {"workflows", "steps", "workflow_keys", "schema_version", "audit_log"} <= set(tables)
    assert all(t == t.lower() and t.isidentifier() for t in tables)
