"""A forged DEAD for a live worker reclaims nothing (issue: hostile networks).

An unkeyed mesh accepts a ``Dead`` datagram from anyone who read the wire format. The
gossip verdict is only a hint: a DEAD owner's step is reclaimed at once only when the
store has not seen its lease heartbeated for two heartbeat intervals. Here a live node
keeps heartbeating while the other believes it dead: nothing moves, the refusal is
counted, and the step finishes on its first lease.
"""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from relaymesh.membership.wire import Dead
from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import record_step
from tests.integration.membership.attacks import datagram
from tests.integration.membership.conftest import metric_value

pytestmark = pytest.mark.slow

SETTINGS = {"worker": {"lease_ms": 60_000, "heartbeat_ms": 300}}
"""A long lease (expiry cannot explain anything) and an evidence window of 0.6 s."""


def test_a_forged_dead_for_a_heartbeating_worker_reclaims_nothing(
    make_cluster: ClusterFactory,
) -> None:
    c = make_cluster(settings=SETTINGS)
    c.add_nodes("n1", "n2")
    c.start("n1", "n2")
    for name in c.nodes:
        c.wait_members(name, 2)
    wid = c.submit({"name": "forged", "steps": [record_step("long", c.journal, 4.0)]})

    def started() -> bool:
        return any(j["phase"] == "start" for j in c.journal_lines())

    wait_until(started, 30, interval_s=0.05, what="the step to start")
    running = c.step(wid, "long")
    owner, epoch = str(running["owner_node"]), int(running["lease_epoch"])
    witness = next(n for n in c.nodes if n != owner)

    def owner_row() -> dict[str, object]:
        members = c.http_json(witness, "/api/members")
        return next(m for m in members if m["name"] == owner)  # type: ignore[no-any-return]

    incarnation = int(owner_row()["incarnation"])  # type: ignore[call-overload]
    packet = datagram(Dead(name=owner, incarnation=incarnation, sender="mallory"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(3):
            udp.sendto(packet, ("127.0.0.1", c.nodes[witness].gossip_port))

    def refused() -> float:
        text = c.http_text(witness, "/metrics")
        return metric_value(text, "relaymesh_dead_verdict_refused_total")

    # The witness believed it (this is what makes the test mean something) and refused.
    wait_until(lambda: refused() >= 1, 10, what=f"{witness} to refuse the DEAD verdict")
    after = c.step(wid, "long")
    assert (after["status"], after["owner_node"], after["lease_epoch"]) == ("RUNNING", owner, epoch)

    # The live node refutes: ALIVE again in the store's view of the mesh.
    wait_until(lambda: owner_row()["status"] == "ALIVE", 20, what=f"{owner} ALIVE again")

    doc = c.wait_workflow(wid, {"SUCCEEDED"}, 30)
    [step] = doc["steps"]
    assert (step["lease_epoch"], step["owner_node"]) == (epoch, owner)
    assert step["result"]["epoch"] == epoch and step["result"]["node"] == owner
    events = c.cli_json("ownership-events", "--limit", "100")
    assert Counter(e["event"] for e in events) == Counter({"claimed": 1}), events
    assert [j["step_id"] for j in c.journal_lines() if j["phase"] == "start"] == [step["id"]]
