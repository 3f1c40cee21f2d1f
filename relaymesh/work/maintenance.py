"""Maintenance: reclaim expired leases and dead owners' steps, promote due retries,
prune long-gone mesh members.

``run`` does a pass every ``maintenance.interval_ms`` on the one node that holds the
fenced ``leader_lease`` row; every other node stands by and retries for leadership
each interval, so when the leader dies another takes over within
``leader_lease_ms``. ``notify_member_dead`` is different: any node that sees a DEAD
verdict reclaims that node's steps at once, leader or not, because recovery in
seconds (not at lease expiry) is the point of the mesh. Reclaims are idempotent
(fenced by epoch in the store), so several nodes doing it at once is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

from relaymesh.clock import Clock
from relaymesh.exceptions import StoreError
from relaymesh.logging import get_logger
from relaymesh.settings import Settings
from relaymesh.store.base import LeaderLease, Store
from relaymesh.telemetry import WorkMetrics
from relaymesh.work.retention import Retention
from relaymesh.work.retry import backoff_ms

__all__ = ["RECLAIM_LIMIT", "Maintenance"]

log = get_logger("relaymesh.work.maintenance")

RECLAIM_LIMIT = 1000
"""Most steps one reclaim call moves; a pass that hits it runs again next interval."""
NOTIFY_TRIES = 5


class Maintenance:
    def __init__(
        self,
        *,
        store: Store,
        node: str,
        settings: Callable[[], Settings],
        metrics: WorkMetrics,
        clock: Clock,
        rng: random.Random | None = None,
        actor: str | None = None,
    ) -> None:
        """``actor`` names who acts in the audit trail: the node itself unless an
        operator runs the pass by hand (``relaymesh maintenance``)."""
        self.store = store
        self.node = node
        self._settings = settings
        self.metrics = metrics
        self.clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._actor = actor if actor is not None else f"node:{node}"
        self._stop = asyncio.Event()
        self._lease: LeaderLease | None = None
        self._last_prune_ms: int | None = None
        self._renewed_ms = 0
        self._retention = Retention(store=store, metrics=metrics, clock=clock, actor=self._actor)

    @property
    def is_leader(self) -> bool:
        return self._lease is not None

    async def run(self) -> None:
        """Until ``stop()``: each interval take or renew leadership and, while leader,
        do one ``run_once`` pass. Gives leadership up on the way out."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                settings = self._settings()
                try:
                    await self._tick(settings)
                except StoreError as exc:
                    self.metrics.store_errors.labels("maintenance").inc()
                    log.warning("store_error", op="maintenance", error=str(exc))
                    self._expire_belief(settings)
                except Exception:
                    log.exception("maintenance_error", node=self.node)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), settings.maintenance.interval_ms / 1000.0
                    )
        finally:
            await self._resign()

    def stop(self) -> None:
        self._stop.set()

    async def _tick(self, settings: Settings) -> None:
        lease = await self.store.acquire_leader(self.node, settings.maintenance.leader_lease_ms)
        if lease is None:
            if self._lease is not None:
                log.warning("maintenance_leadership_lost", node=self.node)
            self._lease = None
            self.metrics.is_leader.set(0)
            return
        if self._lease is None or self._lease.epoch != lease.epoch:
            log.info("maintenance_leader", node=self.node, epoch=lease.epoch)
        self._lease = lease
        self._renewed_ms = self.clock.monotonic_ms()
        self.metrics.is_leader.set(1)
        await self.run_once()

    def _expire_belief(self, settings: Settings) -> None:
        """Unable to renew: past ``leader_lease_ms`` another node may lead, so stop
        claiming to (the store's fencing makes acting on a stale belief harmless anyway)."""
        if (
            self._lease is not None
            and self.clock.monotonic_ms() - self._renewed_ms >= settings.maintenance.leader_lease_ms
        ):
            log.warning("maintenance_leadership_lost", node=self.node, why="renewal failed")
            self._lease = None
            self.metrics.is_leader.set(0)

    async def _resign(self) -> None:
        lease, self._lease = self._lease, None
        self.metrics.is_leader.set(0)
        if lease is None:
            return
        try:
            await self.store.release_leader(lease)
            log.info("maintenance_leadership_released", node=self.node, epoch=lease.epoch)
        except StoreError as exc:
            log.warning("store_error", op="release_leader", error=str(exc))

    async def run_once(self) -> dict[str, Any]:
        """One pass, leader or not (``relaymesh maintenance`` calls this directly).
        Returns what it did: ``{"expired": [ids], "dead_owners": [ids], "promoted": n,
        "pruned": n or None when the prune was not due, "retention": {table: n} or None
        when no retention pass was due}``."""
        all_settings = self._settings()
        settings = all_settings.maintenance
        expired = await self.store.reclaim_expired(RECLAIM_LIMIT)
        if expired:
            self.metrics.lease_expired_reclaimed.inc(len(expired))
            log.info("lease_expired_reclaimed", count=len(expired), step_ids=expired[:20])
        outcome = await self.store.reclaim_dead_owners(
            limit=RECLAIM_LIMIT,
            actor=self._actor,
            stale_after_ms=all_settings.worker.dead_owner_stale_after_ms,
        )
        dead = list(outcome.step_ids)
        if dead:
            self.metrics.dead_owner_reclaimed.inc(len(dead))
            log.info("dead_owner_reclaimed", count=len(dead), step_ids=dead[:20])
        promoted = await self.store.promote_retries(RECLAIM_LIMIT)
        pruned: int | None = None
        now = self.clock.monotonic_ms()
        if (
            self._last_prune_ms is None
            or now - self._last_prune_ms >= settings.mesh_prune_interval_ms
        ):
            pruned = await self.store.prune_mesh_nodes(
                older_than_ms=settings.mesh_prune_older_than_ms,
                limit=settings.mesh_prune_limit,
                actor=self._actor,
            )
            self._last_prune_ms = now
            if pruned:
                self.metrics.mesh_nodes_pruned.inc(pruned)
                log.info("mesh_nodes_pruned", count=pruned)
        retention = await self._retention.maybe_run(all_settings.retention)
        return {
            "expired": expired,
            "dead_owners": dead,
            "promoted": promoted,
            "pruned": pruned,
            "retention": retention,
        }

    async def notify_member_dead(self, name: str) -> list[str]:
        """Membership declared ``name`` DEAD: reclaim its RUNNING steps now, on this node
        whether or not it leads. Retries a store outage a few times; never raises.
        Returns the reclaimed step ids."""
        if name == self.node:
            return []  # Others think we are dead; we are not, and our worker has paused.
        reclaimed: list[str] = []
        failures = 0
        while True:
            try:
                outcome = await self.store.reclaim_dead_owners(
                    limit=RECLAIM_LIMIT,
                    actor=self._actor,
                    stale_after_ms=self._settings().worker.dead_owner_stale_after_ms,
                    nodes=[name],
                )
            except StoreError as exc:
                failures += 1
                self.metrics.store_errors.labels("reclaim_dead_owners").inc()
                log.warning("store_error", op="reclaim_dead_owners", dead=name, error=str(exc))
                if failures >= NOTIFY_TRIES:
                    # Maintenance's regular pass reclaims them (DEAD owners, or at expiry).
                    log.error("dead_owner_reclaim_failed", dead=name, reclaimed=len(reclaimed))
                    return reclaimed
                await asyncio.sleep(backoff_ms(failures, 200, 2000, self._rng) / 1000.0)
                continue
            ids = list(outcome.step_ids)
            if ids:
                self.metrics.dead_owner_reclaimed.inc(len(ids))
            reclaimed += ids
            if len(ids) < RECLAIM_LIMIT:
                break
        if outcome.still_heartbeating:
            # Gossip says DEAD but the store saw this node's heartbeat within the window:
            # a forged or mistaken verdict. Its steps are left to it (and to lease expiry
            # should it really be gone); the regular pass looks again every interval.
            self.metrics.dead_verdict_refused.inc(outcome.still_heartbeating)
            log.warning(
                "dead_verdict_refused",
                dead=name,
                still_heartbeating=outcome.still_heartbeating,
                reclaimed=len(reclaimed),
            )
        log.info("dead_owner_reclaimed", dead=name, count=len(reclaimed), step_ids=reclaimed[:20])
        return reclaimed
