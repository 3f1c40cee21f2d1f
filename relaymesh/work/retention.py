"""Retention: what is past its keeping time goes, in bounded batches.

``plan`` (pure) turns ``[retention]`` settings into what one pass removes: final
workflows by status and age, and the rows of the trail tables by age. ``Retention``
runs a pass on the maintenance leader every ``retention.interval_s``: each batch is
one short store transaction of at most ``batch_size`` workflows (or rows), so a huge
backlog never holds SQLite's write lock or a long PostgreSQL transaction; at most
``max_batches`` per kind per pass, the rest waits for the next pass.

Rules (the store enforces them inside each batch's transaction):

* A workflow is removed whole (steps, step_deps, step_locks, ownership events) or not
  at all, and only when it is final. SUCCEEDED and CANCELLED after
  ``finished_after_s``. FAILED workflows hold unreplayed dead letters: they are kept
  until ``remove_dead_letters`` is set, then removed ``dead_letter_after_s`` after
  they failed. A replayed dead letter makes its workflow RUNNING again, so it is
  untouchable until it is final once more.
* ``lease_conflicts``, ``audit_log`` and ``settings_history`` rows go by their own age.
* Long-gone ``mesh_nodes`` rows are maintenance's mesh prune
  (``maintenance.mesh_prune_older_than_ms``), not repeated here.

Each removed row is counted in ``relaymesh_retention_deleted_total{table}``; a pass
that removed anything writes one ``retention`` audit row with the totals and then,
on SQLite, gives free pages back in bounded incremental-vacuum steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relaymesh.clock import Clock
from relaymesh.exceptions import StoreError
from relaymesh.logging import get_logger
from relaymesh.model import WorkflowStatus
from relaymesh.settings import RetentionSettings
from relaymesh.store.base import Store
from relaymesh.telemetry import WorkMetrics
from relaymesh.work.archive import write_documents

__all__ = ["Plan", "Retention", "RetentionReport", "plan", "preview", "run_pass", "stats_document"]

log = get_logger("relaymesh.work.retention")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass removes: ``(status, older_than_ms)`` per workflow kind and
    ``(table, older_than_ms)`` per trail table; a kind with retention off is absent."""

    workflows: tuple[tuple[WorkflowStatus, int], ...]
    tables: tuple[tuple[str, int], ...]
    batch_size: int
    max_batches: int


def plan(settings: RetentionSettings) -> Plan:
    """Pure: the settings as a plan. An age of 0 keeps that kind forever."""
    workflows: list[tuple[WorkflowStatus, int]] = []
    if settings.finished_after_s > 0:
        age_ms = settings.finished_after_s * 1000
        workflows += [(WorkflowStatus.SUCCEEDED, age_ms), (WorkflowStatus.CANCELLED, age_ms)]
    if settings.remove_dead_letters and settings.dead_letter_after_s > 0:
        workflows.append((WorkflowStatus.FAILED, settings.dead_letter_after_s * 1000))
    tables = [
        (table, age_s * 1000)
        for table, age_s in (
            ("lease_conflicts", settings.conflicts_after_s),
            ("audit_log", settings.audit_after_s),
            ("settings_history", settings.settings_history_after_s),
        )
        if age_s > 0
    ]
    return Plan(tuple(workflows), tuple(tables), settings.batch_size, settings.max_batches)


@dataclass(slots=True)
class RetentionReport:
    deleted: dict[str, int] = field(default_factory=dict)
    """Rows removed per table (only tables with some)."""
    batches: int = 0
    reclaimed_pages: int = 0
    archived: int = 0
    """Workflows written to ``archive_dir`` this pass."""
    archive_error: str | None = None
    """Why the archive could not be written (then nothing more was deleted)."""

    def add(self, counts: Mapping[str, int]) -> None:
        for table, n in counts.items():
            if n:
                self.deleted[table] = self.deleted.get(table, 0) + n


async def run_pass(
    store: Store, settings: RetentionSettings, metrics: WorkMetrics, *, actor: str
) -> RetentionReport:
    """One retention pass (see the module docstring). A store error stops the pass;
    what earlier batches removed stays removed, counted and audited."""
    the_plan = plan(settings)
    report = RetentionReport()
    try:
        for status, age_ms in the_plan.workflows:
            for _ in range(the_plan.max_batches):
                if settings.archive_dir is None:
                    counts = await store.retention_delete_workflows(
                        status, older_than_ms=age_ms, limit=the_plan.batch_size
                    )
                    seen = counts.get("workflows", 0)
                else:
                    seen, counts = await _archive_then_delete(
                        store,
                        settings.archive_dir,
                        status,
                        age_ms=age_ms,
                        limit=the_plan.batch_size,
                        report=report,
                    )
                    if report.archive_error is not None:
                        metrics.retention_archive_errors.inc()
                        break
                _count(report, metrics, counts)
                if seen < the_plan.batch_size:
                    break
                await asyncio.sleep(0)  # let the node's other work run between batches
            if report.archive_error is not None:
                break  # the directory is broken: no more workflow deletes this pass
        for table, age_ms in the_plan.tables:
            for _ in range(the_plan.max_batches):
                n = await store.retention_delete_rows(
                    table, older_than_ms=age_ms, limit=the_plan.batch_size
                )
                _count(report, metrics, {table: n})
                if n < the_plan.batch_size:
                    break
                await asyncio.sleep(0)
    finally:
        if report.deleted or report.archive_error is not None:
            await _audit(store, report, actor)
    if report.deleted and settings.vacuum_pages > 0:
        for _ in range(settings.vacuum_max_steps):
            freed = await store.reclaim_space(settings.vacuum_pages)
            report.reclaimed_pages += freed
            if freed < settings.vacuum_pages:
                break
    if report.deleted:
        log.info("retention_pass", deleted=report.deleted, batches=report.batches)
    return report


async def _archive_then_delete(
    store: Store,
    directory: str,
    status: WorkflowStatus,
    *,
    age_ms: int,
    limit: int,
    report: RetentionReport,
) -> tuple[int, dict[str, int]]:
    """One archived batch: read the next workflows whole, append them to their day
    files and fsync, and only then delete exactly those (the store re-checks that
    each is still final: a workflow replayed meanwhile stays, its copy in the archive
    is superseded by a later one). Returns how many were read and the rows removed;
    an archive failure sets ``report.archive_error`` and deletes nothing."""
    docs = await store.retention_export_workflows(status, older_than_ms=age_ms, limit=limit)
    if not docs:
        return 0, {}
    try:
        await asyncio.to_thread(write_documents, directory, docs)
    except OSError as exc:
        report.archive_error = f"cannot write retention archive in {directory!r}: {exc}"
        log.error("retention_archive_failed", directory=directory, error=str(exc))
        return len(docs), {}
    report.archived += len(docs)
    ids = [d["workflow"]["id"] for d in docs]
    counts = await store.retention_delete_workflows(
        status, older_than_ms=age_ms, limit=limit, ids=ids
    )
    return len(docs), counts


def _count(report: RetentionReport, metrics: WorkMetrics, counts: Mapping[str, int]) -> None:
    report.batches += 1
    report.add(counts)
    for table, n in counts.items():
        if n:
            metrics.retention_deleted.labels(table).inc(n)


async def _audit(store: Store, report: RetentionReport, actor: str) -> None:
    try:
        await store.record_audit(
            actor,
            "retention",
            None,
            {
                "deleted": dict(report.deleted),
                "batches": report.batches,
                **({"archived": report.archived} if report.archived else {}),
                **({"archive_error": report.archive_error} if report.archive_error else {}),
            },
        )
    except StoreError as exc:  # the deletions stand; the metric still counts them
        log.warning("store_error", op="retention_audit", error=str(exc))


async def preview(store: Store, settings: RetentionSettings) -> dict[str, int]:
    """What the next pass would remove if it were unbounded: workflows per status
    (``workflows:SUCCEEDED``...) and rows per trail table."""
    the_plan = plan(settings)
    out: dict[str, int] = {}
    for status, age_ms in the_plan.workflows:
        out[f"workflows:{status.value}"] = await store.retention_count_workflows(
            status, older_than_ms=age_ms
        )
    for table, age_ms in the_plan.tables:
        out[table] = await store.retention_count_rows(table, older_than_ms=age_ms)
    return out


class Retention:
    """Runs ``run_pass`` at most every ``retention.interval_s`` (monotonic clock);
    maintenance calls ``maybe_run`` on every pass it makes as leader."""

    def __init__(self, *, store: Store, metrics: WorkMetrics, clock: Clock, actor: str) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.actor = actor
        self._last_ms: int | None = None

    async def maybe_run(self, settings: RetentionSettings) -> dict[str, int] | None:
        """The rows removed per table, or None when no pass was due."""
        now = self.clock.monotonic_ms()
        if self._last_ms is not None and now - self._last_ms < settings.interval_s * 1000:
            return None
        self._last_ms = now
        report = await run_pass(self.store, settings, self.metrics, actor=self.actor)
        return report.deleted


async def stats_document(store: Store, settings: RetentionSettings) -> dict[str, Any]:
    """``relaymesh store stats --json``: ``{"store", "tables": {NAME: {"rows", "bytes",
    "oldest"}}, "next_pass": preview(...)}`` with ``oldest`` in epoch ms (None when the
    table is empty or its rows are undated) and ``bytes`` None when unknown."""
    tables = await store.table_stats()
    return {
        "store": store.url,
        "tables": {
            name: {"rows": t.rows, "bytes": t.bytes, "oldest": t.oldest_ms}
            for name, t in tables.items()
        },
        "next_pass": await preview(store, settings),
    }
