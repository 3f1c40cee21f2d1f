"""End to end: three ``relaymesh node run`` processes on a multi-host PostgreSQL URL ride
through a failover (primary stopped hard, replica promoted) and a server restart under
load: every step SUCCEEDED exactly once, soon after the store is back.

Real servers from ``tests/pgcluster.py`` on ports 55432-55435.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import Cluster, record_step
from tests.pgcluster import PgCluster

pytestmark = [pytest.mark.slow, pytest.mark.pg]

STEPS = 120
STEP_SECONDS = 0.4
SETTLE_S = 30
FAILOVER_AFTER_S = 3.0
"""The issue's promise: the cluster settles within 30 s of the promotion."""
SETTINGS: dict[str, dict[str, Any]] = {
    # The defaults of [worker] and [maintenance]: a lease that had to expire for a step
    # to move on would take longer than the 30 s the cluster has to settle.
    "worker": {"slots": 4, "lease_ms": 30_000, "heartbeat_ms": 10_000, "poll_ms": 500},
    "maintenance": {"interval_ms": 1000, "leader_lease_ms": 10_000},
}


def _workflow(journal: Path) -> dict[str, Any]:
    return {
        "name": "failover",
        "steps": [record_step(f"s{i:03d}", journal, STEP_SECONDS) for i in range(STEPS)],
    }


def _start(make_cluster: ClusterFactory, url: str) -> Cluster:
    cluster = make_cluster(settings=SETTINGS, store_url=url)
    cluster.add_nodes("a", "b", "c")
    cluster.start("a", "b", "c")
    return cluster


def _wait_some_done(cluster: Cluster, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(1 for line in cluster.journal_lines() if line["phase"] == "done") < count:
        assert time.monotonic() < deadline, "the cluster did not start working"
        time.sleep(0.05)


def _wait_store_back(cluster: Cluster, workflow_id: str, timeout_s: float) -> None:
    """Until the CLI reads the store again (``Cluster.status`` gives up on an outage
    after 10 s; a loaded host can take longer to restart a server)."""
    wait_until(
        lambda: cluster.cli("status", workflow_id, "--json", check=False).returncode == 0,
        timeout_s,
        interval_s=0.2,
        what="the store to answer again",
    )


def _assert_each_step_once(cluster: Cluster, doc: dict[str, Any]) -> None:
    """Every step SUCCEEDED, its agent ran once (one ``start`` in the journal), and its
    one accepted commit is that run's: the result names the step's last lease epoch and
    the journal shows that run finishing. No commit was refused: with a 30 s lease no
    step changes hands in a ride-through, and a commit retried after the connection
    died is not a conflict."""
    steps = doc["steps"]
    assert Counter(s["status"] for s in steps) == {"SUCCEEDED": STEPS}
    journal = cluster.journal_lines()
    runs = Counter(line["step_id"] for line in journal if line["phase"] == "start")
    assert runs == {s["id"]: 1 for s in steps}
    done = {(line["step_id"], line["epoch"]) for line in journal if line["phase"] == "done"}
    for step in steps:
        assert step["attempt"] == 1, step
        assert step["result"]["epoch"] == step["lease_epoch"], step
        assert (step["id"], step["lease_epoch"]) in done, step
    assert cluster.cli_json("conflicts", "--limit", "10000") == []


def test_failover_every_step_succeeds_once(make_cluster: ClusterFactory) -> None:
    with PgCluster((55432, 55433)) as pg:
        pg.create_database("relay")
        cluster = _start(make_cluster, pg.url("relay"))
        workflow_id = cluster.submit(_workflow(cluster.journal))
        submitted = time.monotonic()
        _wait_some_done(cluster, 1)
        # The schedule: the primary goes 3 s after the submit (later only when a
        # loaded machine has not finished a step by then).
        time.sleep(max(0.0, submitted + FAILOVER_AFTER_S - time.monotonic()))
        running = sum(s["status"] == "RUNNING" for s in cluster.status(workflow_id)["steps"])
        pg.stop_primary("immediate")
        pg.promote()
        promoted = time.monotonic()
        _wait_store_back(cluster, workflow_id, SETTLE_S)
        doc = cluster.wait_workflow(workflow_id, {"SUCCEEDED", "FAILED"}, SETTLE_S)
        settled_s = time.monotonic() - promoted
        _assert_each_step_once(cluster, doc)
        assert running > 0  # the failover hit steps in flight
        assert settled_s < SETTLE_S
        for name in cluster.nodes:
            assert cluster.nodes[name].running(), cluster.log_tail(name)


def test_restarts_under_load_every_step_succeeds_once(make_cluster: ClusterFactory) -> None:
    """``pg_ctl restart -m fast`` (clients are disconnected politely), then ``-m
    immediate`` (like a crash) while the nodes work."""
    with PgCluster((55434, 55435)) as pg:
        pg.create_database("relay")
        cluster = _start(make_cluster, pg.url("relay"))
        workflow_id = cluster.submit(_workflow(cluster.journal))
        for mode, done in (("fast", 12), ("immediate", 40)):
            _wait_some_done(cluster, done)
            restarted = time.monotonic()
            pg.restart(pg.primary, mode)
            _wait_store_back(cluster, workflow_id, SETTLE_S)
        doc = cluster.wait_workflow(workflow_id, {"SUCCEEDED", "FAILED"}, SETTLE_S)
        _assert_each_step_once(cluster, doc)
        assert time.monotonic() - restarted < SETTLE_S + 30
