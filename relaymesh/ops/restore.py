"""``relaymesh store restore PATH``: a backup into an empty store, or archives back in.

What PATH is decides what happens (``detect``):

* a SQLite database file (``store backup`` of a SQLite store) or a JSON dump
  (``store backup`` of a PostgreSQL store): every RelayMesh table is loaded in one
  transaction into a store that has no workflow yet (``Store.restore_tables``
  refuses any other). Either backend's backup loads into either backend.
* a retention archive file, or a directory of them: each workflow is imported
  unless the store already has it (skipped and counted), so running it twice is
  harmless. A workflow archived twice (replayed after its first copy was written)
  is imported from its latest copy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from relaymesh.exceptions import InvalidStateError
from relaymesh.store.base import Store
from relaymesh.store.transfer import RESTORE_ORDER, SERIAL_COLUMNS
from relaymesh.work.archive import ArchiveReader, archive_files

__all__ = ["detect", "restore"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_IMPORT_BATCH = 500
"""Archive documents per import transaction."""


def detect(path: str) -> str:
    """``sqlite``, ``json`` or ``archive``; ``InvalidStateError`` for anything else."""
    if os.path.isdir(path):
        return "archive"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise InvalidStateError(f"cannot read {path!r}: {exc.strerror}") from exc
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(b"\x1f\x8b"):
        return "archive"
    if head.lstrip().startswith(b"{"):
        return "json"
    raise InvalidStateError(
        f"{path!r} is neither a store backup (SQLite file or JSON dump) nor a retention archive"
    )


def _read_sqlite(path: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        tables: dict[str, list[dict[str, Any]]] = {}
        for table in RESTORE_ORDER:
            if table not in present:
                continue
            # Table names come from RESTORE_ORDER; ids keep the source's order.
            order = f" ORDER BY {SERIAL_COLUMNS[table]}" if table in SERIAL_COLUMNS else ""
            cursor = conn.execute(f"SELECT * FROM {table}{order}")
            columns = [d[0] for d in cursor.description]
            tables[table] = [dict(zip(columns, r, strict=True)) for r in cursor]
        return int(version or 0), tables
    except sqlite3.Error as exc:
        raise InvalidStateError(f"cannot read the SQLite backup {path!r}: {exc}") from exc
    finally:
        conn.close()


def _read_json(path: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        tables = doc["tables"]
        version = int(doc.get("schema_version") or 0)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidStateError(f"{path!r} is not a RelayMesh JSON backup: {exc}") from exc
    return version, {t: tables[t] for t in RESTORE_ORDER if t in tables}


async def restore(store: Store, path: str) -> dict[str, Any]:
    """Load ``path`` (see the module docstring) into ``store``; the result document of
    ``store restore --json``."""
    kind = detect(path)
    if kind == "archive":
        return await _import_archives(store, path)
    read = _read_sqlite if kind == "sqlite" else _read_json
    version, tables = await asyncio.to_thread(read, path)
    current = await store.migrate()
    if version > current:
        raise InvalidStateError(
            f"the backup has schema version {version}, newer than this store's {current}: "
            "upgrade RelayMesh first"
        )
    rows = await store.restore_tables(tables)
    return {
        "store": store.url,
        "path": _absolute(path),
        "kind": "sqlite database" if kind == "sqlite" else "json dump",
        "schema_version": version,
        "rows": rows,
    }


async def _import_archives(store: Store, path: str) -> dict[str, Any]:
    files = archive_files(path)
    # First pass: the latest copy of each workflow (by its updated_at_ms), so a
    # workflow archived twice comes back as it was last.
    latest: dict[str, int] = {}
    damaged = 0
    for file in files:
        reader = ArchiveReader(file)
        for doc in reader.documents():
            wf = doc["workflow"]
            latest[wf["id"]] = max(latest.get(wf["id"], -1), int(wf["updated_at_ms"]))
        damaged += reader.damaged
    imported = skipped = 0
    batch: list[dict[str, Any]] = []
    for doc in _latest_copies(files, latest):
        batch.append(doc)
        if len(batch) >= _IMPORT_BATCH:
            done, already = await store.import_workflows(batch)
            imported, skipped, batch = imported + done, skipped + already, []
    if batch:
        done, already = await store.import_workflows(batch)
        imported, skipped = imported + done, skipped + already
    return {
        "store": store.url,
        "path": _absolute(path),
        "kind": "archive",
        "files": len(files),
        "imported": imported,
        "skipped": skipped,
        "damaged": damaged,
    }


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _latest_copies(files: list[str], latest: dict[str, int]) -> Iterator[dict[str, Any]]:
    wanted = dict(latest)
    for file in files:
        for doc in ArchiveReader(file).documents():
            wf = doc["workflow"]
            if wanted.get(wf["id"]) == int(wf["updated_at_ms"]):
                del wanted[wf["id"]]  # one copy only, even if two are identical
                yield doc
