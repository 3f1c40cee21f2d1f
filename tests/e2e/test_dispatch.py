"""Dispatch statistics, the V2 mesh metrics and gossip-sync on real ``relaymesh node run``
processes (both stores): outcomes on two nodes summed by ``mesh-summary`` and
``GET /api/stats`` from the store, the nodes' ``/metrics``, and one anti-entropy
exchange asked for through the store (CLI) or directly (HTTP on the serving node)."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import Cluster

FAST = {"dispatch": {"summary_interval_ms": 200}}


def scrape(c: Cluster, name: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{c.nodes[name].http_port}/metrics"
    with urllib.request.urlopen(url, timeout=2.0) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def post(c: Cluster, name: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{c.nodes[name].http_port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def summary(c: Cluster) -> dict[str, Any]:
    result = c.cli("mesh-summary", "--json", check=False)
    assert result.returncode in (0, 1, 2), result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_dispatch_window_metrics_and_gossip_sync(
    make_cluster: ClusterFactory, store_backend: str | None
) -> None:
    c = make_cluster(settings=FAST, store_url=store_backend)
    c.add_nodes("a", "b")
    c.start("a", "b")
    c.wait_members("a", 2)
    c.wait_members("b", 2)
    steps: list[dict[str, Any]] = [{"name": f"e{i}", "agent": "echo"} for i in range(3)]
    steps += [{"name": f"f{i}", "agent": "fail", "input": {"kind": "permanent"}} for i in range(2)]
    wf = c.submit({"name": "mixed", "steps": steps})
    c.wait_workflow(wf, {"FAILED"}, timeout_s=30)

    # mesh-summary reads the whole mesh's window from the store, whichever node ran what.
    wait_until(lambda: summary(c)["dispatch"]["total"] == 5, 20, what="5 samples in the store")
    doc = summary(c)["dispatch"]
    assert (doc["window_s"], doc["success"], doc["failed"]) == (3600, 3, 2)
    assert doc["rate"] == 0.6
    assert doc["failure_reasons"] == {"agent_error": 2}
    assert doc["agents"]["echo"]["success"] == 3
    assert doc["agents"]["fail"]["rate"] == 0.0
    assert set(doc["nodes"]) <= {"a", "b"}
    assert sum(n["total"] for n in doc["nodes"].values()) == 5
    human = c.cli("mesh-summary", check=False).stdout
    assert "dispatch (last 1 h): 5 total, 3 ok, 2 failed, rate 60.0% (agent_error 2)" in human
    assert "agent fail: 2 total, 0 ok, 2 failed" in human
    assert c.http_json("b", "/api/stats")["dispatch"]["total"] == 5

    # Each node counts its own outcomes; the V2 gauges come from the store.
    scraped = {name: scrape(c, name) for name in ("a", "b")}
    ok_key = 'relaymesh_dispatch_total{reason="ok",result="success"}'
    err_key = 'relaymesh_dispatch_total{reason="agent_error",result="failed"}'
    assert sum(s.get(ok_key, 0) for s in scraped.values()) == 3
    assert sum(s.get(err_key, 0) for s in scraped.values()) == 2
    for samples in scraped.values():
        assert samples['relaymesh_mesh_nodes_total{status="ALIVE"}'] == 2
        assert samples['relaymesh_running_steps_by_owner_status{status="ALIVE"}'] == 0
        assert samples["relaymesh_oldest_dead_node_age_ms"] == 0
        assert "relaymesh_dispatch_success_rate" in samples

    # gossip-sync through the store: node a runs one exchange (with b, its only peer).
    synced = c.cli_json("gossip-sync", "--node", "a")
    assert synced["node"] == "a" and synced["error"] is None
    assert synced["peer"].startswith("b@")
    assert isinstance(synced["merged_here"], int) and isinstance(synced["merged_there"], int)
    human = c.cli("gossip-sync", "--node", "b").stdout
    assert human.startswith("b exchanged with a@")
    # Over HTTP: directly on the serving node, or asked through the store for another.
    status, direct = post(c, "a", "/api/gossip-sync", {"node": "a"})
    assert status == 200 and direct["node"] == "a" and direct["peer"].startswith("b@")
    status, remote = post(c, "a", "/api/gossip-sync", {"node": "b"})
    assert status == 200 and remote["node"] == "b" and remote["error"] is None
    audit = c.cli_json("audit-query", "--action", "gossip_sync")
    assert {row["target"] for row in audit} == {"a", "b"}
    unknown = c.cli("gossip-sync", "--node", "nosuch", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: no member named 'nosuch' in the mesh table"
    ]
    status, body = post(c, "a", "/api/gossip-sync", {"node": "nosuch"})
    assert status == 404 and "nosuch" in body["error"]

    # A DEAD member: its age on /metrics, and gossip-sync refuses to ask it.
    c.signal("b", signal.SIGKILL)
    c.wait_exit("b", 10)
    wait_until(
        lambda: scrape(c, "a").get("relaymesh_oldest_dead_node_age_ms", 0) > 0,
        30,
        interval_s=0.5,
        what="a DEAD member's age on a's /metrics",
    )
    assert scrape(c, "a")['relaymesh_mesh_nodes_total{status="DEAD"}'] == 1
    dead = c.cli("gossip-sync", "--node", "b", check=False)
    assert dead.returncode == 1 and "DEAD" in dead.stderr
