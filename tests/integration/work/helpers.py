"""Fixtures for the worker and maintenance against real stores (SQLite; PostgreSQL when
RELAYMESH_TEST_PG_DSN is set)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relaymesh.clock import Clock, SystemClock
from relaymesh.exceptions import StoreUnavailableError
from relaymesh.model import Claim, StepRecord, StepStatus, WorkflowStatus
from relaymesh.ops.metrics import Metrics
from relaymesh.settings import (
    BreakerSettings,
    GuardSettings,
    MaintenanceSettings,
    RetryPolicy,
    Settings,
    WorkerSettings,
)
from relaymesh.store import Store, open_store
from relaymesh.work.agents import known_agents
from relaymesh.work.guard import Readings, ResourceGuard
from relaymesh.work.worker import Worker
from relaymesh.work.workflow import parse_workflow
from tests.conftest import async_wait_until, require_pg
from tests.pgutil import fresh_pg_database_sync

WAIT_S = 15.0


@pytest.fixture(scope="session")
def work_pg_database() -> Iterator[str]:
    """One fresh PostgreSQL database for this session's work tests (creating one per test
    costs seconds on a loaded host); ``store_url`` empties it before each test."""
    with fresh_pg_database_sync(require_pg()) as url:
        yield url


async def _empty_pg_database(url: str) -> None:
    """Every row of every table gone, the schema kept; the leader row back to unheld."""
    conn = await asyncpg.connect(url)
    try:
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT IN ('schema_version', 'leader_lease')"
            )
        ]
        if tables:
            await conn.execute(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
            )
        if await conn.fetchval("SELECT to_regclass('public.leader_lease')") is not None:
            await conn.execute("UPDATE leader_lease SET node = NULL, epoch = 0, expires_at_ms = 0")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relaymesh.db'}"
        return
    url = request.getfixturevalue("work_pg_database")
    await _empty_pg_database(url)
    yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


def settings(**overrides: Any) -> Settings:
    """Fast timings for tests; ``worker=dict(...)`` etc. override per section."""
    worker = {
        "slots": 4,
        "lease_ms": 10_000,
        "heartbeat_ms": 200,
        "poll_ms": 20,
        "claim_batch": 32,
        "drain_timeout_s": 5.0,
        **overrides.pop("worker", {}),
    }
    breaker = {"failure_threshold": 5, "open_ms": 30_000, **overrides.pop("breaker", {})}
    maintenance = {"interval_ms": 50, "leader_lease_ms": 2000, **overrides.pop("maintenance", {})}
    retry = {
        "max_attempts": 3,
        "base_backoff_ms": 10,
        "max_backoff_ms": 50,
        **overrides.pop("retry", {}),
    }
    return Settings(
        worker=WorkerSettings(**worker),
        breaker=BreakerSettings(**breaker),
        maintenance=MaintenanceSettings(**maintenance),
        retry=RetryPolicy(**retry),
        guard=GuardSettings(min_available_mb=0, max_swap_pct=100),
        **overrides,
    )


def calm_guard() -> ResourceGuard:
    """The shared test host may be loaded; the guard is tested on its own."""
    return ResourceGuard(lambda: Readings(0.0, None, None, 1), now_ms=SystemClock().monotonic_ms)


class ProxyStore:
    """Delegates to a real store; records claims and can fail chosen operations."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.claims: list[Claim] = []
        self.fail: dict[str, int] = {}
        """Operation name -> how many more calls raise StoreUnavailableError."""
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                raise StoreUnavailableError(f"injected: {name}")
            result = await attr(*args, **kwargs)
            if name == "claim_steps":
                self.claims.extend(result)
            return result

        return call


@dataclass
class Harness:
    store: Any
    settings: Settings
    node: str = "n1"
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = field(default_factory=SystemClock)
    local_alive: Callable[[], bool] = lambda: True
    guard: ResourceGuard = field(default_factory=calm_guard)
    worker: Worker | None = None
    task: asyncio.Task[None] | None = None

    def start(self) -> Worker:
        self.worker = Worker(
            store=self.store,
            node=self.node,
            settings=lambda: self.settings,
            metrics=self.metrics,
            clock=self.clock,
            rng=random.Random(1),
            local_alive=self.local_alive,
            guard=self.guard,
            term_grace_s=0.3,
        )
        self.task = asyncio.create_task(self.worker.run())
        return self.worker

    async def close(self) -> None:
        if self.worker is None or self.task is None:
            return
        if not self.task.done():
            self.worker.stop()
            await self.worker.drain(0.5)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, 5)
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if self.task.done() and not self.task.cancelled() and self.task.exception():
            raise self.task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def harness(store: Any, cfg: Settings, **kwargs: Any) -> AsyncIterator[Harness]:
    h = Harness(store=store, settings=cfg, **kwargs)
    try:
        yield h
    finally:
        await h.close()


def holds(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A synchronous condition as an ``async_wait_until`` predicate."""

    async def check() -> bool:
        return bool(fn())

    return check


async def submit(store: Any, doc: dict[str, Any], cfg: Settings | None = None) -> str:
    cfg = cfg or settings()
    spec = parse_workflow(json.dumps(doc), fmt="json", known_agents=known_agents(cfg), settings=cfg)
    wf_id: str = await store.submit_workflow(spec, "test")
    return wf_id


async def steps_by_name(store: Any, wf_id: str) -> dict[str, StepRecord]:
    _, steps = await store.get_workflow(wf_id)
    return {s.name: s for s in steps}


async def wait_workflow(
    store: Any, wf_id: str, status: WorkflowStatus, timeout_s: float = WAIT_S
) -> dict[str, StepRecord]:
    async def done() -> bool:
        wf, _ = await store.get_workflow(wf_id)
        return bool(wf.status == status)

    await async_wait_until(done, timeout_s, interval_s=0.02, what=f"workflow {status}")
    return await steps_by_name(store, wf_id)


async def wait_step(
    store: Any, wf_id: str, name: str, status: StepStatus, timeout_s: float = WAIT_S
) -> StepRecord:
    async def reached() -> bool:
        return bool((await steps_by_name(store, wf_id))[name].status == status)

    await async_wait_until(reached, timeout_s, interval_s=0.02, what=f"step {name} {status}")
    return (await steps_by_name(store, wf_id))[name]
