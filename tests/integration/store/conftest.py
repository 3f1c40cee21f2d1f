"""The conformance suite's fixtures: every test runs on SQLite, on PostgreSQL and on
the in-memory store (store/memory.py).

``store_url`` is a fresh empty database for the test (a file in ``tmp_path``, a new
PostgreSQL database from ``tests.pgutil``, or fresh ``memory://`` data); ``store`` is
it opened and migrated; ``open_more`` opens further independent store objects on the
same database. A test that reaches into the database behind the store's back (SQL,
files, processes, a server going away) is marked ``sql_store``: it runs on the two
real stores only, never on memory.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from relaymesh.model import Priority, StepSpec, WorkflowSpec
from relaymesh.store import Store, open_store
from tests.conftest import require_pg
from tests.pgutil import fresh_pg_database

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="pg", marks=pytest.mark.pg),
    pytest.param("memory", id="memory"),
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the memory run of ``sql_store`` tests (they need a real database)."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_memory = callspec is not None and callspec.params.get("store_url") == "memory"
        (dropped if on_memory and item.get_closest_marker("sql_store") else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    if request.param == "memory":
        from relaymesh.store.memory import forget_memory_store

        name = f"test-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        forget_memory_store(name)
        return
    async with fresh_pg_database(require_pg()) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


OpenMore = Callable[[], Awaitable[Store]]


@pytest.fixture
async def open_more(store_url: str) -> AsyncIterator[OpenMore]:
    """Open another, independent store object (its own connections) on the same data."""
    opened: list[Store] = []

    async def make() -> Store:
        extra = await open_store(store_url)
        opened.append(extra)
        return extra

    try:
        yield make
    finally:
        for extra in opened:
            await extra.close()


def step(
    name: str,
    agent: str = "echo",
    *,
    depends_on: tuple[str, ...] = (),
    priority: Priority = Priority.NORMAL,
    locks: tuple[str, ...] = (),
    max_attempts: int = 3,
    input: object = None,
) -> StepSpec:
    return StepSpec(
        name=name,
        agent=agent,
        input=input,
        depends_on=depends_on,
        priority=priority,
        locks=locks,
        max_attempts=max_attempts,
    )


def workflow(*steps: StepSpec, name: str = "wf") -> WorkflowSpec:
    return WorkflowSpec(name=name, steps=tuple(steps))


def flat(n: int, agent: str = "echo", **kw: object) -> WorkflowSpec:
    """``n`` independent steps ``s0``..."""
    return workflow(*(step(f"s{i}", agent, **kw) for i in range(n)))  # type: ignore[arg-type]
