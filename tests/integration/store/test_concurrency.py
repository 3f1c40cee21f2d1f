"""Concurrent claimers never claim the same step (store objects and OS processes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from relaymesh.model import StepStatus
from relaymesh.store import Store, open_store
from tests.integration.store.conftest import OpenMore, flat, step, workflow

pytestmark = pytest.mark.asyncio


async def drain(store: Store, node: str, *, batch: int, commit: bool) -> list[str]:
    """Claim (and commit) until nothing is left; the step ids claimed."""
    got: list[str] = []
    idle = 0
    while idle < 3:
        claims = await store.claim_steps(node, limit=batch, lease_ms=60_000)
        if not claims:
            idle += 1
            await asyncio.sleep(0)
            continue
        idle = 0
        got.extend(c.step_id for c in claims)
        if commit:
            ok = await store.commit_success_many(node, [(c.lease, node) for c in claims])
            assert all(ok)
    return got


async def test_two_store_objects_never_claim_the_same_step(
    store: Store, open_more: OpenMore
) -> None:
    other = await open_more()
    await store.submit_workflow(flat(300), "t")
    a, b = await asyncio.gather(
        drain(store, "a", batch=7, commit=True), drain(other, "b", batch=5, commit=True)
    )
    assert not set(a) & set(b)
    assert len(a) + len(b) == 300 == len(set(a) | set(b))
    counts = await store.step_counts()
    assert counts[StepStatus.SUCCEEDED] == 300


async def test_concurrent_claims_respect_locks(store: Store, open_more: OpenMore) -> None:
    stores = [store, *[await open_more() for _ in range(3)]]
    await store.submit_workflow(
        workflow(*(step(f"s{i}", locks=(f"k{i % 3}",)) for i in range(12))), "t"
    )
    results = await asyncio.gather(
        *(s.claim_steps(f"n{i}", limit=12, lease_ms=60_000) for i, s in enumerate(stores))
    )
    held = [key for claims in results for c in claims for key in c.locks]
    assert len(held) == len(set(held)) == 3


_CLAIMER = textwrap.dedent(
    """
    import asyncio, json, pathlib, sys, time
    from relaymesh.store import open_store

    async def main(url, node, barrier_dir):
        store = await open_store(url)
        # Start barrier: a process that starts late on a loaded machine must not find
        # the queue already drained, or "both made progress" would test the scheduler.
        barrier = pathlib.Path(barrier_dir)
        (barrier / node).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        got, idle = [], 0
        while idle < 20:
            claims = await store.claim_steps(node, limit=8, lease_ms=60_000)
            if not claims:
                idle += 1
                await asyncio.sleep(0.005)
                continue
            idle = 0
            got.extend(c.step_id for c in claims)
            await store.commit_success_many(node, [(c.lease, node) for c in claims])
        await store.close()
        print(json.dumps(got))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
    """
)


async def test_two_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    store = await open_store(url)
    try:
        await store.submit_workflow(flat(600), "t")
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CLAIMER,
                url,
                f"p{i}",
                str(barrier),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(2)
        ]
        outputs = [await asyncio.wait_for(p.communicate(), 90) for p in procs]
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err.decode()
        claimed = [json.loads(out) for out, _ in outputs]
        assert not set(claimed[0]) & set(claimed[1])
        assert len(claimed[0]) + len(claimed[1]) == 600
        assert (await store.step_counts())[StepStatus.SUCCEEDED] == 600
        # Both made progress: the write lock went round.
        assert all(claimed), [len(c) for c in claimed]
    finally:
        await store.close()


async def test_last_steps_committed_at_once_by_two_nodes_finish_the_workflow(
    store: Store, open_more: OpenMore
) -> None:
    """Success commits of one workflow do not exclude each other (PostgreSQL: KEY
    SHARE): when two nodes commit its last two steps at the same moment, each may see
    the other's step still RUNNING. The workflow must end SUCCEEDED all the same, and
    FAILED when the other last step is dead-lettered at that moment."""
    other = await open_more()
    for round_ in range(25):
        wf = await store.submit_workflow(flat(2, max_attempts=1), "t")
        a = await store.claim_steps("a", limit=1, lease_ms=60_000)
        b = await other.claim_steps("b", limit=1, lease_ms=60_000)
        assert len(a) == len(b) == 1
        fail = round_ % 5 == 4
        second = (
            other.commit_failure(b[0].lease, "b", {"kind": "permanent"}, None)
            if fail
            else other.commit_success_many("b", [(b[0].lease, 2)])
        )
        await asyncio.gather(store.commit_success_many("a", [(a[0].lease, 1)]), second)
        record, _ = await store.get_workflow(wf)
        assert record.status.value == ("FAILED" if fail else "SUCCEEDED"), round_
