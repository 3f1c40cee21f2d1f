from __future__ import annotations

import re
from pathlib import Path

import pytest

from relaymesh.store.queries import load_migrations, load_queries, own_tables, split_statements

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
    assert used <= set(queries), used - set(queries)
    assert set(queries) <= used, f"named queries nobody runs: {set(queries) - used}"
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
