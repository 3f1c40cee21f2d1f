"""One protocol core driven by hand: packets in, packets out, a fake clock."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from relaymesh.clock import FakeClock
from relaymesh.exceptions import ConfigError, ProtocolError
from relaymesh.membership.driver import swim_config
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.protocol import DROP_REASONS, Swim, SwimConfig
from relaymesh.membership.state import Address
from relaymesh.membership.wire import (
    Ack,
    Alive,
    Dead,
    Left,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
)
from relaymesh.model import MemberStatus
from relaymesh.settings import GossipSettings

from ._helpers import FAST, core, packet, sent_messages

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)
B: Address = ("127.0.0.1", 7001)
C: Address = ("127.0.0.1", 7002)
D: Address = ("127.0.0.1", 7003)
E: Address = ("127.0.0.1", 7004)
PEERS = {"b": B, "c": C, "d": D, "e": E}


def feed(swim: Swim, *messages: Message, src: Address = B) -> None:
    swim.handle_packet(packet(*messages, label=swim.config.label), src)


def with_peers(swim: Swim, names: str = "bcde") -> None:
    feed(swim, *(Alive(n, 1, PEERS[n], {}) for n in names))
    swim.take_outbound()
    swim.take_events()


def run_to(swim: Swim, clock: FakeClock, until_ms: int) -> list[tuple[Address, Message]]:
    """Tick the core through every deadline up to ``until_ms``; what it sent."""
    sent: list[tuple[Address, Message]] = []
    while swim.next_deadline_ms() <= until_ms:
        clock.set(max(clock.monotonic_ms(), swim.next_deadline_ms()))
        swim.tick()
        sent += sent_messages(swim)
    clock.set(max(clock.monotonic_ms(), until_ms))
    return sent


def status(swim: Swim, name: str) -> MemberStatus | None:
    m = swim.member(name)
    return None if m is None else m.status


def test_config_from_settings_copies_every_knob() -> None:
    settings = GossipSettings(
        probe_interval_ms=700,
        lifeguard=False,
        label="x",
        keys=["AAAAAAAAAAAAAAAAAAAAAA=="],
        dedup_cache_size=77,
    )
    cfg = swim_config(settings)
    assert cfg.probe_interval_ms == 700
    assert cfg.lifeguard is False
    assert cfg.label == "x"
    shared = {f.name for f in fields(SwimConfig)} & set(GossipSettings.model_fields)
    assert len(shared) >= 17
    for name in shared:
        assert getattr(cfg, name) == getattr(settings, name), name


def test_the_core_does_not_import_the_settings_model() -> None:
    import relaymesh.membership.protocol as protocol

    source = Path(protocol.__file__).read_text()
    assert "relaymesh.settings" not in source


@pytest.mark.parametrize("name", ["", "x" * 129, "bad\x00name", "tab\tname"])
def test_a_node_name_must_be_printable_and_short(name: str) -> None:
    with pytest.raises(ConfigError, match="printable"):
        core(name)


def test_ping_is_acked_to_its_source_and_misdirected_ping_is_ignored() -> None:
    a, _ = core()
    feed(a, Ping(42, "a"), src=C)
    assert sent_messages(a) == [(C, Ack(42))]
    feed(a, Ping(43, "someone-else"), src=C)
    assert sent_messages(a) == []


def test_join_ping_is_answered_with_our_alive() -> None:
    a, _ = core(incarnation=3)
    feed(a, Alive("b", 1, B, {}), Ping(1, ""), src=B)
    msgs = [m for _, m in sent_messages(a)]
    assert Ack(1) in msgs
    assert Alive("a", 3, ("127.0.0.1", 7000), {}) in msgs


def test_join_announces_to_seeds_and_learns_them_from_the_ack() -> None:
    a, _ = core()
    a.join([B, ("127.0.0.1", 7000)])  # our own address is skipped
    sent = sent_messages(a)
    assert {dst for dst, _ in sent} == {B}
    assert any(isinstance(m, Ping) and m.target == "" for _, m in sent)
    assert any(isinstance(m, Alive) and m.name == "a" for _, m in sent)
    feed(a, Ack(999), Alive("b", 4, B, {"k": "v"}))
    assert status(a, "b") is ALIVE
    assert a.pushpull_target() == B


def test_new_member_emits_event_and_self_is_in_the_view() -> None:
    a, clock = core()
    events = a.take_events()
    assert [(e.name, e.status, e.previous) for e in events] == [("a", ALIVE, None)]
    feed(a, Alive("b", 1, B, {"zone": "x"}))
    (event,) = a.take_events()
    assert (event.name, event.status, event.previous, event.metadata) == (
        "b",
        ALIVE,
        None,
        {"zone": "x"},
    )
    assert event.at_ms == clock.wall_ms()
    assert {m.name for m in a.members()} == {"a", "b"}
    assert a.local.status is ALIVE


def test_incarnation_merge_rules() -> None:
    a, _clock = core()
    with_peers(a, "bc")
    feed(a, Suspect("b", 1, "c"))
    assert status(a, "b") is SUSPECT
    feed(a, Alive("b", 1, B, {}))  # equal incarnation: suspicion wins
    assert status(a, "b") is SUSPECT
    feed(a, Alive("b", 2, B, {}))  # refuted
    assert status(a, "b") is ALIVE
    feed(a, Dead("b", 1, "c"))  # stale
    assert status(a, "b") is ALIVE
    feed(a, Dead("b", 2, "c"))
    assert status(a, "b") is DEAD
    feed(a, Suspect("b", 3, "c"))  # a dead member is not re-suspected
    assert status(a, "b") is DEAD
    feed(a, Left("b", 2))  # a graceful leave outranks death at equal incarnation
    assert status(a, "b") is LEFT
    events = [(e.previous, e.status) for e in a.take_events() if e.name == "b"]
    assert events == [(ALIVE, SUSPECT), (SUSPECT, ALIVE), (ALIVE, DEAD), (DEAD, LEFT)]


def test_unknown_members_are_not_suspected_or_killed() -> None:
    a, _ = core()
    feed(a, Suspect("ghost", 1, "b"), Dead("ghost", 1, "b"), Left("ghost", 1))
    assert a.member("ghost") is None


def test_refutation_raises_our_incarnation_and_gossips_it() -> None:
    a, clock = core(incarnation=5)
    with_peers(a, "b")
    feed(a, Suspect("a", 4, "b"))  # stale: below our incarnation
    assert a.local.incarnation == 5
    assert a.local_is_alive()
    feed(a, Suspect("a", 5, "b"))
    assert a.local.incarnation == 6
    assert a.local.status is ALIVE
    assert not a.local_is_alive()  # safe mode until the refutation is out and we are heard
    assert a.health_score() == 1  # Lifeguard: being suspected hints at our own trouble
    sent = run_to(a, clock, clock.monotonic_ms())
    assert (B, Alive("a", 6, ("127.0.0.1", 7000), {})) in sent
    assert not a.local_is_alive()
    # Our next probe is answered: we are reachable again.
    ping, target, _ = probe_round(a, clock)
    feed(a, Ack(ping.seq), src=target)
    assert a.local_is_alive()
    feed(a, Dead("a", 6, "b"))
    assert a.local.incarnation == 7


def test_alive_about_us_with_a_higher_incarnation_is_refuted() -> None:
    a, _ = core(incarnation=3)
    feed(a, Alive("a", 10, ("10.1.1.1", 1), {}))
    assert a.local.incarnation == 11
    assert a.local.address == ("127.0.0.1", 7000)
    feed(a, Left("a", 11))  # a LEFT from a previous life of ours
    assert a.local.incarnation == 12


def test_suspicion_expires_into_dead_and_is_gossiped() -> None:
    a, clock = core(config=replace(FAST, probe_interval_ms=60_000))
    with_peers(a, "bc")  # n = 3 < k + 2: no confirmations expected, min timeout
    start = clock.monotonic_ms()
    feed(a, Suspect("b", 1, "c"))
    sent = run_to(a, clock, start + 4 * 60_000 - 1)
    assert status(a, "b") is SUSPECT
    sent += run_to(a, clock, start + 4 * 60_000)
    assert status(a, "b") is DEAD
    assert any(m == Dead("b", 1, "a") for _, m in sent)


def test_news_of_a_death_is_gossiped_without_waiting_out_the_interval() -> None:
    a, clock = core(config=replace(FAST, probe_interval_ms=60_000, gossip_interval_ms=200))
    with_peers(a)
    run_to(a, clock, 1_000)  # the join news is gossiped out and the queue drains
    start = clock.monotonic_ms()
    feed(a, Alive("b", 2, B, {}))  # ordinary news: gossiped now, next round in 200 ms
    sent = run_to(a, clock, start)
    assert any(m == Alive("b", 2, B, {}) for _, m in sent)
    clock.advance(10)
    feed(a, Dead("c", 1, "d"))
    sent = run_to(a, clock, start + 60)  # a quarter interval later, not a whole one
    carriers = {dst for dst, m in sent if m == Dead("c", 1, "d")}
    assert len(carriers) >= 2  # a gossip round, not one probe's piggyback


def test_confirmations_shorten_the_suspicion() -> None:
    cfg = replace(FAST, probe_interval_ms=100_000)
    a, clock = core(config=cfg)
    with_peers(a)  # n = 5, k = 2: starts at 6 x 4 x 100 s
    feed(a, Suspect("b", 1, "c"))
    run_to(a, clock, 500_000)
    assert status(a, "b") is SUSPECT
    feed(a, Suspect("b", 1, "d"), Suspect("b", 1, "e"))  # two independent confirmations
    run_to(a, clock, 500_001)
    assert status(a, "b") is DEAD


def test_a_suspicion_of_a_newer_incarnation_starts_its_own_timeout() -> None:
    """We missed b's refutation of an old suspicion; b is suspected again at its new
    incarnation. That must not ride the old timer into an instant DEAD of the new one
    (which every member would accept: found at 20 % loss in the simulator)."""
    a, clock = core(config=replace(FAST, probe_interval_ms=100_000))
    with_peers(a)  # n = 5, k = 2: min 400 s, max 2,400 s, 1,138 s after one confirmation
    feed(a, Suspect("b", 1, "c"))
    run_to(a, clock, 1_100_000)
    assert a._updates.suspicions["b"].confirmations == 1  # our own failed probe of b
    feed(a, Suspect("b", 2, "e"))  # b refuted (we missed it) and is suspected anew
    run_to(a, clock, 1_100_001)
    assert status(a, "b") is SUSPECT
    assert a.member("b").incarnation == 2  # type: ignore[union-attr]
    sent = run_to(a, clock, 1_100_000 + 400_000 - 1)  # not before the minimum, from now
    assert status(a, "b") is SUSPECT
    sent += run_to(a, clock, 1_100_000 + 2_400_000)
    assert status(a, "b") is DEAD
    assert any(m == Dead("b", 2, "a") for _, m in sent)


def test_jitter_suppression_holds_recovery_and_stops_the_suspicion() -> None:
    cfg = replace(FAST, suspect_recover_min_ms=10_000, probe_interval_ms=1000)
    a, clock = core(config=cfg)
    with_peers(a, "bc")
    feed(a, Suspect("b", 1, "c"))  # suspicion timeout: 4 s
    clock.advance(100)
    feed(a, Alive("b", 2, B, {}))
    assert status(a, "b") is SUSPECT
    assert a.stats.recoveries_suppressed == 1
    feed(a, Alive("b", 2, B, {}))  # a duplicate is not counted again
    feed(a, Dead("b", 1, "c"))  # older than the refutation we hold
    assert a.stats.recoveries_suppressed == 1
    run_to(a, clock, 9_999)
    assert status(a, "b") is SUSPECT  # the refutation stopped the suspicion timer
    run_to(a, clock, 10_000)
    assert status(a, "b") is ALIVE
    assert a.member("b").incarnation == 2  # type: ignore[union-attr]
    statuses = [e.status for e in a.take_events() if e.name == "b"]
    assert DEAD not in statuses


def test_dead_dwell_holds_recovery_then_applies_it() -> None:
    a, clock = core()  # dead_recover_min_ms = 1000
    with_peers(a, "bc")
    feed(a, Dead("b", 1, "c"))
    clock.advance(10)
    feed(a, Alive("b", 2, B, {}))
    assert status(a, "b") is DEAD
    assert a.stats.recoveries_suppressed == 1
    run_to(a, clock, 1010)
    assert status(a, "b") is ALIVE
    clock.advance(5000)
    feed(a, Dead("b", 2, "c"))
    clock.advance(2000)
    feed(a, Alive("b", 3, B, {}))  # after the dwell: at once
    assert status(a, "b") is ALIVE
    assert a.stats.recoveries_suppressed == 1


def test_newer_suspicion_cancels_a_held_refutation() -> None:
    cfg = replace(FAST, suspect_recover_min_ms=10_000)
    a, clock = core(config=cfg)
    with_peers(a, "bc")
    feed(a, Suspect("b", 1, "c"))
    feed(a, Alive("b", 2, B, {}))
    feed(a, Suspect("b", 2, "c"))
    run_to(a, clock, 20_000)
    assert status(a, "b") is DEAD


def test_dedup_cache_stops_echo() -> None:
    a, clock = core()
    with_peers(a, "bc")
    run_to(a, clock, 5_000)  # flush what with_peers queued
    feed(a, Alive("x", 1, ("10.0.0.9", 1), {}))
    first = [m for _, m in run_to(a, clock, 20_000) if m == Alive("x", 1, ("10.0.0.9", 1), {})]
    assert first
    feed(a, Alive("x", 1, ("10.0.0.9", 1), {}), src=C)  # the rumour comes back
    again = [m for _, m in run_to(a, clock, 40_000) if isinstance(m, Alive) and m.name == "x"]
    assert again == []


def test_each_update_is_retransmitted_a_bounded_number_of_times() -> None:
    a, clock = core()
    with_peers(a)
    feed(a, Alive("x", 1, ("10.0.0.9", 1), {}))
    sent = run_to(a, clock, 60_000)
    copies = sum(1 for _, m in sent if isinstance(m, Alive) and m.name == "x")
    # 6 members: retransmit_mult 4 * ceil(log10(7)) = 4
    assert copies == 4


def probe_round(a: Swim, clock: FakeClock) -> tuple[Ping, Address, int]:
    """Advance to the next direct ping; (ping, target address, send time)."""
    while True:
        clock.set(max(clock.monotonic_ms(), a.next_deadline_ms()))
        a.tick()
        for dst, m in sent_messages(a):
            if isinstance(m, Ping):
                return m, dst, clock.monotonic_ms()


def test_failed_probe_without_nacks_raises_awareness_and_acks_lower_it() -> None:
    a, clock = core()
    with_peers(a)
    ping, target, t0 = probe_round(a, clock)
    sent = run_to(a, clock, t0 + 500)  # probe timeout: ask three others
    reqs = [(dst, m) for dst, m in sent if isinstance(m, PingReq)]
    assert len(reqs) == 3
    assert all(m.seq == ping.seq and m.address == target and m.nack for _, m in reqs)
    assert target not in {dst for dst, _ in reqs}
    assert (target, ping) in sent  # a second direct try, like memberlist's TCP fallback
    feed(a, Nack(ping.seq), src=reqs[0][0])  # one intermediary answers: two missing
    sent = run_to(a, clock, t0 + 1000)
    assert a.health_score() == 2
    suspected = [m.name for m in a.members() if m.status is SUSPECT]
    assert len(suspected) == 1
    # The next probe starts at once and waits three times longer before going indirect.
    ((target, ping),) = [(dst, m) for dst, m in sent if isinstance(m, Ping)]
    t1 = t0 + 1000
    sent = run_to(a, clock, t1 + 1499)
    assert not any(isinstance(m, PingReq) for _, m in sent)
    feed(a, Ack(ping.seq), src=target)
    assert a.health_score() == 1
    assert a.take_rtt_samples() == [float(clock.monotonic_ms() - t1)]
    assert a.take_rtt_samples() == []


def test_indirect_ack_completes_the_probe() -> None:
    a, clock = core()
    with_peers(a)
    ping, _target, t0 = probe_round(a, clock)
    run_to(a, clock, t0 + 500)
    feed(a, Ack(ping.seq), src=C)
    run_to(a, clock, t0 + 999)
    assert all(m.status is ALIVE for m in a.members())
    assert a.take_rtt_samples() == []  # only direct round trips are RTT samples


def relay_core(config: SwimConfig = FAST) -> tuple[Swim, FakeClock]:
    """A core that knows c (the requester) and t (the target, at D), its queue drained."""
    a, clock = core(config=replace(config, probe_interval_ms=60_000))
    feed(a, Alive("c", 1, C, {}), Alive("t", 1, D, {}))
    for _ in range(40):  # let the news of c and t be gossiped out, so nothing piggybacks
        clock.advance(200)
        a.tick()
    a.take_outbound()
    return a, clock


def test_relayed_ping_req_acks_or_nacks_the_requester() -> None:
    a, clock = relay_core()
    feed(a, PingReq(77, "t", D, True), src=C)
    ((dst, ping),) = sent_messages(a)
    assert dst == D
    assert isinstance(ping, Ping) and ping.target == "t"
    feed(a, Ack(ping.seq), src=D)
    assert sent_messages(a) == [(C, Ack(77))]
    feed(a, PingReq(78, "t", D, True), src=C)
    sent_messages(a)
    now = clock.monotonic_ms()
    assert run_to(a, clock, now + 399) == []
    assert run_to(a, clock, now + 400) == [(C, Nack(78))]  # at 80% of the probe timeout


def test_ping_req_is_served_only_for_members_at_their_known_addresses() -> None:
    a, _ = relay_core()
    stranger: Address = ("203.0.113.9", 53)
    feed(a, PingReq(1, "t", D, True), src=stranger)  # requester not a member
    feed(a, PingReq(2, "t", stranger, True), src=C)  # target not at the address we know
    feed(a, PingReq(3, "nobody", stranger, True), src=C)  # target not a member
    feed(a, Alive("x", 5, stranger, {}), PingReq(4, "t", D, True), src=stranger)
    assert not [m for _, m in sent_messages(a) if isinstance(m, (Ping, Ack))]
    assert a.stats.dropped["unknown_sender"] == 4


def test_relays_are_bounded() -> None:
    a, _ = relay_core(replace(FAST, max_pending_relays=5))
    for i in range(50):
        feed(a, PingReq(i, "t", D, True), src=C)
    assert len([m for _, m in sent_messages(a) if isinstance(m, Ping)]) == 5


def test_lifeguard_off_uses_fixed_timeout_and_no_nacks() -> None:
    cfg = replace(FAST, lifeguard=False)
    a, clock = core(config=cfg)
    with_peers(a)
    _ping, _target, t0 = probe_round(a, clock)
    reqs = [m for _, m in run_to(a, clock, t0 + 500) if isinstance(m, PingReq)]
    assert reqs and not any(m.nack for m in reqs)
    run_to(a, clock, t0 + 1000)
    assert a.health_score() == 0
    b, clock2 = core(config=replace(cfg, probe_interval_ms=50_000))
    with_peers(b)
    feed(b, Suspect("c", 1, "d"))
    run_to(b, clock2, 4 * 50_000 - 1)
    assert status(b, "c") is SUSPECT
    run_to(b, clock2, 4 * 50_000)
    assert status(b, "c") is DEAD


def test_stalled_node_does_not_accuse_its_probe_target() -> None:
    a, clock = core()
    with_peers(a)
    ping, target, t0 = probe_round(a, clock)
    clock.set(t0 + 3000)  # our event loop stalled past the whole probe
    feed(a, Ack(ping.seq), src=target)  # the ack waited in the socket buffer
    a.tick()
    assert all(m.status is ALIVE for m in a.members())
    ping, target, t1 = probe_round(a, clock)
    clock.set(t1 + 5000)  # stalled again, nothing arrived
    a.tick()
    assert all(m.status is ALIVE for m in a.members())  # given a fresh window first
    run_to(a, clock, t1 + 7000)
    assert sum(m.status is SUSPECT for m in a.members()) == 1


def test_leave_broadcasts_left_and_stops_probing() -> None:
    a, clock = core(incarnation=4)
    with_peers(a)
    a.leave()
    assert a.local.status is LEFT
    assert a.local.incarnation == 5
    assert not a.local_is_alive()
    sent = run_to(a, clock, 30_000)
    assert Left("a", 5) in [m for _, m in sent]
    assert not any(isinstance(m, Ping | PingReq) for _, m in sent)
    feed(a, Suspect("a", 5, "b"))
    assert a.local.incarnation == 5  # no refuting once we have left
    assert a.local.status is LEFT


def test_bad_packets_are_dropped_by_reason() -> None:
    ring = Keyring([b"k" * 32])
    a, _ = core(keyring=ring, config=replace(FAST, label="prod"))
    good = packet(Ping(1, "a"), label="prod", keyring=ring)
    a.handle_packet(good, B)
    assert len(a.take_outbound()) == 1
    a.handle_packet(b"\x02" + good[1:2] + b"x" * 50, B)
    a.handle_packet(packet(Ping(1, "a"), label="test", keyring=ring), B)
    a.handle_packet(packet(Ping(1, "a"), label="prod", keyring=Keyring([b"z" * 32])), B)
    a.handle_packet(packet(Ping(1, "a"), label="prod"), B)
    a.handle_packet(b"\x01" * 2000, B)
    a.handle_packet(b"", B)
    expected = {"decode": 1, "auth": 2, "label": 2, "too_large": 1}
    assert a.stats.dropped == {reason: expected.get(reason, 0) for reason in DROP_REASONS}
    assert a.take_outbound() == []
    assert a.stats.packets_received == 7


def test_outbound_datagrams_fit_max_packet_bytes() -> None:
    cfg = replace(FAST, max_packet_bytes=600)
    a, clock = core(config=cfg, keyring=Keyring([b"k" * 32]))
    ring = Keyring([b"k" * 32])
    for i in range(200):
        a.handle_packet(
            packet(
                Alive(f"node-{i:04d}", 1, ("10.0.0.1", 9000 + i), {"r": "x" * 20}), keyring=ring
            ),
            B,
        )
    sizes = [len(d) for _, d in a.take_outbound()]
    for _ in range(50):
        clock.advance(200)
        a.tick()
        sizes += [len(d) for _, d in a.take_outbound()]
    assert sizes and max(sizes) <= 600
    assert a.stats.packets_sent == len(sizes)


def test_metadata_too_large_for_a_packet_is_refused() -> None:
    with pytest.raises(ConfigError, match="metadata"):
        Swim(
            "a",
            ("h", 1),
            FAST,
            FakeClock(),
            __import__("random").Random(1),
            metadata={str(i): "x" * 100 for i in range(20)},
        )


def test_state_exchange_merges_and_counts() -> None:
    a, _ = core("a", 7000, seed=1)
    b, _ = core("b", 7001, seed=2)
    feed(b, Alive("c", 3, C, {}), Alive("d", 1, D, {}), Dead("d", 1, "b"))
    applied = a.merge_state(b.encode_state(join=True))
    assert a.stats.anti_entropy_merges == 1
    assert status(a, "c") is ALIVE
    assert status(a, "b") is ALIVE
    assert status(a, "d") is None  # a remote DEAD is only a suspicion, and d is unknown
    assert applied == 2
    assert a.merge_state(b.encode_state()) == 0
    with pytest.raises(ProtocolError) as err:
        a.merge_state(b"garbage")
    assert err.value.reason == "decode"
    assert a.stats.dropped["decode"] == 1


def test_state_with_our_suspicion_makes_us_refute() -> None:
    a, _ = core("a", 7000)
    b, _ = core("b", 7001)
    feed(b, Alive("a", 0, ("127.0.0.1", 7000), {}), Suspect("a", 0, "c"))
    a.merge_state(b.encode_state())
    assert a.local.incarnation == 1
