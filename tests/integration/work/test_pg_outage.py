"""The worker through a PostgreSQL outage (a real server behind ``PgProxy``, which resets
connections and refuses new ones while the "server" is down).

* An outage shorter than the lease: heartbeats fail meanwhile, yet the node does not give
  up its agent; once the store is back the lease is still its own, extended, and the
  result commits under the lease it was claimed with: no conflict, no second run.
* An outage longer than the lease: the lease expires, the step is reclaimed and run by
  another node, and the cut-off node's late commit is fenced (a ``lease_conflicts`` row).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from relaymesh.exceptions import StoreUnavailableError
from relaymesh.model import StepStatus
from relaymesh.store import Store, open_store
from tests.conftest import async_wait_until, require_pg
from tests.integration.store.pgproxy import PgProxy
from tests.integration.work.helpers import harness, holds, settings, submit, wait_step
from tests.pgutil import fresh_pg_database

pytestmark = [pytest.mark.asyncio, pytest.mark.pg]

WAIT_S = 20.0


@pytest.fixture
async def direct() -> AsyncIterator[Store]:
    async with fresh_pg_database(require_pg()) as url:
        store = await open_store(url)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture
async def proxy(direct: Store) -> AsyncIterator[PgProxy]:
    parts = urlsplit(direct.url)
    running = await PgProxy(parts.hostname or "", parts.port or 5432).start()
    try:
        yield running
    finally:
        await running.close()


async def _through(direct: Store, proxy: PgProxy) -> Store:
    parts = urlsplit(direct.url)
    user = parts.netloc.rpartition("@")[0]
    return await open_store(
        f"{parts.scheme}://{user}@127.0.0.1:{proxy.port}{parts.path}", migrate=False
    )


def _outage(proxy: PgProxy) -> None:
    proxy.refuse = True
    proxy.reset_clients()


def _errors(h: Any, op: str) -> float:
    return float(h.metrics.store_errors.labels(op)._value.get())


async def test_an_outage_shorter_than_the_lease_keeps_the_agent(
    direct: Store, proxy: PgProxy
) -> None:
    cfg = settings(worker={"lease_ms": 6000, "heartbeat_ms": 200})
    wf = await submit(
        direct,
        {"name": "o", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 2.5}}]},
        cfg,
    )
    store = await _through(direct, proxy)
    try:
        async with harness(store, cfg) as h:
            h.start()
            running = await wait_step(direct, wf, "s", StepStatus.RUNNING)
            _outage(proxy)
            # Heartbeats are failing now; the lease (6 s) outlives the outage. (A worker
            # that gave its agent up would stop heartbeating: then fail here, not wait.)
            assert h.worker is not None
            worker = h.worker
            await async_wait_until(
                holds(lambda: _errors(h, "heartbeat") >= 3 or worker.running() != [running.id]),
                WAIT_S,
                what="failed heartbeats",
            )
            assert worker.running() == [running.id]
            proxy.refuse = False
            done = await wait_step(direct, wf, "s", StepStatus.SUCCEEDED)
    finally:
        await store.close()
    assert (done.attempt, done.lease_epoch, done.owner_node) == (1, running.lease_epoch, "n1")
    assert await direct.list_conflicts() == []
    assert [e.event for e in await direct.list_ownership_events()] == ["claimed"]
    assert h.metrics.lease_conflicts.labels("heartbeat")._value.get() == 0


async def test_an_outage_longer_than_the_lease_reclaims_and_fences_the_late_commit(
    direct: Store, proxy: PgProxy
) -> None:
    cfg = settings(worker={"lease_ms": 1000, "heartbeat_ms": 200})
    wf = await submit(
        direct,
        {"name": "o", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 1.5}}]},
        cfg,
    )
    store = await _through(direct, proxy)
    try:
        async with harness(store, cfg, node="cut") as cut:
            cut.start()
            first = await wait_step(direct, wf, "s", StepStatus.RUNNING)
            _outage(proxy)

            async def expired() -> bool:
                return first.id in await direct.reclaim_expired(10)

            await async_wait_until(expired, WAIT_S, 0.05, "the lease to expire")
            async with harness(direct, cfg, node="rescuer") as rescuer:
                rescuer.start()
                done = await wait_step(direct, wf, "s", StepStatus.SUCCEEDED)
                # The cut-off node finished meanwhile and keeps retrying its commit.
                await async_wait_until(
                    holds(lambda: _errors(cut, "commit_success") >= 1), WAIT_S, what="retries"
                )
                proxy.refuse = False

                async def fenced() -> bool:
                    return bool(await direct.list_conflicts())

                await async_wait_until(fenced, WAIT_S, 0.05, "the late commit to be fenced")
    finally:
        await store.close()
    assert done.owner_node == "rescuer" and done.lease_epoch > first.lease_epoch
    assert (await direct.get_step(first.id)).result == done.result
    conflicts = await direct.list_conflicts()
    assert {(c.node, c.expected_epoch) for c in conflicts} == {("cut", first.lease_epoch)}
    assert all(c.actual_epoch == done.lease_epoch for c in conflicts)


class _LostClaimAnswer:
    """A real store whose first claim lands and then reports the connection lost, as a
    PostgreSQL claim does when the connection dies after the server committed it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.lost: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def claim_steps(self, node: str, **kwargs: Any) -> Any:
        claims = await self.inner.claim_steps(node, **kwargs)
        if claims and not self.lost:
            self.lost = [c.step_id for c in claims]
            raise StoreUnavailableError("injected: connection lost after the claim landed")
        return claims


async def test_a_claim_whose_answer_was_lost_is_given_back_not_left_to_expire(
    direct: Store,
) -> None:
    cfg = settings(worker={"lease_ms": 120_000, "heartbeat_ms": 200})
    wf = await submit(
        direct,
        {"name": "o", "steps": [{"name": "s", "agent": "sleep", "input": {"seconds": 0.1}}]},
        cfg,
    )
    store = _LostClaimAnswer(direct)
    async with harness(store, cfg) as h:
        h.start()
        # Long before the 120 s lease could expire.
        done = await wait_step(direct, wf, "s", StepStatus.SUCCEEDED)
    assert store.lost == [done.id]
    events = sorted((e.id, e.event, e.node) for e in await direct.list_ownership_events())
    assert [(event, node) for _, event, node in events] == [
        ("claimed", "n1"),
        ("released", "n1"),  # given back at once, not left to expire
        ("claimed", "n1"),
    ]
    assert done.attempt == 1  # the run that never started did not use up an attempt
    assert await direct.list_conflicts() == []
