"""The operator commands against a real node: JSON shapes, exit codes, audit."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import now_ms, write_settings

pytestmark = pytest.mark.slow

STEP_KEYS = {
    "id",
    "name",
    "agent",
    "status",
    "attempt",
    "max_attempts",
    "lease_epoch",
    "owner_node",
    "depends_on",
    "result",
    "error",
}
WORKFLOW = {
    "name": "cli-e2e",
    "steps": [
        {"name": "fetch", "agent": "echo", "input": {"n": 1}, "priority": "high"},
        {"name": "use", "agent": "echo", "input": {"n": 2}, "depends_on": ["fetch"]},
        {"name": "broken", "agent": "fail", "input": {"kind": "permanent", "times": 100}},
        {"name": "broken2", "agent": "fail", "input": {"kind": "permanent", "times": 100}},
    ],
}


def test_malformed_workflows_give_one_line_and_write_nothing(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    bad_inputs = [
        "{not json",
        json.dumps({"name": "x", "steps": [{"name": "a", "agent": "nope"}]}),
        json.dumps(
            {
                "name": "x",
                "steps": [
                    {"name": "a", "agent": "echo", "depends_on": ["b"]},
                    {"name": "b", "agent": "echo", "depends_on": ["a"]},
                ],
            }
        ),
    ]
    for text in bad_inputs:
        result = c.cli("submit", "-", stdin=text, check=False)
        assert result.returncode != 0, text
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert result.stdout == ""
    assert c.cli_json("tasks") == []
    assert c.cli_json("audit-query") == []


@pytest.mark.timeout(300)  # ~35 CLI processes; each pays the interpreter start-up
def test_operator_commands(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    c.add_nodes("n1")
    c.start("n1")
    before = now_ms()
    wid = c.submit(WORKFLOW)
    assert len(wid) >= 8

    doc = c.wait_workflow(wid, {"FAILED"}, 30)
    assert set(doc) == {"workflow", "steps"}
    assert {"id", "name", "status", "created_at"} <= set(doc["workflow"])
    by_name = {s["name"]: s for s in doc["steps"]}
    for step in doc["steps"]:
        assert set(step) >= STEP_KEYS
    assert by_name["use"]["status"] == "SUCCEEDED"
    assert by_name["use"]["result"] == {"n": 2}
    assert by_name["use"]["depends_on"] == ["fetch"]
    assert by_name["broken"]["status"] == "DEAD_LETTER"
    assert by_name["broken"]["error"]["kind"] == "permanent"

    tasks = c.cli_json("tasks", "--workflow", wid)
    assert {s["name"] for s in tasks} == set(by_name)
    failing = c.cli_json("tasks", "--agent", "fail", "--status", "DEAD_LETTER", "--limit", "5")
    assert {s["name"] for s in failing} == {"broken", "broken2"}
    dead = c.cli_json("dead")
    assert {s["name"] for s in dead} == {"broken", "broken2"}

    events = c.cli_json("ownership-events", "--since", str(before))
    assert {"claimed"} <= {e["event"] for e in events}
    assert all({"step_id", "node", "event", "lease_epoch", "at"} <= set(e) for e in events)

    summary = c.cli("mesh-summary", "--json", check=False)
    doc = json.loads(summary.stdout)
    assert set(doc) == {
        "local",
        "members",
        "running_by_owner_status",
        "dispatch",
        "healthy",
        "status",
        "reasons",
    }
    assert set(doc["members"]) == {"alive", "suspect", "dead", "left"}
    assert doc["members"]["alive"] == 1
    assert summary.returncode == 0
    assert (doc["healthy"], doc["status"], doc["reasons"]) == (True, "healthy", [])

    report = c.cli_json("conflicts", "--report")
    assert set(report) == {"total", "by_step", "by_node", "by_event"}

    # reload-settings: the node polls the request from the store and records it.
    req = c.cli_json("reload-settings", "--node", "n1")
    assert req["node"] == "n1"
    history: list[dict[str, object]] = []

    def recorded(field: str | None) -> bool:
        history[:] = c.cli_json("settings-history", "--limit", "5")
        return any(r["node"] == "n1" and (field is None or field in r["fields"]) for r in history)

    wait_until(lambda: recorded(None), 15, what="n1 to pick up the reload request")
    assert {"id", "at", "node", "fields"} <= set(history[0])
    assert "cli:" in c.cli_json("audit-query", "--action", "reload_request")[0]["actor"]

    # SIGHUP: the hot part is reloaded and the changed field names recorded.
    write_settings(c.config, {"worker": {"slots": 3}, "gossip": {"probe_interval_ms": 300}})
    c.signal("n1", signal.SIGHUP)
    wait_until(lambda: recorded("worker.slots"), 15, what="the SIGHUP reload to be recorded")
    changed = next(r for r in history if "worker.slots" in r["fields"])  # type: ignore[operator]
    assert changed["node"] == "n1"
    # gossip timings need a restart: not applied, recorded as refused.
    assert changed["fields"] == ["worker.slots"]
    assert changed["refused"] == ["gossip.probe_interval_ms"]

    # Stop the node so replays stay put, then replay.
    c.signal("n1", signal.SIGTERM)
    assert c.wait_exit("n1", 20) == 0
    broken_id = by_name["broken"]["id"]
    replayed = c.cli_json("replay", broken_id)
    assert replayed["status"] == "READY"
    assert c.cli("replay", broken_id, check=False).returncode != 0  # no longer a dead letter
    first = c.cli_json("replay-batch", "--status", "DEAD_LETTER", "--limit", "100")
    second = c.cli_json("replay-batch", "--status", "DEAD_LETTER", "--limit", "100")
    assert first == {"replayed": 1}
    assert second == {"replayed": 0}

    soft = c.cli_json("cancel", wid, "--mode", "soft")
    assert soft["cancelled"] == 2
    # Both dead letters were replayed, then cancelled: nothing dead is left, so CANCELLED.
    after_cancel = c.cli_json("status", wid)
    assert after_cancel["workflow"]["status"] == "CANCELLED"
    assert {s["name"]: s["status"] for s in after_cancel["steps"]} == {
        "fetch": "SUCCEEDED",
        "use": "SUCCEEDED",
        "broken": "CANCELLED",
        "broken2": "CANCELLED",
    }
    assert c.cli("cancel", "nope", "--mode", "hard", check=False).returncode == 1

    audit = c.cli_json("audit-query", "--task-id", wid)
    actions = {r["action"] for r in audit}
    assert {"submit", "cancel"} <= actions
    assert all(r["actor"].startswith("cli:") for r in audit if r["action"] in {"submit", "cancel"})
    replay_rows = c.cli_json("audit-query", "--task-id", broken_id, "--action", "replay")
    assert replay_rows and replay_rows[0]["actor"].startswith("cli:")
    # --from/--to bound the rows: the submit came seconds before the cancel.
    [submit_at] = [int(r["at"]) for r in audit if r["action"] == "submit"]
    iso_from = "2000-01-01T00:00:00Z"
    window = ("audit-query", "--task-id", wid, "--from", iso_from)
    up_to_submit = c.cli_json(*window, "--to", str(submit_at))
    assert [r["action"] for r in up_to_submit] == ["submit"]
    assert c.cli_json(*window, "--to", str(submit_at - 1)) == []
    since_submit = {r["action"] for r in c.cli_json(*window[:3], "--from", str(submit_at + 1))}
    assert "cancel" in since_submit and "submit" not in since_submit
    bad_time = c.cli("audit-query", "--from", "yesterday", check=False)
    assert bad_time.returncode != 0 and "ISO-8601" in bad_time.stderr

    # The node left: no ALIVE member is unhealthy (exit 2); prune forgets it.
    left = c.cli("mesh-summary", "--json", check=False)
    assert left.returncode == 2, left.stdout
    assert json.loads(left.stdout)["members"]["left"] == 1
    assert c.cli_json("mesh-recover") == {"reclaimed": 0, "step_ids": [], "still_heartbeating": 0}
    maint = c.cli_json("maintenance", "--node-id", "n1")
    assert {"expired", "dead_owners", "promoted"} <= set(maint)
    assert c.cli_json("mesh-prune", "--older-than-ms", "0")["pruned"] == 1
    prune_audit = c.cli_json("audit-query", "--action", "prune")
    assert any(r["actor"].startswith("cli:") and r["details"]["count"] == 1 for r in prune_audit)
