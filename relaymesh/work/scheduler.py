"""Firing ``[schedules.NAME]``: on the maintenance leader only, each due tick is one
idempotent submit with key ``schedule:NAME:<fire time in epoch ms>``.

Exactly once across the mesh comes from the store, not from leadership: the key is
unique, so two nodes that both believe they lead (a paused old leader, a new one) make
one workflow, and a leader killed mid-fire either committed the tick (the next leader
sees it as the last fire) or wrote nothing (the next leader fires it). What is due is
read from the store each time (``last_schedule_fire``), so a new leader continues
where the old one stopped: of the ticks missed while nobody led, the latest is fired
and the older ones are skipped, counted (``schedule_fires_total{result="skipped"}``,
and ``skipped_ticks`` in the fire's audit row) and logged. A schedule never fired
starts from the moment this node first saw it while leading (no back-fill).

Times are the store's clock. Settings are read on every wake, so a reload adds,
changes, disables or removes schedules at once; the workflow file is read at each
fire. The loop sleeps until the next tick, at most ``POLL_MS``, to notice leadership
and reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from relaymesh.exceptions import StoreError, WorkflowError
from relaymesh.logging import get_logger
from relaymesh.schedules import DueTicks, due_ticks, fire_key
from relaymesh.settings import ScheduleSettings, Settings
from relaymesh.store.base import Store
from relaymesh.store.rules import check_idempotency_key
from relaymesh.telemetry import WorkMetrics
from relaymesh.work.agents import known_agents
from relaymesh.work.workflow import load_workflow_file

__all__ = ["POLL_MS", "Scheduler", "schedule_actor"]

log = get_logger("relaymesh.work.scheduler")

POLL_MS = 1000
"""Longest sleep between looks (leadership and reloads are noticed within it)."""
_LATE_MS = 5
"""Wake this long after a tick, so the store's clock has passed it."""


def schedule_actor(name: str) -> str:
    return f"schedule:{name}"


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        settings: Callable[[], Settings],
        metrics: WorkMetrics,
        is_leader: Callable[[], bool],
    ) -> None:
        self.store = store
        self._settings = settings
        self.metrics = metrics
        self._is_leader = is_leader
        self._stop = asyncio.Event()
        self._first_seen_ms: dict[str, int] = {}
        self._reported: set[tuple[str, int]] = set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self._stop.clear()
        while not self._stop.is_set():
            wait_ms = POLL_MS
            if self._is_leader():
                try:
                    wait_ms = min(POLL_MS, max(0, await self.fire_due()) + _LATE_MS)
                except StoreError as exc:
                    self.metrics.store_errors.labels("schedules").inc()
                    log.warning("store_error", op="schedules", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait_ms / 1000.0)

    async def fire_due(self) -> int:
        """Fire every enabled schedule's due tick; milliseconds until the next tick."""
        settings = self._settings()
        now_ms = await self.store.now_ms()
        next_ms = now_ms + POLL_MS
        for name, schedule in sorted(settings.schedules.items()):
            if not schedule.enabled:
                continue
            last = await self.store.last_schedule_fire(name)
            since_ms = last.fire_at_ms if last else self._first_seen_ms.setdefault(name, now_ms)
            due = due_ticks(
                cron=schedule.cron,
                every_s=schedule.every_s,
                timezone=schedule.timezone,
                since_ms=since_ms,
                now_ms=now_ms,
            )
            if due.fire_ms is not None:
                await self._fire(name, schedule, due, settings)
            next_ms = min(next_ms, due.next_ms)
        return next_ms - now_ms

    async def _fire(
        self, name: str, schedule: ScheduleSettings, due: DueTicks, settings: Settings
    ) -> None:
        assert due.fire_ms is not None
        key = fire_key(name, due.fire_ms)
        try:
            spec = load_workflow_file(
                schedule.workflow, known_agents=known_agents(settings), settings=settings
            )
        except WorkflowError as exc:
            # Tried again at every wake until the file is fixed; counted and logged once
            # per tick so a broken file does not flood the log.
            if (name, due.fire_ms) not in self._reported:
                self._reported.add((name, due.fire_ms))
                self.metrics.schedule_fires.labels(name, "invalid").inc()
                log.error("schedule_invalid", schedule=name, fire_at_ms=due.fire_ms, error=str(exc))
            return
        check_idempotency_key(key)
        outcome = await self.store.submit_workflow_once(
            spec,
            schedule_actor(name),
            idempotency_key=key,
            schedule=name,
            fire_at_ms=due.fire_ms,
            audit_details={"schedule": name, "fire_at": due.fire_ms, "skipped_ticks": due.skipped},
        )
        if not outcome.created:
            self.metrics.schedule_fires.labels(name, "duplicate").inc()
            log.info("schedule_duplicate", schedule=name, key=key, workflow_id=outcome.workflow_id)
            return
        self.metrics.schedule_fires.labels(name, "fired").inc()
        log.info("schedule_fired", schedule=name, key=key, workflow_id=outcome.workflow_id)
        if due.skipped:
            # Only the node whose fire was created reports the skip, so it is counted once.
            self.metrics.schedule_fires.labels(name, "skipped").inc(due.skipped)
            log.warning(
                "schedule_ticks_skipped", schedule=name, skipped=due.skipped, fired=due.fire_ms
            )
