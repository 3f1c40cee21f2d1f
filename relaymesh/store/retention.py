"""What retention and ``store stats`` share between the backends: the tables, the
column that dates each row, and the shapes returned. Pure data, no SQL."""

from __future__ import annotations

from dataclasses import dataclass

from relaymesh.exceptions import StoreError

__all__ = [
    "AGE_COLUMNS",
    "ROW_TABLES",
    "TABLES",
    "WORKFLOW_TABLES",
    "TableStats",
]

TABLES = (
    "workflows",
    "steps",
    "step_deps",
    "step_locks",
    "ownership_events",
    "lease_conflicts",
    "audit_log",
    "mesh_nodes",
    "settings_history",
    "workflow_keys",
    "leader_lease",
    "schema_version",
    "dispatch_stats",
)
"""Every table of the schema (ARCHITECTURE.md), in the order stats shows them."""

AGE_COLUMNS: dict[str, str] = {
    "workflows": "created_at_ms",
    "steps": "created_at_ms",
    "ownership_events": "at_ms",
    "lease_conflicts": "at_ms",
    "audit_log": "at_ms",
    "mesh_nodes": "status_changed_at_ms",
    "settings_history": "at_ms",
    "workflow_keys": "created_at_ms",
    "dispatch_stats": "bucket_ms",
}
"""The column that dates a row, for "oldest"; tables without one show None."""

WORKFLOW_TABLES = (
    "workflows",
    "steps",
    "step_deps",
    "step_locks",
    "ownership_events",
    "workflow_keys",
)
"""What removing a workflow removes, whole, in one transaction. Its ``workflow_keys``
row goes too, except the latest fire of each schedule: the scheduler reads that row
to fire each tick exactly once (``Store.last_schedule_fire``)."""

ROW_TABLES = ("lease_conflicts", "audit_log", "settings_history")
"""Tables retention trims row by row by age (``at_ms``)."""

ROW_QUERIES: dict[str, tuple[str, str]] = {
    "lease_conflicts": ("retention_delete_conflicts", "retention_count_conflicts"),
    "audit_log": ("retention_delete_audit", "retention_count_audit"),
    "settings_history": ("retention_delete_settings_history", "retention_count_settings_history"),
}
"""Per table of ``ROW_TABLES``: the names of its delete and count queries (both stores)."""


def row_queries(table: str) -> tuple[str, str]:
    """The delete and count query names for a table retention trims by age; anything
    else is a bug in the caller."""
    try:
        return ROW_QUERIES[table]
    except KeyError:
        raise StoreError(f"retention does not trim table {table!r}") from None


@dataclass(frozen=True, slots=True)
class TableStats:
    rows: int
    bytes: int | None
    """Table plus its indexes; None when the store cannot tell."""
    oldest_ms: int | None
    """The oldest row's date (``AGE_COLUMNS``), None when empty or undated."""
