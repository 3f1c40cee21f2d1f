from __future__ import annotations

import re
from pathlib import Path

import pytest

from relaymesh.store.queries import load_migrations, load_queries, split_statements
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
    assert used, "the backend calls its queries as Q[name]"
    used |= {name for pair in ROW_QUERIES.values() for name in pair}  # Q[row_queries(t)[i]]
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
