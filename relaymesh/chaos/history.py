"""The recorded history of a run, as the checker reads it.

Four sources, each optional but the store:

* the **store** (any backend, through the ``Store`` protocol only): every step, every
  ownership event (claims, reclaims, releases, with epochs and store-clock times),
  every lease conflict;
* the **journal** of script agents (``examples/agents/record.py``): one JSON line per
  ``start``/``done`` of a run, with ``step_id``, ``epoch`` (the lease epoch the run
  held), ``node`` and ``at_ms``;
* the **events** file a harness writes: faults it injected (``kill``, ``stop``,
  ``partition``, ``pg_failover`` ...), workflows it submitted (``submitted`` with the
  step count) and samples of each node's view of itself (``view`` with
  ``local_alive``), each with ``at_ms``;
* the nodes' own **logs** (JSON lines): ``lease_lost`` (a fenced write the store
  refused) and ``worker_paused`` / ``worker_resumed`` (safe mode).

All times are epoch milliseconds. The store's clock and the wall clock of the machine
that wrote the journal and events must be the same clock (one host, or hosts kept in
sync): the checker compares them. Loading is the only I/O; the promises
(``promises.py``) are pure functions of a ``History``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from relaymesh.exceptions import RelayMeshError
from relaymesh.store import open_store

__all__ = [
    "Conflict",
    "HarnessEvent",
    "History",
    "HistoryError",
    "JournalEntry",
    "LogRecord",
    "Ownership",
    "StepView",
    "load_events",
    "load_history",
    "load_journal",
    "load_node_logs",
]

_ALL = 1_000_000_000  # "no limit" for the store's list calls


class HistoryError(RelayMeshError):
    """A history source cannot be read (missing file, unreadable store)."""


@dataclass(frozen=True, slots=True)
class StepView:
    id: str
    workflow_id: str
    name: str
    agent: str
    status: str
    lease_epoch: int
    owner_node: str | None
    locks: tuple[str, ...] = ()
    result: Any = None
    finished_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Ownership:
    id: int
    step_id: str
    node: str | None
    event: str
    """claimed | released | lease_expired | dead_owner | cancelled | replayed"""
    lease_epoch: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class Conflict:
    step_id: str
    node: str
    event: str
    expected_epoch: int
    actual_epoch: int | None
    actual_status: str | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    phase: str
    step_id: str
    epoch: int
    node: str | None
    at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HarnessEvent:
    kind: str
    at_ms: int
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True, slots=True)
class LogRecord:
    node: str
    event: str
    at_ms: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class History:
    steps: list[StepView] = field(default_factory=list)
    ownership: list[Ownership] = field(default_factory=list)
    """Oldest first (by id)."""
    conflicts: list[Conflict] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    events: list[HarnessEvent] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    skipped_lines: int = 0
    """Lines of the journal, events or logs that were not JSON records (counted, not fatal)."""


# -- files ---------------------------------------------------------------------------------


def _json_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror or exc}") from exc
    records: list[dict[str, Any]] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(doc, dict):
            records.append(doc)
        else:
            skipped += 1
    return records, skipped


def load_journal(path: Path) -> tuple[list[JournalEntry], int]:
    docs, skipped = _json_lines(path)
    entries: list[JournalEntry] = []
    for d in docs:
        try:
            at = d.get("at_ms")
            entries.append(
                JournalEntry(
                    str(d["phase"]),
                    str(d["step_id"]),
                    int(d["epoch"]),
                    None if d.get("node") is None else str(d["node"]),
                    None if at is None else int(at),
                )
            )
        except (KeyError, TypeError, ValueError):
            skipped += 1
    return entries, skipped


def load_events(path: Path) -> tuple[list[HarnessEvent], int]:
    docs, skipped = _json_lines(path)
    events: list[HarnessEvent] = []
    for d in docs:
        try:
            kind, at = str(d.pop("kind")), int(d.pop("at_ms"))
        except (KeyError, TypeError, ValueError):
            skipped += 1
            continue
        events.append(HarnessEvent(kind, at, d))
    events.sort(key=lambda e: e.at_ms)
    return events, skipped


def _iso_ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def load_node_logs(paths: Iterable[Path]) -> tuple[list[LogRecord], int]:
    """JSON log lines that name their node and carry a timestamp; the rest is skipped."""
    records: list[LogRecord] = []
    skipped = 0
    for path in paths:
        docs, bad = _json_lines(path)
        skipped += bad
        for d in docs:
            node, event, stamp = d.get("node"), d.get("event"), d.get("timestamp")
            if not (isinstance(node, str) and isinstance(event, str) and isinstance(stamp, str)):
                continue
            try:
                at = _iso_ms(stamp)
            except ValueError:
                skipped += 1
                continue
            records.append(LogRecord(node, event, at, d))
    records.sort(key=lambda r: r.at_ms)
    return records, skipped


# -- the store -----------------------------------------------------------------------------


async def _load_store(url: str) -> tuple[list[StepView], list[Ownership], list[Conflict]]:
    store = await open_store(url, migrate=False)
    try:
        steps = [
            StepView(
                s.id,
                s.workflow_id,
                s.name,
                s.agent,
                str(s.status.value),
                int(s.lease_epoch),
                s.owner_node,
                tuple(s.locks),
                s.result,
                s.finished_at_ms,
            )
            for s in await store.list_steps(limit=_ALL)
        ]
        ownership = [
            Ownership(e.id, e.step_id, e.node, e.event, int(e.lease_epoch), int(e.at_ms))
            for e in await store.list_ownership_events(limit=_ALL)
        ]
        conflicts = [
            Conflict(
                x.step_id,
                x.node,
                x.event,
                int(x.expected_epoch),
                None if x.actual_epoch is None else int(x.actual_epoch),
                x.actual_status,
                int(x.at_ms),
            )
            for x in await store.list_conflicts(limit=_ALL)
        ]
    finally:
        await store.close()
    ownership.sort(key=lambda e: e.id)
    conflicts.sort(key=lambda x: x.at_ms)
    return steps, ownership, conflicts


async def load_history(
    store_url: str,
    *,
    journal: Path | None = None,
    events: Path | None = None,
    node_logs: Sequence[Path] = (),
) -> History:
    """Read every source. Raises ``HistoryError`` (a file) or the store's own
    ``RelayMeshError`` (``StoreUnavailableError`` when it cannot be reached)."""
    steps, ownership, conflicts = await _load_store(store_url)
    history = History(steps, ownership, conflicts)
    if journal is not None:
        history.journal, bad = load_journal(journal)
        history.skipped_lines += bad
    if events is not None:
        history.events, bad = load_events(events)
        history.skipped_lines += bad
    if node_logs:
        history.logs, bad = load_node_logs(node_logs)
        history.skipped_lines += bad
    return history
