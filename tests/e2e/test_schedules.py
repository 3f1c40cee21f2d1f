"""A schedule every second on a 3-node cluster whose maintenance leader is SIGKILLed
twice: every tick in the window is fired exactly once or counted as skipped once,
and no tick has two workflows."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import Cluster

pytestmark = pytest.mark.slow

TICK = {"name": "tick", "steps": [{"name": "a", "agent": "echo"}]}


def leader(cluster: Cluster) -> str | None:
    for name, node in cluster.nodes.items():
        if not node.running():
            continue
        try:
            text = cluster.http_text(name, "/metrics")
        except OSError:
            continue
        if "relaymesh_maintenance_leader 1.0" in text:
            return name
    return None


def fires(cluster: Cluster) -> list[dict[str, object]]:
    rows = cluster.cli_json("workflows", "--name", "tick", "--limit", "1000")
    return [w for w in rows if w["schedule"] == "tick"]


def wait_fires(cluster: Cluster, at_least: int) -> None:
    wait_until(
        lambda: len(fires(cluster)) >= at_least, 30, interval_s=0.3, what=f"{at_least} fires"
    )


def test_every_tick_fires_once_across_two_leader_kills(
    make_cluster: ClusterFactory, store_backend: str | None, tmp_path: Path
) -> None:
    workflow = tmp_path / "tick.json"
    workflow.write_text(json.dumps(TICK))
    cluster = make_cluster(
        store_url=store_backend,
        settings={"schedules.tick": {"workflow": str(workflow), "every_s": 1}},
    )
    cluster.cli("store", "migrate")
    cluster.add_nodes("n1", "n2", "n3")
    cluster.start("n1", "n2", "n3")
    for _kill in range(2):
        wait_until(lambda: leader(cluster) is not None, 20, what="a maintenance leader")
        wait_fires(cluster, len(fires(cluster)) + 3)
        doomed = leader(cluster)
        assert doomed is not None
        cluster.signal(doomed, signal.SIGKILL)
        cluster.wait_exit(doomed, 10)
    wait_until(lambda: leader(cluster) is not None, 20, what="a third leader")
    wait_fires(cluster, len(fires(cluster)) + 3)
    for name, node in cluster.nodes.items():  # stop firing, then read a still store
        if node.running():
            cluster.signal(name, signal.SIGTERM)
            cluster.wait_exit(name, 20)

    rows = fires(cluster)
    keys = [str(w["idempotency_key"]) for w in rows]
    fired = sorted(int(k.rsplit(":", 1)[1]) for k in keys)
    assert len(set(fired)) == len(fired) == len(rows)  # one workflow per tick
    assert all(t % 1000 == 0 for t in fired)
    # Every tick between the first and last fire was fired or skipped, and counted once.
    audits = cluster.cli_json("audit-query", "--action", "submit", "--limit", "1000")
    by_key = {a["details"]["idempotency_key"]: a for a in audits if a["actor"] == "schedule:tick"}
    assert sorted(by_key) == sorted(keys)
    skipped = sum(int(a["details"]["skipped_ticks"]) for a in by_key.values())
    window = (fired[-1] - fired[0]) // 1000 + 1
    assert len(fired) + skipped == window, (fired, skipped)
    # The takeovers are seconds apart, not a pile-up: most ticks were fired on time.
    assert len(fired) >= 9
    listed = cluster.cli_json("schedules")
    assert [(s["name"], s["expression"], s["last_fire_at"]) for s in listed] == [
        ("tick", "every 1s", fired[-1])
    ]
    assert listed[0]["last_workflow_id"] == by_key[f"schedule:tick:{fired[-1]}"]["target"]
