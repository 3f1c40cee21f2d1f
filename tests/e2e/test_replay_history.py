"""A replayed dead letter keeps its history, through real processes on both stores: the
attempt counter goes on (so an agent that fails its first run succeeds on the replayed
second one, which a reset counter would fail again), ``status`` shows the replay and
the attempt it came from, the audit row says so, and every run stays in the
ownership events."""

from __future__ import annotations

from tests.e2e.conftest import ClusterFactory

FAILS_FIRST_RUN = {
    "name": "flaky",
    "steps": [
        {
            "name": "once",
            "agent": "fail",
            "input": {"kind": "permanent", "times": 1},
            "retry": {"max_attempts": 1},
        }
    ],
}


def test_replay_keeps_the_attempt_history(
    make_cluster: ClusterFactory, store_backend: str | None
) -> None:
    c = make_cluster(store_url=store_backend)
    c.add_nodes("n1")
    c.start("n1")
    wid = c.submit(FAILS_FIRST_RUN)
    c.wait_workflow(wid, {"FAILED"}, 60)
    dead = c.step(wid, "once")
    assert (dead["status"], dead["attempt"], dead["max_attempts"]) == ("DEAD_LETTER", 1, 1)
    assert dead["replays"] == []

    said = c.cli("replay", dead["id"]).stdout
    assert "was DEAD_LETTER at attempt 1" in said and "attempt 1/2" in said, said
    done = c.wait_workflow(wid, {"SUCCEEDED"}, 60)
    step = next(s for s in done["steps"] if s["name"] == "once")
    # The second run is attempt 2: the fail agent fails attempts <= times (1) only.
    assert (step["status"], step["attempt"], step["max_attempts"]) == ("SUCCEEDED", 2, 2)
    assert step["result"] == {"attempt": 2}
    [replay] = step["replays"]
    assert replay["from_status"] == "DEAD_LETTER" and replay["from_attempt"] == 1
    assert replay["max_attempts"] == 1 and replay["actor"].startswith("cli:")
    assert replay["error"]["kind"] == "permanent"

    table = c.cli("status", wid).stdout
    assert "1x, last from DEAD_LETTER at attempt 1/1" in table, table
    [audit] = c.cli_json("audit-query", "--action", "replay", "--task-id", dead["id"])
    assert audit["details"]["from_attempt"] == 1 and audit["details"]["from"] == "DEAD_LETTER"
    events = [
        e["event"] for e in reversed(c.cli_json("ownership-events")) if e["step_id"] == dead["id"]
    ]
    assert events.count("claimed") == 2 and "replayed" in events, events

    # replay-batch records the attempt each step was replayed from.
    again = c.submit(FAILS_FIRST_RUN)
    c.wait_workflow(again, {"FAILED"}, 60)
    assert c.cli_json("replay-batch", "--status", "DEAD_LETTER", "--limit", "10") == {
        "replayed": 1
    }
    [batch] = c.cli_json("audit-query", "--action", "replay-batch")
    assert batch["details"]["from_attempts"] == {c.step(again, "once")["id"]: 1}
    c.wait_workflow(again, {"SUCCEEDED"}, 60)
