"""The composition root: builds a node from its settings, wires it, owns its signals.

``Node`` follows uvicorn's lifecycle, ``startup()`` -> ``run()`` -> ``shutdown()``:

* startup: membership first (gossip needs no store), then the store (opened and
  migrated in the background with backoff, so a node whose store is down keeps
  gossiping), the worker and maintenance once the store answers, and the HTTP
  server (``/healthz``, ``/metrics``, ``/api/...``) when ``node.http`` is set.
  ``READY=1`` goes to systemd once membership and HTTP are listening.
* run: until SIGTERM/SIGINT. Membership events are forwarded: the view is written
  to ``mesh_nodes`` (debounced, plus a periodic refresh that doubles as the store
  health probe behind ``/healthz``, see ``relaymesh.ops.health``) and a DEAD/LEFT verdict
  reaches ``Maintenance.notify_member_dead`` at once, so a dead owner's steps are
  reclaimed in seconds instead of at lease expiry. Safe mode: the worker asks
  ``membership.local_is_alive`` before each claim (``worker.pause_when_local_not_alive``).
* shutdown (SIGTERM): ``STOPPING=1``, the worker drains (stops claiming, lets running
  steps finish up to ``worker.drain_timeout_s``, releases the rest so other nodes
  take them at once), the node leaves the mesh (LEAVE), everything closes. Bounded:
  drain timeout + ``LEAVE_TIMEOUT_S`` + ``CLOSE_TIMEOUT_S``. A second signal cuts the
  drain's wait short (running steps are killed and released at once); a third
  abandons the drain.

Settings reload, on SIGHUP or on a ``reload_request`` the operator recorded in the
store (``relaymesh reload-settings``, polled every ``RELOAD_POLL_S``): the file and
environment are read again, the reloadable sections (``RELOADABLE_SECTIONS``) are
applied to the worker and maintenance, and the changed field names (never values)
are written to ``settings_history``. Changes to the other sections are logged as
needing a restart and not applied. A ``gossip_sync_request`` for this node (``relaymesh
gossip-sync``) is picked up by the same poller: one anti-entropy exchange now, its
merges answered in the audit trail.

Dispatch statistics: the worker's one-hour window (``work/dispatch.py``) is written to
the store every ``dispatch.summary_interval_ms`` (and once more on shutdown), so
``mesh-summary`` reads the whole mesh's window from ``dispatch_stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relaymesh.clock import Clock, SystemClock
from relaymesh.exceptions import (
    ConfigError,
    RelayMeshError,
    StoreGoneError,
    StoreUnavailableError,
)
from relaymesh.exposure import check_gossip_exposure, check_http_exposure
from relaymesh.logging import get_logger
from relaymesh.membership.config import SwimConfig
from relaymesh.membership.protocol import MemberChanged
from relaymesh.model import MemberStatus, StepStatus
from relaymesh.ops import services
from relaymesh.ops.health import StoreHealth, worker_stall_after_ms, worker_stall_reason
from relaymesh.ops.mesh_writer import MeshReport
from relaymesh.ops.metrics import Metrics
from relaymesh.ops.systemd import SystemdNotifier, capture_signals
from relaymesh.settings import RELOADABLE_SECTIONS, Settings, diff_fields, load_settings
from relaymesh.store.base import Store

__all__ = ["Node", "default_node_name", "run_node", "serve_web"]

log = get_logger(__name__)

LEAVE_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 3.0
DRAIN_SLACK_S = 5.0
"""Beyond drain_timeout_s: killing agents, releasing leases, flushing commits."""
MESH_DEBOUNCE_S = 0.05
"""Membership changes arriving together are written in one store transaction."""
MESH_REFRESH_S = 5.0
"""The view is written this often even without changes (only the rows that changed,
or our own row as the store probe); more often when ``node.store_unhealthy_after_s``
is short (``PROBES_PER_WINDOW``)."""
MESH_FULL_REWRITE_MS = 60_000
"""Every row of the view is written again this often (and after any failed write), so
a row lost behind the writer's back heals (``ops/mesh_writer.py``)."""
PROBES_PER_WINDOW = 4
"""Store probes (mesh writes) per ``store_unhealthy_after_s``, so one slow probe
cannot turn a healthy store unhealthy."""
RELOAD_POLL_S = 2.0
METRICS_STORE_TTL_S = 5.0
"""Store figures on /metrics (step counts, queue lag) are at most this old."""
STORE_RETRY_FIRST_S = 0.2
STORE_RETRY_MAX_S = 5.0

SettingsLoader = Callable[[], Settings]


def default_node_name(bind: str) -> str:
    """``<hostname>-<bind port>``: stable across restarts as long as the port is."""
    port = bind.rpartition(":")[2]
    suffix = port if port and port != "0" else str(os.getpid())
    return f"{socket.gethostname()}-{suffix}"


class Node:
    """One RelayMesh daemon. Build it, ``await startup()``, ``await run()``,
    ``await shutdown()`` (or ``await serve()`` for all three with signals)."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload: SettingsLoader | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        create_store: bool = True,
    ) -> None:
        node = settings.node
        if node.name is None:
            settings = settings.model_copy(
                update={"node": node.model_copy(update={"name": default_node_name(node.bind)})}
            )
        self.settings = settings
        self.name: str = settings.node.name or ""
        self._reload_loader = reload
        self._create_store = create_store
        """Whether a SQLite store file that does not exist may be created; ``node run``
        passes ``--create-store`` (default off), programs embedding a node get True."""
        self.metrics = Metrics()
        self.notifier = SystemdNotifier()
        self.store: Store | None = None
        self.membership: Any = None
        self.worker: Any = None
        self.maintenance: Any = None
        self.http: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._store_ready = asyncio.Event()
        self._mesh_dirty = asyncio.Event()
        # Bounded like the member table (the core's default: not a setting).
        self._mesh_report = MeshReport(
            max_rows=SwimConfig().max_members, full_every_ms=MESH_FULL_REWRITE_MS
        )
        self._signals = 0
        self._reload_cursor = 0
        self._sync_cursor = 0
        self._reload_lock = asyncio.Lock()
        self._dead_pending: set[str] = set()
        self._worker_task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._maintenance_task: asyncio.Task[None] | None = None
        self.fatal: RelayMeshError | None = None
        """Why the node stopped on its own (store unusable, worker crashed); ``serve`` raises it."""
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._scrape_lock = asyncio.Lock()
        self._store_figures_at_s = -METRICS_STORE_TTL_S
        self.metrics_store_refreshes = 0
        """How many times a scrape read the store (tests check the cache with it)."""
        self.store_health = StoreHealth(
            unhealthy_after_ms=int(settings.node.store_unhealthy_after_s * 1000),
            started_ms=self._clock.monotonic_ms(),
        )
        self._store_reason: str | None = None
        """The last store verdict logged, so each change is logged once."""
        self._worker_started_ms = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        """Start membership, the store connection (background) and HTTP. Raises
        ``RelayMeshError`` when the node cannot start at all (bad address, bad seeds)."""
        from relaymesh.membership.driver import MembershipService

        s = self.settings
        self.check_exposure()
        metadata = {"pid": str(os.getpid())}
        if s.node.http:
            metadata["http"] = s.node.http
        self.membership = MembershipService(
            name=self.name,
            bind=s.node.bind,
            advertise=s.node.advertise,
            seeds=_load_seeds(s.node.seeds_file),
            settings=s.gossip,
            metrics=self.metrics,
            state_dir=Path(s.node.state_dir) if s.node.state_dir else _default_state_dir(s),
            metadata=metadata,
        )
        self.membership.subscribe(self._on_member_changed)
        await self.membership.start()
        if s.node.http:
            await self._start_http(s.node.http)
        self._spawn(self._open_store(), "store-open")
        self._spawn(self.notifier.run_watchdog(), "sd-watchdog")
        self.notifier.ready(status=f"node {self.name} running")
        log.info(
            "node_ready",
            node=self.name,
            address=_fmt_address(self.membership.address),
            http=f"{self.http.host}:{self.http.port}" if self.http is not None else None,
            store=_redacted(s.node.store_url),
        )

    def validate(self) -> None:
        """Every option checked before anything touches the network or the store, so a
        bad one is one ``ConfigError`` line and leaves no trace (no join, no LEFT row,
        no new store file)."""
        from relaymesh.store import missing_store_error
        from relaymesh.store.url import parse_store_url
        from relaymesh.web.server import parse_hostport

        s = self.settings
        if s.node.http:
            try:
                host, port = parse_hostport(s.node.http)
            except ValueError as exc:
                raise ConfigError(f"--http: {exc}") from exc
            # A busy port must fail the node before it joins the mesh (one that joined
            # and left at once leaves a LEFT row in every peer's view). HTTP itself
            # starts after gossip, so /healthz never answers before gossip runs.
            _check_bindable(host, port, s.node.http)
        self.check_exposure()
        parse_store_url(s.node.store_url)
        missing = None if self._create_store else missing_store_error(s.node.store_url)
        if missing is not None:
            raise ConfigError(f"{missing}, or start the node with --create-store")

    def check_exposure(self) -> None:
        """``ConfigError`` when the settings would expose the node unprotected (gossip
        beyond loopback without keys, HTTP beyond loopback without tokens)."""
        check_gossip_exposure(self.settings)
        if self.settings.node.http:
            check_http_exposure(self.settings.node.http, self.settings)

    async def run(self) -> None:
        """Until ``request_stop``."""
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Drain, leave, close; bounded (see the module docstring)."""
        s = self.settings
        self.notifier.stopping(status="draining")
        log.info("node_draining", node=self.name, drain_timeout_s=s.worker.drain_timeout_s)
        if self.worker is not None:
            self._drain = asyncio.ensure_future(self.worker.drain(s.worker.drain_timeout_s))
            try:
                await asyncio.wait_for(self._drain, s.worker.drain_timeout_s + DRAIN_SLACK_S)
            except (TimeoutError, asyncio.CancelledError, RelayMeshError) as exc:
                # Unreleased leases are reclaimed when peers see our LEAVE, or at expiry.
                log.warning("drain_incomplete", node=self.name, error=repr(exc))
        # The drain's outcomes too: mesh-summary should not lose this node's last hour.
        await _bounded(self._write_dispatch(), 1.0, "dispatch_final_write")
        if self.maintenance is not None:
            self.maintenance.stop()  # its task resigns leadership on the way out
            if self._maintenance_task is not None:
                await asyncio.wait({self._maintenance_task}, timeout=CLOSE_TIMEOUT_S)
        if self.membership is not None:
            await self.membership.stop(leave=True, timeout_s=LEAVE_TIMEOUT_S)
        # The LEAVE is out; record it ourselves too so the CLI sees it without a peer.
        await _bounded(self._write_mesh(final=True), 1.0, "mesh_final_write")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._worker_task is not None:
            self.worker.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._worker_task), CLOSE_TIMEOUT_S)
            except (TimeoutError, RelayMeshError):
                self._worker_task.cancel()
                await asyncio.gather(self._worker_task, return_exceptions=True)
        if self.http is not None:
            await _bounded(self.http.stop(), CLOSE_TIMEOUT_S, "http_stop")
        if self.store is not None:
            await _bounded(self.store.close(), CLOSE_TIMEOUT_S, "store_close")
        self.notifier.close()
        log.info("node_stopped", node=self.name)

    async def serve(self) -> None:
        """startup -> run -> shutdown with SIGTERM/SIGINT (drain) and SIGHUP (reload)."""
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self._on_sighup,
        }
        self.validate()  # before anything starts, so a refusal is one line
        with capture_signals(loop, handlers):
            try:
                await self.startup()
                await self.run()
            finally:
                await self.shutdown()
        if self.fatal is not None:
            raise self.fatal

    def _on_sighup(self) -> None:
        self._spawn(self.reload_settings("sighup"), "reload")

    def request_stop(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutdown_requested", node=self.name)
            self._stop.set()
        elif self._signals == 2:
            # Cut the wait for running steps, not the drain: they are still killed and
            # released, so another node takes them at once instead of at lease expiry.
            log.warning("drain_cut_short", node=self.name)
            if self.worker is not None:
                self.worker.cut_drain_short()
        elif self._drain is not None and not self._drain.done():
            log.warning("drain_abandoned", node=self.name)
            self._drain.cancel()

    # -- store and work ------------------------------------------------------------------

    async def _open_store(self) -> None:
        from relaymesh.store import open_store

        delay_s = STORE_RETRY_FIRST_S
        while True:
            try:
                store = await open_store(self.settings.node.store_url, create=self._create_store)
                break
            except StoreUnavailableError as exc:
                self.metrics.store_errors.labels(op="open").inc()
                self._store_outcome(exc)
                log.warning("store_unavailable", node=self.name, error=str(exc), retry_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(STORE_RETRY_MAX_S, delay_s * 2)
            except RelayMeshError as exc:
                log.error("store_open_failed", node=self.name, error=str(exc))
                self._fail(exc)
                return
        self._store_outcome(None)
        self.store = store
        with contextlib.suppress(RelayMeshError):
            self._reload_cursor = await services.latest_audit_id(store)
            self._sync_cursor = await services.latest_audit_id(
                store, services.GOSSIP_SYNC_REQUEST_ACTION
            )
        self._start_work(store)
        self._store_ready.set()
        self._spawn(self._mesh_writer(), "mesh-writer")
        self._spawn(self._reload_poller(), "reload-poller")
        self._spawn(self._dispatch_writer(), "dispatch-writer")
        self._mesh_dirty.set()
        if self._api is not None:
            self._api.attach(store)
        log.info("store_ready", node=self.name, store=store.url)

    def _start_work(self, store: Store) -> None:
        from relaymesh.work.maintenance import Maintenance
        from relaymesh.work.worker import Worker

        membership = self.membership
        self.maintenance = Maintenance(
            store=store,
            node=self.name,
            settings=lambda: self.settings,
            metrics=self.metrics,
            clock=self._clock,
            rng=self._rng,
        )
        # The worker reads settings through a callable, so a reload reaches it at once;
        # it checks pause_when_local_not_alive itself before each claim round.
        self.worker = Worker(
            store=store,
            node=self.name,
            settings=lambda: self.settings,
            metrics=self.metrics,
            clock=self._clock,
            rng=self._rng,
            local_alive=lambda: bool(membership.local_is_alive()),
        )
        self._maintenance_task = self._spawn(self.maintenance.run(), "maintenance")
        self._worker_started_ms = self._clock.monotonic_ms()
        self._start_schedules(store)
        self._worker_task = asyncio.create_task(self.worker.run(), name="worker")
        self._worker_task.add_done_callback(self._worker_ended)
        for name in sorted(self._dead_pending):
            self._notify_dead(name)
        self._dead_pending.clear()

    def _start_schedules(self, store: Store) -> None:
        """Schedules fire on the maintenance leader (``work/scheduler.py``)."""
        from relaymesh.work.scheduler import Scheduler

        maintenance = self.maintenance
        scheduler = Scheduler(
            store=store,
            settings=lambda: self.settings,
            metrics=self.metrics,
            is_leader=lambda: maintenance.is_leader,
        )
        self._spawn(scheduler.run(), "schedules")

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        log.error("worker_crashed", node=self.name, error=repr(exc))
        # A node that gossips but never works would look healthy and do nothing: stop, so
        # the supervisor restarts it (its leases are reclaimed when peers see it go).
        self._fail(RelayMeshError(f"the worker stopped unexpectedly: {exc!r}"))

    def _fail(self, exc: RelayMeshError) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.request_stop()

    # -- membership -> store ------------------------------------------------------------------

    def _on_member_changed(self, event: MemberChanged) -> None:
        self._mesh_dirty.set()
        if event.name == self.name:
            return
        if event.status in (MemberStatus.DEAD, MemberStatus.LEFT):
            log.info("member_down", node=self.name, member=event.name, status=event.status.value)
            if self.maintenance is None:
                self._dead_pending.add(event.name)
            else:
                self._notify_dead(event.name)

    def _notify_dead(self, name: str) -> None:
        result = self.maintenance.notify_member_dead(name)
        if asyncio.iscoroutine(result):
            self._spawn(result, f"reclaim-{name}")

    async def _mesh_writer(self) -> None:
        unhealthy_after_s = self.settings.node.store_unhealthy_after_s
        refresh_s = min(MESH_REFRESH_S, unhealthy_after_s / PROBES_PER_WINDOW)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mesh_dirty.wait(), refresh_s)
            await asyncio.sleep(MESH_DEBOUNCE_S)
            self._mesh_dirty.clear()
            deadline_s = max(1.0, unhealthy_after_s)
            try:
                # Bounded: a write that hangs must not stop the probes (and the verdict
                # is timed from the last success, so a hang counts as an outage anyway).
                await asyncio.wait_for(self._write_mesh(), deadline_s)
            except TimeoutError:
                self.metrics.store_errors.labels(op="upsert_mesh_nodes").inc()
                error = f"a store write did not answer within {deadline_s:g} s"
                self._store_outcome(StoreUnavailableError(error))

    def _store_outcome(self, exc: RelayMeshError | None) -> None:
        """Record one store probe's outcome; log each change of the verdict once."""
        now_ms = self._clock.monotonic_ms()
        health = self.store_health
        if exc is None:
            health.ok(now_ms)
        elif isinstance(exc, StoreGoneError):
            if health.refusal is None:
                log.error("store_refused", node=self.name, error=str(exc))
            health.refused(now_ms, str(exc))
        else:
            health.failed(now_ms, str(exc))
        reason = health.reason(now_ms)
        if reason is not None and self._store_reason is None:
            log.error("store_unhealthy", node=self.name, reason=reason)
        elif reason is None and self._store_reason is not None:
            log.info("store_recovered", node=self.name, was=self._store_reason)
        self._store_reason = reason

    async def _write_mesh(self, *, final: bool = False) -> None:
        store = self.store
        if store is None or self.membership is None:
            return
        now_wall = self._clock.wall_ms()
        # A member gone for longer than the prune age is not reported again: the
        # leader's prune (or an operator's) would otherwise be undone within seconds,
        # and mesh-summary would stay degraded for a node long replaced.
        forget_before_ms = now_wall - self.settings.maintenance.mesh_prune_older_than_ms
        report = self._mesh_report
        nodes = report.plan(
            self.membership.members(),
            local_name=self.name,
            now_wall_ms=now_wall,
            forget_before_ms=forget_before_ms,
            final=final,
            address=_fmt_address,
        )
        if not nodes:
            return
        try:
            await store.upsert_mesh_nodes(self.name, nodes)
        except BaseException as exc:
            # Failed, cancelled (the writer's deadline) or unknown: write all next time.
            report.failed()
            if not isinstance(exc, RelayMeshError):
                raise
            self.metrics.store_errors.labels(op="upsert_mesh_nodes").inc()
            log.warning("mesh_write_failed", node=self.name, error=str(exc))
            self._store_outcome(exc)
            self._mesh_dirty.set()
            if not final:
                await asyncio.sleep(min(1.0, self.settings.node.store_unhealthy_after_s / 4))
            return
        report.written(now_wall)
        self._store_outcome(None)

    # -- settings reload -------------------------------------------------------------------

    async def reload_settings(self, source: str) -> list[str]:
        """Re-read settings; apply the reloadable part; record the changed field names."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                if self._reload_loader is None:
                    log.info("settings_reload_skipped", node=self.name, reason="no loader")
                    return []
                fresh = self._reload_loader()
            except RelayMeshError as exc:
                log.error(
                    "settings_reload_failed",
                    node=self.name,
                    error=str(exc),
                    source=source,
                    outcome="kept the settings in force",
                )
                return []
            finally:
                self.notifier.ready()
            old = self.settings
            changed = diff_fields(old, fresh)
            hot = [f for f in changed if f.split(".")[0] in RELOADABLE_SECTIONS]
            cold = [f for f in changed if f not in hot]
            self.settings = old.model_copy(
                update={section: getattr(fresh, section) for section in RELOADABLE_SECTIONS}
            )
            for component in (self.worker, self.maintenance):
                update = getattr(component, "update_settings", None)
                if update is not None:
                    result = update(self.settings)
                    if asyncio.iscoroutine(result):
                        await result
            log.info(
                "settings_reloaded",
                node=self.name,
                source=source,
                changed=hot,
                needs_restart=cold,
            )
            if self.store is not None:
                try:
                    await services.record_settings_change(
                        self.store, node=self.name, fields=hot, refused=cold
                    )
                except RelayMeshError as exc:
                    log.warning("settings_history_write_failed", node=self.name, error=str(exc))
            return hot

    async def _reload_poller(self) -> None:
        store = self.store
        assert store is not None
        since_ms = await store.now_ms() - 1000
        while True:
            await asyncio.sleep(RELOAD_POLL_S)
            try:
                pending = await services.pending_reload_requests(
                    store, node=self.name, after_id=self._reload_cursor, since_ms=since_ms
                )
            except RelayMeshError as exc:
                log.debug("reload_poll_failed", node=self.name, error=str(exc))
                continue
            await self._poll_gossip_syncs(store, since_ms)
            if not pending:
                continue
            self._reload_cursor = max(r.id for r in pending)
            log.info("reload_requested", node=self.name, by=pending[-1].actor)
            await self.reload_settings(f"request:{pending[-1].id}")

    # -- gossip-sync ---------------------------------------------------------------------------

    async def gossip_sync(self, request_id: int | None = None) -> dict[str, Any]:
        """One anti-entropy exchange now; the answer is audited (``gossip_sync``)."""
        result: dict[str, Any]
        if self.membership is None:
            result = {"peer": None, "merged_here": 0, "merged_there": 0, "agreed": False}
            result["error"] = "gossip is not running"
        else:
            result = await self.membership.sync_now()
        result["node"] = self.name
        if self.store is not None:
            try:
                await services.record_gossip_sync(
                    self.store, node=self.name, request_id=request_id, result=result
                )
            except RelayMeshError as exc:
                log.warning("gossip_sync_answer_failed", node=self.name, error=str(exc))
        return result

    async def _poll_gossip_syncs(self, store: Store, since_ms: int) -> None:
        try:
            pending = await services.pending_gossip_syncs(
                store, node=self.name, after_id=self._sync_cursor, since_ms=since_ms
            )
        except RelayMeshError as exc:
            log.debug("gossip_sync_poll_failed", node=self.name, error=str(exc))
            return
        for request in pending:
            self._sync_cursor = max(self._sync_cursor, request.id)
            log.info("gossip_sync_requested", node=self.name, by=request.actor)
            await self.gossip_sync(request.id)

    # -- dispatch statistics -------------------------------------------------------------------

    async def _dispatch_writer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.dispatch.summary_interval_ms / 1000)
            await self._write_dispatch()

    async def _write_dispatch(self) -> None:
        from relaymesh.work.dispatch import STORE_BUCKET_MS, WINDOW_MS

        store, worker = self.store, self.worker
        if store is None or worker is None:
            return
        rows = worker.dispatch.summary_rows()
        try:
            await store.write_dispatch_stats(
                [(r.node, r.agent, r.bucket_ms, r.reason, r.count) for r in rows],
                keep_ms=WINDOW_MS + STORE_BUCKET_MS,
            )
        except RelayMeshError as exc:
            worker.dispatch.resend_all()
            self.metrics.store_errors.labels(op="dispatch_stats").inc()
            log.warning("dispatch_stats_write_failed", node=self.name, error=str(exc))

    # -- HTTP --------------------------------------------------------------------------------

    _api: Any = None

    async def _start_http(self, bind: str) -> None:
        from relaymesh.web.api import Api
        from relaymesh.web.server import HttpServer

        try:
            self.http = HttpServer(
                bind,
                self.metrics,
                self.health,
                before_metrics=self._before_scrape,
                allowed_hosts=lambda: self.settings.web.allowed_hosts,
            )
        except ValueError as exc:
            raise ConfigError(f"--http: {exc}") from exc
        self._api = Api(
            self.store, lambda: self.settings, local_node=self.name, gossip_sync=self.gossip_sync
        )
        self.http.add_routes(self._api.routes())
        try:
            await self.http.start()
        except OSError as exc:
            self.http = None
            raise ConfigError(f"cannot serve HTTP on {bind}: {exc.strerror or exc}") from exc

    def health(self) -> dict[str, Any]:
        """``/healthz``: ok while gossip runs, the store answers and the worker loop
        turns; ``reasons`` says what is wrong, one line each (docs/health.md)."""
        doc: dict[str, Any] = dict(self.membership.health()) if self.membership else {"ok": False}
        reasons: list[str] = [] if doc.get("ok") else ["gossip is not running"]
        now_ms = self._clock.monotonic_ms()
        store_reason = self.store_health.reason(now_ms)
        if store_reason is not None:
            reasons.append(store_reason)
        stall = self._worker_stall(now_ms)
        if stall is not None:
            reasons.append(stall)
        if store_reason is not None:
            doc["store"] = "unreachable"
        else:
            doc["store"] = "ready" if self._store_ready.is_set() else "connecting"
        doc["store_silent_s"] = round(self.store_health.silent_ms(now_ms) / 1000, 3)
        doc["store_error"] = self.store_health.last_error
        doc["worker_paused"] = self.worker.paused_reason if self.worker is not None else None
        doc["draining"] = self._stop.is_set()
        doc["ok"] = not reasons
        doc["reasons"] = reasons
        return doc

    def _worker_stall(self, now_ms: int) -> str | None:
        worker = self.worker
        if worker is None or self._worker_task is None or self._worker_task.done():
            return None
        s = self.settings
        return worker_stall_reason(
            last_round_ms=worker.last_round_ms,
            started_ms=self._worker_started_ms,
            now_ms=now_ms,
            stall_after_ms=worker_stall_after_ms(
                poll_ms=s.worker.poll_ms,
                store_unhealthy_after_ms=self.store_health.unhealthy_after_ms,
            ),
            stopping=worker.stopping or self._stop.is_set(),
        )

    async def _before_scrape(self) -> None:
        """Refresh gauges for a scrape. ``/metrics`` needs no token, so the store figures
        are cached: queried at most once per ``METRICS_STORE_TTL_S`` however often (and
        however many at once) scrapers ask."""
        if self.membership is not None:
            self.membership.update_metrics()
        if self.worker is not None:
            self._set_dispatch_gauges(self.worker.dispatch)
        store = self.store
        if store is None:
            return
        async with self._scrape_lock:
            now_s = self._clock.monotonic_ms() / 1000
            if now_s - self._store_figures_at_s < METRICS_STORE_TTL_S:
                return
            self._store_figures_at_s = now_s
            await self._refresh_store_figures(store)

    async def _refresh_store_figures(self, store: Store) -> None:
        self.metrics_store_refreshes += 1
        try:
            counts = await asyncio.wait_for(store.step_counts(), 2.0)
            for status in StepStatus:
                self.metrics.steps.labels(status=status.value).set(counts.get(status, 0))
            self.metrics.dead_letter_growth.set(counts.get(StepStatus.DEAD_LETTER, 0))
            lag_ms = await asyncio.wait_for(store.queue_lag_ms(), 2.0)
            self.metrics.queue_lag_seconds.set(lag_ms / 1000)
            await self._refresh_mesh_figures(store)
        except (RelayMeshError, TimeoutError):
            self.metrics.store_errors.labels(op="scrape").inc()

    async def _refresh_mesh_figures(self, store: Store) -> None:
        """The V2 mesh gauges, from the store (what every node reported)."""
        m = self.metrics
        nodes = await asyncio.wait_for(store.list_mesh_nodes(), 2.0)
        for status in MemberStatus:
            m.mesh_nodes_total.labels(status=status.value).set(
                sum(1 for n in nodes if n.status is status)
            )
        by_owner = await asyncio.wait_for(store.running_by_owner_status(), 2.0)
        for owner_status in (*(s.value for s in MemberStatus), "UNKNOWN", *by_owner):
            m.running_steps_by_owner_status.labels(status=owner_status).set(
                by_owner.get(owner_status, 0)
            )
        now_ms = await asyncio.wait_for(store.now_ms(), 2.0)
        dead_since = [n.status_changed_at_ms for n in nodes if n.status is MemberStatus.DEAD]
        m.oldest_dead_node_age_ms.set(max(0, now_ms - min(dead_since)) if dead_since else 0)

    def _set_dispatch_gauges(self, dispatch: Any) -> None:
        rate = dispatch.node_stats().rate
        self.metrics.dispatch_success_rate.set(math.nan if rate is None else rate)
        for agent, stats in dispatch.agent_stats().items():
            agent_rate = stats.rate
            self.metrics.dispatch_agent_success_rate.labels(agent=agent).set(
                math.nan if agent_rate is None else agent_rate
            )

    # -- helpers -------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_failed", node=self.name, task=name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.append(task)
        return task


# -- entry points ---------------------------------------------------------------------------


async def run_node(
    settings: Settings, reload: SettingsLoader | None = None, *, create_store: bool = False
) -> None:
    """``relaymesh node run``."""
    await Node(settings, reload=reload, create_store=create_store).serve()


async def serve_web(
    config_path: str | None, settings: Settings, bind: str, log_level: str = "info"
) -> None:
    """``relaymesh serve-web``: console and API over the store, no worker, no gossip."""
    from relaymesh.store import store_session
    from relaymesh.web.api import Api
    from relaymesh.web.server import HttpServer, parse_hostport

    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    current = {"settings": settings}

    def reload() -> None:
        try:
            current["settings"] = load_settings(config_path, {"node": {"store_url": None}})
        except RelayMeshError as exc:
            log.error("settings_reload_failed", error=str(exc))

    try:
        parse_hostport(bind)
    except ValueError as exc:
        raise ConfigError(f"--bind: {exc}") from exc
    check_http_exposure(bind, settings)
    async with store_session(settings.node.store_url) as store:  # refuses a missing file
        http = HttpServer(
            bind,
            metrics,
            lambda: {"ok": True, "store": store.url},
            allowed_hosts=lambda: current["settings"].web.allowed_hosts,
        )
        http.add_routes(Api(store, lambda: current["settings"]).routes())
        with capture_signals(
            loop, {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: reload}
        ):
            try:
                await http.start()
            except OSError as exc:
                raise ConfigError(f"cannot serve HTTP on {bind}: {exc.strerror or exc}") from exc
            log.info("web_ready", url=f"http://{http.host}:{http.port}/", store=store.url)
            try:
                await stop.wait()
            finally:
                await http.stop()


# -- small helpers ----------------------------------------------------------------------------


def _check_bindable(host: str, port: int, bind: str) -> None:
    """``ConfigError`` when nothing could listen on ``host:port`` now (busy, or not an
    address of this host). Port 0 (any free port) is always bindable."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot serve HTTP on {bind}: {exc.strerror or exc}") from exc


def _load_seeds(path: str | None) -> list[str]:
    if not path:
        return []
    from relaymesh.membership.seeds import load_seeds

    return [_fmt_address(seed) for seed in load_seeds(Path(path))]


def _default_state_dir(settings: Settings) -> Path | None:
    url = settings.node.store_url
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).resolve().parent
    return None


def _fmt_address(address: Any) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _redacted(url: str) -> str:
    from relaymesh.store.url import redact_url

    return redact_url(url)


async def _bounded(aw: Awaitable[Any], timeout_s: float, what: str) -> None:
    try:
        await asyncio.wait_for(_as_coro(aw), timeout_s)
    except (TimeoutError, RelayMeshError, OSError) as exc:
        log.warning("shutdown_step_failed", step=what, error=str(exc) or "timeout")


async def _as_coro(aw: Awaitable[Any]) -> Any:
    return await aw
