"""Rows moving between stores: retention archives and ``store restore``.

One neutral row form for both backends: a row is a dict of column to value as the
table holds it, except the steps' ``depends_on`` and ``locks`` arrays, which are
lists (PostgreSQL ``text[]``; SQLite keeps JSON text). An archive document is one
whole workflow: ``{"format", "workflow": row, "steps": [rows], "step_deps": [rows],
"ownership_events": [rows], "workflow_keys": [rows]}``. Pure data, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ARCHIVE_FORMAT",
    "ARRAY_COLUMNS",
    "RESTORE_ORDER",
    "SERIAL_COLUMNS",
    "archive_documents",
    "neutral",
    "rows_of",
]

ARCHIVE_FORMAT = "relaymesh-archive/1"

ARRAY_COLUMNS: dict[str, tuple[str, ...]] = {"steps": ("depends_on", "locks")}
"""Columns that are lists in the neutral form."""

RESTORE_ORDER = (
    "workflows",
    "steps",
    "step_deps",
    "step_locks",
    "ownership_events",
    "workflow_keys",
    "lease_conflicts",
    "audit_log",
    "settings_history",
    "mesh_nodes",
)
"""The tables a backup restores, parents first (foreign keys). ``leader_lease`` and
``schema_version`` belong to the target store and are never overwritten."""

SERIAL_COLUMNS: dict[str, str] = {
    "ownership_events": "id",
    "lease_conflicts": "id",
    "audit_log": "id",
    "settings_history": "id",
}
"""Generated ids: dropped on load (the target numbers the rows anew, in the source's
order) so they never collide with rows the target already has."""


def neutral(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as read from either backend, in the neutral form."""
    out = dict(row)
    for column in ARRAY_COLUMNS.get(table, ()):
        value = out.get(column)
        if isinstance(value, str):
            out[column] = json.loads(value)
        elif value is not None:
            out[column] = list(value)
    return out


def rows_of(columns: Sequence[str], records: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Driver records (tuples) as dicts keyed by ``columns``."""
    return [dict(zip(columns, record, strict=True)) for record in records]


def archive_documents(
    workflows: Sequence[Mapping[str, Any]],
    steps: Sequence[Mapping[str, Any]],
    deps: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    keys: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Group neutral rows into one archive document per workflow, in ``workflows``'
    order (retention's: oldest first)."""
    step_to_workflow = {s["id"]: s["workflow_id"] for s in steps}
    docs: dict[str, dict[str, Any]] = {
        w["id"]: {
            "format": ARCHIVE_FORMAT,
            "workflow": dict(w),
            "steps": [],
            "step_deps": [],
            "ownership_events": [],
            "workflow_keys": [],
        }
        for w in workflows
    }
    for s in steps:
        docs[s["workflow_id"]]["steps"].append(dict(s))
    for d in deps:
        docs[step_to_workflow[d["step_id"]]]["step_deps"].append(dict(d))
    for e in events:
        docs[step_to_workflow[e["step_id"]]]["ownership_events"].append(dict(e))
    for k in keys:
        docs[k["workflow_id"]]["workflow_keys"].append(dict(k))
    return list(docs.values())
