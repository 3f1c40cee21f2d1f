"""Several cores on the in-memory network: convergence, failure detection, leave, restart."""

from __future__ import annotations

import random
from dataclasses import replace

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.protocol import Swim
from relaymesh.model import MemberStatus

from ._helpers import FAST, Cluster


def dead_times(c: Cluster, name: str) -> list[int]:
    return [t for t, _, e in c.events if e.name == name and e.status is MemberStatus.DEAD]


def false_events(c: Cluster, status: MemberStatus, *, except_: set[str]) -> list[str]:
    return [
        f"{obs} saw {e.name} {e.status}"
        for _, obs, e in c.events
        if e.status is status and e.name not in except_
    ]


def test_cluster_converges() -> None:
    c = Cluster(8)
    c.run(3_000)
    assert c.converged()
    assert all(s.num_alive() == 8 for s in c.swims)
    assert all(s.health_score() == 0 for s in c.swims)


def test_killed_node_goes_suspect_then_dead_everywhere() -> None:
    c = Cluster(8)
    c.run(3_000)
    c.net.kill(c.address(5))
    killed_at = c.clock.monotonic_ms()
    c.run(2_500)
    assert "SUSPECT" in c.statuses("n5") or "DEAD" in c.statuses("n5")
    c.run(30_000)
    assert c.statuses("n5") == {"DEAD"}
    times = dead_times(c, "n5")
    assert len(times) == 7
    assert max(times) - killed_at < 15_000
    assert false_events(c, MemberStatus.SUSPECT, except_={"n5"}) == []
    suspects = [e for _, _, e in c.events if e.name == "n5" and e.status is MemberStatus.SUSPECT]
    assert suspects  # the path to DEAD went through SUSPECT


def test_leave_is_seen_as_left_quickly() -> None:
    c = Cluster(6)
    c.run(3_000)
    leaver = c.swims[3]
    leaver.leave()
    c.net._after(c.net._nodes[leaver.address])  # flush like a driver would
    c.run(1_000)
    c.net.kill(leaver.address)
    c.run(1_000)
    assert c.statuses("n3", among=[s for s in c.swims if s is not leaver]) == {"LEFT"}
    assert dead_times(c, "n3") == []


def test_restarted_node_with_higher_incarnation_is_alive_again() -> None:
    c = Cluster(6)
    c.run(3_000)
    old = c.swims[2]
    c.net.kill(old.address)
    c.run(30_000)
    assert c.statuses("n2") == {"DEAD"}
    reborn = Swim(
        "n2",
        old.address,
        FAST,
        c.clock,
        random.Random(99),
        incarnation=c.clock.wall_ms(),  # as the driver does: above any it used
    )
    c.net.add(reborn)
    c.net.join(reborn.address, [c.address(0)])
    c.run(5_000)
    others = [s for s in c.swims if s is not old]
    assert c.statuses("n2", among=others) == {"ALIVE"}
    assert reborn.num_alive() == 6


def test_restart_with_lower_incarnation_refutes_its_own_death() -> None:
    c = Cluster(5)
    c.run(3_000)
    old = c.swims[1]
    c.net.kill(old.address)
    c.run(30_000)
    reborn = Swim("n1", old.address, FAST, c.clock, random.Random(5), incarnation=0)
    c.net.add(reborn)
    c.net.join(reborn.address, [c.address(0)])
    c.run(5_000)
    assert c.statuses("n1", among=[s for s in c.swims if s is not old]) == {"ALIVE"}
    assert reborn.local.incarnation > old.local.incarnation


def test_lossy_network_converges_without_false_dead() -> None:
    c = Cluster(10, loss=0.05, delay_ms=(1, 20), seed=3)
    c.run(60_000)
    assert c.converged()
    assert false_events(c, MemberStatus.DEAD, except_=set()) == []


def test_frozen_node_is_not_declared_dead() -> None:
    c = Cluster(8)
    c.run(3_000)
    c.net.freeze(c.address(4), 2_000)
    c.run(30_000)
    assert dead_times(c, "n4") == []
    assert false_events(c, MemberStatus.DEAD, except_=set()) == []
    assert c.converged()


def test_partition_then_heal_converges_again() -> None:
    cfg = replace(FAST, push_pull_interval_ms=10_000)
    c = Cluster(6, config=cfg)
    c.run(3_000)
    left, right = [c.address(i) for i in range(3)], [c.address(i) for i in range(3, 6)]
    c.net.partition([left, right])
    c.run(40_000)
    assert c.statuses("n4", among=c.swims[:3]) == {"DEAD"}
    c.net.heal()
    c.run(40_000)
    assert c.converged()


def test_different_keys_cannot_talk_and_a_secondary_key_can() -> None:
    k1, k2, k3 = b"1" * 32, b"2" * 32, b"3" * 32
    # Mid-rotation: n0 and n1 have the new key k2 installed as secondary, n2 already
    # seals with it; n3 has an unrelated key.
    rings = [Keyring([k1, k2]), Keyring([k1, k2]), Keyring([k2, k1]), Keyring([k3])]
    c = Cluster(4, keyrings=rings)
    c.run(5_000)
    first_three = c.swims[:3]
    assert c.converged(first_three)
    assert c.swims[3].num_alive() == 1
    assert all(s.member("n3") is None for s in first_three)
    assert c.swims[0].stats.dropped["auth"] > 0
    try:
        c.swims[3].merge_state(c.swims[0].encode_state())
    except ProtocolError as exc:
        assert exc.reason == "auth"
    assert c.swims[3].stats.dropped["auth"] == 1


def test_label_mismatch_is_dropped() -> None:
    c = Cluster(3, labels=["prod", "prod", "test"])
    c.run(5_000)
    assert c.converged(c.swims[:2])
    assert c.swims[2].num_alive() == 1
    assert c.swims[0].stats.dropped["label"] > 0


def test_lifeguard_off_still_detects_failure() -> None:
    c = Cluster(6, config=replace(FAST, lifeguard=False))
    c.run(3_000)
    c.net.kill(c.address(2))
    c.run(20_000)
    assert c.statuses("n2") == {"DEAD"}
    assert all(s.health_score() == 0 for s in c.swims)


def test_slow_nodes_are_not_declared_dead() -> None:
    c = Cluster(10, seed=11)
    c.run(3_000)
    c.net.slow(c.address(7), (500, 2500))  # handles packets 0.5-2.5 s late
    c.run(60_000)
    assert false_events(c, MemberStatus.DEAD, except_=set()) == []


def test_runs_are_deterministic() -> None:
    def trace() -> list[tuple[int, str, str, str]]:
        c = Cluster(6, loss=0.1, seed=5)
        c.run(3_000)
        c.net.kill(c.address(1))
        c.run(20_000)
        return [(t, o, e.name, e.status.value) for t, o, e in c.events]

    assert trace() == trace()


def test_memory_network_counts_pushpull_apart_from_datagrams() -> None:
    c = Cluster(4, config=replace(FAST, push_pull_interval_ms=5_000))
    c.run(20_000)
    assert c.net.pushpull_exchanges >= 3 + 4  # the joins, then periodic ones
    assert c.net.pushpull_bytes > 0
    assert c.net.packets_sent >= c.net.packets_delivered + c.net.packets_lost
    assert all(s.stats.anti_entropy_merges > 0 for s in c.swims)


def test_partition_without_pushpull_needs_the_dead_peer_retry() -> None:
    c = Cluster(4)
    c.run(3_000)
    c.net.partition([[c.address(0), c.address(1)]])  # n2, n3 form the other group
    assert not c.net.reachable(c.address(0), c.address(2))
    assert c.net.reachable(c.address(2), c.address(3))
    c.run(30_000)
    assert c.statuses("n2", among=c.swims[:2]) == {"DEAD"}
    c.net.heal()
    c.run(200_000)
    assert c.converged()
