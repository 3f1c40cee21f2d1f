"""Named SQL and numbered migrations, loaded from ``store/sql/``.

Each backend keeps every statement it runs in one file, ``<backend>_queries.sql``,
as blocks headed ``-- name: <query_name>``; code calls them by name. Migrations are
``<backend>_<NNNN>_<what>.sql``, applied in number order. Pure file reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Migration", "load_migrations", "load_queries", "own_tables", "split_statements"]

_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_CREATE_TABLE_RE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
_DROP_TABLE_RE = re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(\w+)", re.I)
_MIGRATION_RE = re.compile(r"^(?P<backend>[a-z]+)_(?P<number>\d{4})_(?P<what>\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _sql_dir() -> resources.abc.Traversable:
    return resources.files("relaymesh.store").joinpath("sql")


@cache
def load_queries(backend: str) -> dict[str, str]:
    """Query name to SQL text for ``backend`` (``sqlite`` or ``postgres``)."""
    text = _sql_dir().joinpath(f"{backend}_queries.sql").read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = _NAME_RE.match(line)
        if match:
            if name is not None:
                queries[name] = "\n".join(lines).strip()
            name, lines = match.group(1), []
            if name in queries:
                raise ValueError(f"query {name!r} defined twice for {backend}")
        elif name is not None and not line.lstrip().startswith("--"):
            lines.append(line)
    if name is not None:
        queries[name] = "\n".join(lines).strip()
    return {key: sql.rstrip(";").strip() for key, sql in queries.items()}


def split_statements(text: str) -> tuple[str, ...]:
    """Split a migration into statements at lines ending with ``;`` (no ``;`` at a line's
    end inside a statement, which holds for our migrations; PostgreSQL function bodies
    are written on one line)."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return tuple(statements)


@cache
def load_migrations(backend: str) -> tuple[Migration, ...]:
    """Every migration of ``backend`` in version order; versions start at 1, no gaps."""
    found: list[Migration] = []
    for entry in _sql_dir().iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match is None or match.group("backend") != backend:
            continue
        found.append(
            Migration(
                version=int(match.group("number")),
                name=match.group("what"),
                statements=split_statements(entry.read_text(encoding="utf-8")),
            )
        )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(
                f"{backend} migrations skip from {expected - 1} to {migration.version}"
            )
    return tuple(found)


@cache
def own_tables(backend: str) -> tuple[str, ...]:
    """The tables RelayMesh's migrations leave in place (plus ``schema_version``), by
    name: what a backup takes, whatever else shares the schema."""
    tables = {"schema_version"}
    for migration in load_migrations(backend):
        for statement in migration.statements:
            tables.update(m.lower() for m in _CREATE_TABLE_RE.findall(statement))
            tables.difference_update(m.lower() for m in _DROP_TABLE_RE.findall(statement))
    return tuple(sorted(tables))
