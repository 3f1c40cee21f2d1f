"""Property test: under random claim / commit / fail / expire / cancel / reclaim / replay
sequences no two RUNNING steps ever share a lock key, no step is lost (each is in
exactly one status), and no step's success is ever committed twice."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from relaymesh.exceptions import LeaseLostError
from relaymesh.model import LeaseRef, StepSpec, StepStatus, WorkflowSpec
from relaymesh.store import Store, open_store
from tests.conftest import require_pg
from tests.pgutil import fresh_pg_database_sync

T = TypeVar("T")
KEYS = ("k0", "k1", "k2")
NODES = ("n0", "n1", "n2")

step_shapes = st.lists(
    st.tuples(
        st.lists(st.sampled_from(KEYS), max_size=2, unique=True),  # locks
        st.integers(min_value=1, max_value=3),  # max_attempts
        st.booleans(),  # depends on the previous step
    ),
    min_size=1,
    max_size=6,
)


def make_machine(url_factory: Any) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.url, self.cleanup = url_factory()
            self.store: Store = self.run(open_store(self.url))
            self.step_ids: set[str] = set()
            self.workflows: list[str] = []
            self.leases: list[tuple[str, LeaseRef]] = []
            self.succeeded: dict[str, LeaseRef] = {}
            """Each SUCCEEDED step and the lease whose commit stands."""

        def run(self, coro: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()
            self.cleanup()

        @initialize(shapes=step_shapes)
        def first_workflow(self, shapes: list[tuple[list[str], int, bool]]) -> None:
            self.submit(shapes)

        @rule(shapes=step_shapes)
        def submit(self, shapes: list[tuple[list[str], int, bool]]) -> None:
            steps = tuple(
                StepSpec(
                    name=f"s{i}",
                    agent="echo",
                    locks=tuple(locks),
                    max_attempts=attempts,
                    depends_on=(f"s{i - 1}",) if chained and i else (),
                )
                for i, (locks, attempts, chained) in enumerate(shapes)
            )
            wf = self.run(self.store.submit_workflow(WorkflowSpec("p", steps), "prop"))
            self.workflows.append(wf)
            _, records = self.run(self.store.get_workflow(wf))
            self.step_ids.update(r.id for r in records)

        @rule(
            node=st.sampled_from(NODES),
            limit=st.integers(1, 5),
            short=st.booleans(),
            low_first=st.integers(0, 2),
        )
        def claim(self, node: str, limit: int, short: bool, low_first: int) -> None:
            claims = self.run(
                self.store.claim_steps(
                    node, limit=limit, lease_ms=1 if short else 60_000, low_first=low_first
                )
            )
            keys = [k for c in claims for k in c.locks]
            assert len(keys) == len(set(keys)), "one batch shares a lock key"
            self.leases.extend((node, c.lease) for c in claims)

        def pick(self, index: int) -> tuple[str, LeaseRef] | None:
            if not self.leases:
                return None
            return self.leases[index % len(self.leases)]

        @rule(index=st.integers(0, 50))
        def commit_success(self, index: int) -> None:
            picked = self.pick(index)
            if picked is None:
                return
            node, lease = picked
            try:
                self.run(self.store.commit_success(lease, node, {"by": node}))
            except LeaseLostError:
                return
            # PostgreSQL accepts a repeat of the very commit that already stands (same
            # lease, same result): the idempotent retry of an unknown outcome. A commit
            # under any other lease must never be accepted for a SUCCEEDED step.
            standing = self.succeeded.get(lease.step_id)
            assert standing is None or standing == lease, "success committed twice"
            self.succeeded[lease.step_id] = lease

        @rule(index=st.integers(0, 50), retry=st.booleans())
        def commit_failure(self, index: int, retry: bool) -> None:
            picked = self.pick(index)
            if picked is None:
                return
            node, lease = picked
            try:
                self.run(
                    self.store.commit_failure(lease, node, {"kind": "x"}, 0 if retry else None)
                )
            except LeaseLostError:
                pass

        @rule(index=st.integers(0, 50))
        def heartbeat_or_release(self, index: int) -> None:
            picked = self.pick(index)
            if picked is None:
                return
            node, lease = picked
            try:
                if index % 2:
                    self.run(self.store.heartbeat(lease, node, 60_000))
                else:
                    self.run(self.store.release(lease, node, "drain"))
            except LeaseLostError:
                pass

        @rule()
        def expire(self) -> None:
            self.run(self.store.reclaim_expired(100))

        @rule(node=st.sampled_from(NODES))
        def dead_owner(self, node: str) -> None:
            self.run(
                self.store.reclaim_dead_owners(
                    limit=100, actor="prop", stale_after_ms=0, nodes=[node]
                )
            )

        @rule(index=st.integers(0, 50), hard=st.booleans())
        def cancel(self, index: int, hard: bool) -> None:
            wf = self.workflows[index % len(self.workflows)]
            self.run(self.store.cancel_workflow(wf, "hard" if hard else "soft", "prop"))

        @rule(dead=st.booleans())
        def replay(self, dead: bool) -> None:
            status = StepStatus.DEAD_LETTER if dead else StepStatus.CANCELLED
            self.run(self.store.replay_batch(status=status, limit=3, actor="prop"))

        @invariant()
        def no_shared_keys_and_nothing_lost(self) -> None:
            steps = self.run(self.store.list_steps(limit=100_000))
            assert sorted(s.id for s in steps) == sorted(self.step_ids)
            running = [s for s in steps if s.status is StepStatus.RUNNING]
            keys = [k for s in running for k in s.locks]
            assert len(keys) == len(set(keys)), f"RUNNING steps share a lock: {keys}"
            counts = self.run(self.store.step_counts())
            assert sum(counts.values()) == len(self.step_ids)
            for s in steps:
                assert (s.status is StepStatus.SUCCEEDED) == (s.id in self.succeeded)
                if s.status is StepStatus.RUNNING:
                    assert s.owner_node is not None and s.lease_expires_at_ms is not None

    return StoreMachine


def _sqlite_url() -> tuple[str, Any]:
    directory = tempfile.mkdtemp(prefix="rm-prop-")
    return f"sqlite:///{directory}/p.db", lambda: shutil.rmtree(directory, ignore_errors=True)


def test_store_invariants_sqlite() -> None:
    run_state_machine_as_test(
        make_machine(_sqlite_url),
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@pytest.mark.pg
def test_store_invariants_postgres() -> None:
    dsn = require_pg()

    def pg_url() -> tuple[str, Any]:
        manager = fresh_pg_database_sync(dsn)
        url = manager.__enter__()
        return url, lambda: manager.__exit__(None, None, None)

    run_state_machine_as_test(
        make_machine(pg_url),
        settings=settings(
            max_examples=15,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
