"""``Swim.preload``: a node started with a persisted view, without gossip or events."""

from __future__ import annotations

import random
from dataclasses import replace

from relaymesh.clock import FakeClock
from relaymesh.membership.memory import MemoryNetwork
from relaymesh.membership.protocol import Swim
from relaymesh.membership.state import Member
from relaymesh.membership.wire import Alive, Ping
from relaymesh.model import MemberStatus

from ._helpers import FAST, Cluster, core, sent_messages

ALIVE, SUSPECT, DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD


def _member(name: str, port: int, status: MemberStatus = ALIVE, incarnation: int = 0) -> Member:
    return Member(name, ("127.0.0.1", port), status, incarnation, {"role": name})


def _preloaded_cluster(n: int, **kwargs: object) -> Cluster:
    """A cluster whose nodes never joined: each starts with every other's record."""
    cluster = Cluster(n, join=False, **kwargs)  # type: ignore[arg-type]
    records = [swim.local for swim in cluster.swims]
    for swim in cluster.swims:
        swim.preload(records)  # its own record among them: skipped
    return cluster


def _peer_events(cluster: Cluster) -> list[tuple[str, str]]:
    """(observer, subject) of every event about another member (not a core's own start)."""
    return [(observer, e.name) for _, observer, e in cluster.events if e.name != observer]


def test_preload_adds_members_without_events_or_gossip() -> None:
    swim, _ = core("a")
    swim.take_events()  # our own ALIVE, from the constructor
    swim.preload([_member("b", 7001), _member("c", 7002), _member("d", 7003, DEAD, 4)])

    assert swim.num_alive() == 3
    b = swim.member("b")
    assert b is not None and b.status is ALIVE and b.metadata == {"role": "b"}
    d = swim.member("d")
    assert d is not None and d.status is DEAD and d.incarnation == 4
    assert swim.take_events() == []
    assert len(swim._diss.broadcasts) == 0
    assert swim.take_outbound() == []


def test_preload_copies_the_records_it_is_given() -> None:
    shared = _member("b", 7001)
    x, _ = core("x", 7100)
    y, _ = core("y", 7101)
    x.preload([shared])
    y.preload([shared])
    shared.metadata["role"] = "changed"
    shared.status = DEAD
    for swim in (x, y):
        b = swim.member("b")
        assert b is not None and b.status is ALIVE and b.metadata == {"role": "b"}
    assert x._table.members["b"] is not y._table.members["b"]


def test_preload_skips_ourselves_and_members_already_known() -> None:
    swim, _ = core("a")
    swim.preload([_member("b", 7001, incarnation=5)])
    swim.preload([_member("a", 7999, DEAD, 9), _member("b", 7001, DEAD, 7)])

    local = swim.member("a")
    assert local is not None and local.status is ALIVE and local.incarnation == 0
    b = swim.member("b")
    assert b is not None and b.status is ALIVE and b.incarnation == 5
    assert swim.num_alive() == 2
    assert swim._table.peer_names == ["b"]


def test_preload_respects_max_members() -> None:
    swim, _ = core("a", config=replace(FAST, max_members=3))
    swim.preload([_member(f"p{i}", 7001 + i) for i in range(5)])
    assert len(swim.members()) == 3
    assert swim.num_alive() == 3


def test_first_probe_of_a_preloaded_node_pings_a_preloaded_peer() -> None:
    swim, clock = core("a")
    peers = {"b": 7001, "c": 7002}
    swim.preload([_member(name, port) for name, port in peers.items()])
    swim.take_events()
    clock.advance(swim.config.probe_interval_ms)
    swim.tick()

    sent = sent_messages(swim)
    pings = [(dst, m) for dst, m in sent if isinstance(m, Ping)]
    assert len(pings) == 1
    dst, ping = pings[0]
    assert ping.target in peers and dst == ("127.0.0.1", peers[ping.target])
    # Nothing was queued, so nothing rides along: no ALIVE re-announcing the view.
    assert not any(isinstance(m, Alive) for _, m in sent)


def test_preloaded_nodes_probe_each_other_quietly() -> None:
    cluster = _preloaded_cluster(8)
    assert all(swim.num_alive() == 8 for swim in cluster.swims)
    cluster.run(20_000)

    # Every node was pinged (probed) by some peer and answered: nobody heard of anyone new,
    # nobody suspected anyone.
    assert all(swim.stats.packets_received >= 10 for swim in cluster.swims)
    assert _peer_events(cluster) == []
    assert cluster.converged()


def test_preloaded_member_that_is_killed_is_declared_dead_by_every_survivor() -> None:
    cluster = _preloaded_cluster(8)
    victim = cluster.swims[5]
    cluster.run(5_000)
    cluster.net.kill(victim.address)
    cluster.run(40_000)

    survivors = [s for s in cluster.swims if s is not victim]
    assert cluster.statuses(victim.name, among=survivors) == {"DEAD"}
    assert all(swim.num_alive() == 7 for swim in survivors)
    # Only the victim was ever suspected or declared dead.
    assert {subject for _, subject in _peer_events(cluster)} == {victim.name}


def test_preloaded_suspect_is_resolved_like_any_suspicion() -> None:
    # "c" does not exist: a view saved while it was suspected. It must end DEAD, not
    # stay SUSPECT forever, and no event is emitted for the preload itself.
    swim, clock = core("a")
    swim.take_events()
    swim.preload([_member("b", 7001), _member("c", 7002, SUSPECT, 2)])
    assert swim.take_events() == []
    assert swim.num_alive() == 3

    deadline_ms = clock.monotonic_ms() + 120_000
    while clock.monotonic_ms() < deadline_ms:
        clock.set(max(swim.next_deadline_ms(), clock.monotonic_ms() + 1))
        swim.tick()
        swim.take_outbound()  # nobody answers
        c = swim.member("c")
        assert c is not None
        if c.status is DEAD:
            break
    c = swim.member("c")
    assert c is not None and c.status is DEAD
    assert any(e.name == "c" and e.status is DEAD for e in swim.take_events())


def test_preload_gives_the_same_view_as_a_converged_join() -> None:
    """The fields a joined cluster ends up with, bar the timestamps."""
    joined = Cluster(5)
    joined.run(20_000)
    assert joined.converged()
    preloaded = _preloaded_cluster(5)

    def view(swim: Swim) -> list[tuple[str, tuple[str, int], MemberStatus, int]]:
        return sorted((m.name, m.address, m.status, m.incarnation) for m in swim.members())

    for a, b in zip(joined.swims, preloaded.swims, strict=True):
        assert view(a) == view(b)
        assert a.num_alive() == b.num_alive()


def test_a_preloaded_node_pushes_first_within_its_scaled_interval() -> None:
    """Like the driver, the first push/pull waits a draw from the interval for the view
    the node starts with: 90 s at 128 members, so not the whole cluster in its first 30 s
    (which made the simulator's steady traffic at N=1000 look three times higher)."""
    clock = FakeClock()
    net = MemoryNetwork(clock, random.Random(1))
    swims = [
        Swim(f"n{i}", ("10.0.0.1", 8000 + i), FAST, clock, random.Random(i)) for i in range(128)
    ]
    records = [swim.local for swim in swims]
    for swim in swims:
        swim.preload(records)
        net.add(swim)
    net.run_for(30_000)
    assert 0 < net.pushpull_exchanges < 0.6 * len(swims)
