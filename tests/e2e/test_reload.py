"""Settings reload, the resource guard and a cut-short drain, against real ``relaymesh
node run`` processes: each test shows the running node *behave* differently (claims,
results, a breaker), not only that a field name was recorded."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import RECORD_AGENT, Cluster, pid_alive, record_step, write_settings

pytestmark = pytest.mark.slow


def tool_agent(version: int) -> dict[str, Any]:
    """``[agents.tool]``: a script whose result says which definition ran it."""
    code = f"import json; print(json.dumps({{'version': {version}}}))"
    return {"command": [sys.executable, "-c", code], "timeout_s": 30}


# The record script under an agent without the default per-agent concurrency of 2, so
# the worker's slots are what limits it.
HOLD_AGENT = {"command": [sys.executable, str(RECORD_AGENT)], "timeout_s": 120, "concurrency": 8}


def hold_step(name: str, c: Cluster, seconds: float) -> dict[str, Any]:
    return {**record_step(name, c.journal, seconds), "agent": "hold"}


def log_events(c: Cluster, name: str, event: str) -> list[dict[str, Any]]:
    """The node's JSON log lines for ``event`` (its stderr is not a TTY: JSON lines)."""
    found = []
    for line in c.nodes[name].log_path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            found.append(doc)
    return found


def metric(c: Cluster, name: str, sample: str) -> float:
    url = f"http://127.0.0.1:{c.nodes[name].http_port}/metrics"
    with urllib.request.urlopen(url, timeout=2.0) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == sample:
            return float(value)
    return 0.0


def statuses(c: Cluster, wid: str) -> dict[str, str]:
    return {s["name"]: s["status"] for s in c.status(wid)["steps"]}


def post(c: Cluster, name: str, path: str, doc: Any) -> Any:
    url = f"http://127.0.0.1:{c.nodes[name].http_port}{path}"
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5.0) as resp:
        assert resp.status in (200, 201)
        return json.loads(resp.read())


def run_one(c: Cluster, agent: str, input: Any = None) -> dict[str, Any]:
    """One step, run to its end. Submitted with the settings the node started with (one
    test below breaks the node's settings file on purpose; the CLI would refuse it)."""
    cli_config = c.root / "cli.toml"
    if not cli_config.exists():
        cli_config.write_text(c.config.read_text())
    workflow = {"name": f"one-{agent}", "steps": [{"name": "s", "agent": agent, "input": input}]}
    out = c.cli("--config", str(cli_config), "submit", "-", stdin=json.dumps(workflow)).stdout
    doc = c.wait_workflow(out.strip().splitlines()[-1], {"SUCCEEDED", "FAILED"}, 30)
    step: dict[str, Any] = doc["steps"][0]
    return step


def test_sighup_changes_slots_and_an_agent_and_a_bad_file_changes_nothing(
    make_cluster: ClusterFactory,
) -> None:
    base = {"worker": {"slots": 1}, "agents.tool": tool_agent(1), "agents.hold": HOLD_AGENT}
    c = make_cluster(settings=base)
    c.add_nodes("n1")
    c.start("n1")
    assert run_one(c, "tool")["result"] == {"version": 1}

    # One slot: of three long steps one runs, the others wait (watched for a second,
    # ten claim rounds at poll_ms 100).
    wid = c.submit({"name": "long", "steps": [hold_step(f"r{i}", c, 60) for i in range(3)]})
    wait_until(lambda: "RUNNING" in statuses(c, wid).values(), 20, what="the first step to run")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert list(statuses(c, wid).values()).count("RUNNING") == 1
        time.sleep(0.1)

    # SIGHUP with three slots and a new definition of the tool agent.
    write_settings(
        c.config, {"worker": {"slots": 4}, "agents.tool": tool_agent(2), "agents.hold": HOLD_AGENT}
    )
    c.signal("n1", signal.SIGHUP)
    wait_until(
        lambda: list(statuses(c, wid).values()).count("RUNNING") == 3,
        15,
        what="all three long steps running after the reload",
    )
    assert run_one(c, "tool")["result"] == {"version": 2}  # the fourth slot, new definition
    [reloaded] = log_events(c, "n1", "settings_reloaded")
    assert sorted(reloaded["changed"]) == ["agents.tool.command", "worker.slots"]
    history = c.cli_json("settings-history", "--limit", "10")
    assert [(h["node"], sorted(h["fields"])) for h in history] == [
        ("n1", ["agents.tool.command", "worker.slots"])
    ]

    # A bad file (a wrong type beside a new tool definition): refused whole, said so in
    # one line, the running settings kept.
    c.config.write_text(
        c.config.read_text()
        .replace("slots = 4", 'slots = "many"')
        .replace("'version': 2", "'version': 3")
    )
    c.signal("n1", signal.SIGHUP)
    wait_until(lambda: log_events(c, "n1", "settings_reload_failed"), 15, what="the refusal")
    [failed] = log_events(c, "n1", "settings_reload_failed")
    assert failed["level"] == "error" and failed["source"] == "sighup"
    assert failed["error"].startswith("invalid setting worker.slots:")
    assert failed["outcome"] == "kept the settings in force"
    assert run_one(c, "tool")["result"] == {"version": 2}
    assert list(statuses(c, wid).values()).count("RUNNING") == 3
    good = str(c.root / "cli.toml")
    history = json.loads(c.cli("--config", good, "settings-history", "--json").stdout)
    assert len(history) == 1  # the refused file recorded nothing
    assert c.nodes["n1"].running()


def test_api_reload_lowers_a_breaker_threshold(make_cluster: ClusterFactory) -> None:
    settings = {"worker": {"slots": 1}, "breaker": {"failure_threshold": 100, "open_ms": 600_000}}
    c = make_cluster(settings=settings)
    c.add_nodes("n1")
    c.start("n1")
    failing = [{"name": f"f{i}", "agent": "fail", "input": {"kind": "permanent"}} for i in range(4)]
    sample = 'relaymesh_breaker_state{agent="fail"}'

    # Threshold 100: four failures in a row leave the breaker closed.
    first = c.submit({"name": "before", "steps": failing})
    c.wait_workflow(first, {"FAILED"}, 30)
    assert set(statuses(c, first).values()) == {"DEAD_LETTER"}
    assert metric(c, "n1", sample) == 0  # CLOSED
    # A success resets the run of failures, so only the new threshold decides below.
    ok = run_one(c, "fail", {"kind": "permanent", "times": 0})
    assert ok["status"] == "SUCCEEDED"

    write_settings(c.config, {**settings, "breaker": {"failure_threshold": 2, "open_ms": 600_000}})
    assert post(c, "n1", "/api/reload-settings", {"node": "n1"})["node"] == "n1"
    wait_until(
        lambda: any(
            "breaker.failure_threshold" in r["changed"]
            for r in log_events(c, "n1", "settings_reloaded")
        ),
        15,
        what="n1 to poll the reload request and apply it",
    )

    # Threshold 2 (one step at a time): two failures open the breaker, the rest wait.
    second = c.submit({"name": "after", "steps": failing})
    wait_until(lambda: metric(c, "n1", sample) == 2, 20, what="the breaker to open")  # OPEN
    wait_until(
        lambda: sorted(statuses(c, second).values()).count("DEAD_LETTER") == 2,
        10,
        what="the two failures that opened it to be committed",
    )
    assert sorted(statuses(c, second).values()) == ["DEAD_LETTER", "DEAD_LETTER", "READY", "READY"]
    transitions = c.cli_json("audit-query", "--action", "breaker_transition")
    assert [(a["details"]["from"], a["details"]["to"]) for a in transitions] == [("CLOSED", "OPEN")]


def test_resource_guard_refuses_to_claim_until_a_reload_relaxes_it(
    make_cluster: ClusterFactory,
) -> None:
    # The real /proc/meminfo reading: no host has 10^9 MB available.
    strict = {"guard": {"max_load": 1000.0, "min_available_mb": 10**9, "max_swap_pct": 100.0}}
    c = make_cluster(settings=strict)
    c.add_nodes("n1")
    c.start("n1")
    wid = c.submit({"name": "g", "steps": [{"name": "s", "agent": "echo", "input": 1}]})
    wait_until(lambda: log_events(c, "n1", "worker_paused"), 15, what="the guard to pause n1")
    [paused] = log_events(c, "n1", "worker_paused")
    assert paused["reason"] == "memory"
    assert "< min_available_mb 1000000000" in paused["detail"]
    assert paused["detail"].startswith("available memory ")
    wait_until(
        lambda: metric(c, "n1", 'relaymesh_worker_paused_total{reason="memory"}') >= 3,
        15,
        what="several refused claim rounds",
    )
    assert statuses(c, wid) == {"s": "READY"}
    assert c.step(wid, "s")["owner_node"] is None

    write_settings(c.config, {"guard": {"min_available_mb": 0, "max_load": 1000.0}})
    c.cli("reload-settings", "--node", "n1")
    doc = c.wait_workflow(wid, {"SUCCEEDED"}, 20)
    assert doc["steps"][0]["result"] == 1 and doc["steps"][0]["owner_node"] == "n1"
    assert [e["was"] for e in log_events(c, "n1", "worker_resumed")] == ["memory"]


def test_a_second_sigterm_cuts_a_long_drain_short(make_cluster: ClusterFactory) -> None:
    c = make_cluster(settings={"worker": {"drain_timeout_s": 120}})
    c.add_nodes("n1")
    c.start("n1")
    wid = c.submit({"name": "d", "steps": [record_step("long", c.journal, 100)]})
    wait_until(
        lambda: any(j["phase"] == "start" for j in c.journal_lines()), 20, what="the step to start"
    )
    [start] = c.journal_lines()
    c.signal("n1", signal.SIGTERM)
    wait_until(lambda: log_events(c, "n1", "node_draining"), 10, what="the drain to begin")
    assert c.nodes["n1"].running()  # draining: waiting for the step, up to 120 s
    started = time.monotonic()
    c.signal("n1", signal.SIGTERM)
    assert c.wait_exit("n1", 15) == 0
    assert time.monotonic() - started < 15
    assert log_events(c, "n1", "drain_cut_short")
    # The step was released for another node, its agent (and process group) killed.
    wait_until(lambda: not pid_alive(int(start["pid"])), 5, what="the agent to be killed")
    step = c.step(wid, "long")
    assert (step["status"], step["owner_node"], step["attempt"]) == ("READY", None, 0)
    events = [
        e["event"]
        for e in c.cli_json("ownership-events", "--limit", "20")
        if e["step_id"] == step["id"]
    ]
    assert events.count("released") == 1
