"""The core against hostile input: incarnation ceiling, one bad message dropped alone,
one name rule on every path, no amplification, bounded tables, replay window."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from relaymesh.membership.incarnation import (
    INCARNATION_AHEAD_MAX_MS,
    INCARNATION_MAX,
    admissible,
    incarnation_ceiling,
    initial_incarnation,
    refutation,
)
from relaymesh.membership.keyring import REPLAY_WINDOW_MS, Keyring
from relaymesh.membership.state import Address, Member
from relaymesh.membership.wire import (
    MAX_METADATA_BYTES,
    Ack,
    Alive,
    Dead,
    Left,
    Ping,
    Suspect,
    encode_state,
    frame,
)
from relaymesh.model import MemberStatus

from ._helpers import FAST, WALL_START_MS, core, packet, sent_messages

B: Address = ("127.0.0.1", 7001)
STRANGER: Address = ("198.51.100.7", 9999)
CEILING = incarnation_ceiling(WALL_START_MS)


@pytest.mark.parametrize(
    "accusation",
    [
        Suspect("a", INCARNATION_MAX, "x"),
        Dead("a", INCARNATION_MAX, "x"),
        Alive("a", INCARNATION_MAX, ("127.0.0.1", 7000), {}),
        Left("a", INCARNATION_MAX),
        Suspect("a", CEILING + 1, "x"),
    ],
)
def test_an_accusation_above_the_ceiling_is_dropped_and_never_refuted(
    accusation: Suspect | Dead | Alive | Left,
) -> None:
    a, _ = core(incarnation=WALL_START_MS)
    a.handle_packet(packet(accusation), B)
    assert a.local.incarnation == WALL_START_MS
    assert a.local_is_alive()
    assert a.stats.dropped["incarnation"] == 1


def test_an_update_about_another_member_above_the_ceiling_is_dropped() -> None:
    a, _ = core()
    a.handle_packet(packet(Alive("b", 1, B, {})), B)
    a.handle_packet(packet(Dead("b", INCARNATION_MAX, "x"), Suspect("b", CEILING + 1, "x")), B)
    member = a.member("b")
    assert member is not None and member.status is MemberStatus.ALIVE and member.incarnation == 1
    assert a.stats.dropped["incarnation"] == 2


def test_an_accusation_at_the_ceiling_is_refuted_once_above_it() -> None:
    a, _ = core(incarnation=WALL_START_MS)
    a.handle_packet(packet(Suspect("a", CEILING, "x")), B)
    assert a.local.incarnation == CEILING + 1
    assert admissible(CEILING + 1, WALL_START_MS + 1)  # believed by peers a ms later


def test_the_same_ceiling_guards_push_pull_and_a_persisted_view() -> None:
    a, _ = core()
    state = encode_state(
        [
            Member("b", B, MemberStatus.ALIVE, INCARNATION_MAX, {}),
            Member("c", ("127.0.0.1", 7002), MemberStatus.ALIVE, 5, {}),
        ],
        join=False,
    )
    assert a.merge_state(frame(state, b"", None)) == 1
    assert a.member("b") is None and a.member("c") is not None
    a.preload([Member("d", ("127.0.0.1", 7003), MemberStatus.ALIVE, CEILING + 1, {})])
    assert a.member("d") is None
    assert a.stats.dropped["incarnation"] == 2


def test_incarnation_rules() -> None:
    now = WALL_START_MS
    assert incarnation_ceiling(now) == now + INCARNATION_AHEAD_MAX_MS
    assert incarnation_ceiling(2**63) < INCARNATION_MAX  # a wild clock keeps the reserve
    assert not admissible(-1, now)
    assert refutation(5, 3) == 6
    assert refutation(INCARNATION_MAX, 0) is None
    assert initial_incarnation(None, now) == (now, False)
    assert initial_incarnation(now + 10, now) == (now + 11, False)
    assert initial_incarnation(INCARNATION_MAX, now) == (now, True)  # poisoned file
    assert initial_incarnation(CEILING + 1, now) == (now, True)


def test_one_bad_message_is_dropped_alone_not_the_ping_beside_it() -> None:
    a, _ = core()
    a.handle_packet(packet(Alive("b", 1, B, {})), B)
    sent_messages(a)
    bad_name = msgpack.packb([4, "evil\x00name", 1, "10.0.0.9", 1, {}])
    body = msgpack.packb([msgpack.unpackb(bad_name), [0, 9, "a"]])
    a.handle_packet(frame(body, b"", None), B)
    assert (B, Ack(9)) in sent_messages(a)
    assert a.stats.dropped["schema"] == 1


def test_push_pull_refuses_the_names_udp_refuses_entry_by_entry() -> None:
    a, _ = core()
    entries = [
        ["ok", 3, 0, "10.0.0.2", 1, {}],
        ["bad\nname", 3, 0, "10.0.0.3", 1, {}],
        ["bell\x07", 3, 0, "10.0.0.4", 1, {}],
    ]
    a.merge_state(frame(msgpack.packb([8, False, entries]), b"", None))
    assert {m.name for m in a.members()} == {"a", "ok"}
    assert a.stats.dropped["schema"] == 2


def test_metadata_is_bounded_on_every_path() -> None:
    a, _ = core()
    big = {f"k{i}": "v" * 100 for i in range(MAX_METADATA_BYTES // 100 + 1)}
    a.handle_packet(packet(Alive("b", 1, B, big)), B)
    state = encode_state([Member("c", B, MemberStatus.ALIVE, 1, big)], join=False)
    a.merge_state(frame(state, b"", None))
    assert [m.name for m in a.members()] == ["a"]
    assert a.stats.dropped["metadata"] == 2


def test_the_member_table_is_bounded_and_drops_are_counted() -> None:
    a, _ = core(config=replace(FAST, max_members=10))
    for i in range(30):
        a.handle_packet(packet(Alive(f"m{i}", 1, ("10.0.0.1", 1000 + i), {})), B)
    state = encode_state(
        [Member(f"s{i}", ("10.0.0.2", 1000 + i), MemberStatus.ALIVE, 1, {}) for i in range(5)],
        join=False,
    )
    a.merge_state(frame(state, b"", None))
    assert len(a.members()) == 10
    assert a.stats.dropped["member_limit"] == 21 + 5  # 9 peers fit beside us


def test_a_reply_to_an_unknown_sender_carries_no_piggybacked_updates() -> None:
    a, _ = core()
    for i in range(20):
        a.handle_packet(packet(Alive(f"m{i}", 1, ("10.0.0.1", 1000 + i), {})), B)
    a.take_outbound()
    request = packet(Alive("joiner", 1, STRANGER, {}), Ping(5, ""))
    a.handle_packet(request, STRANGER)
    ((dst, data),) = a.take_outbound()
    assert dst == STRANGER
    assert len(data) <= len(request) + 64  # ack + our own ALIVE, no queued news
    # A member at its known address gets the news piggybacked as before.
    a.handle_packet(packet(Ping(6, "a")), ("10.0.0.1", 1000))
    ((_, data),) = a.take_outbound()
    assert len(data) > 200


def test_a_replayed_sealed_packet_is_dropped_and_a_stale_one_too() -> None:
    ring = Keyring([b"k" * 32])
    a, clock = core(keyring=ring)
    ping = packet(Ping(1, "a"), keyring=ring)
    a.handle_packet(ping, B)
    assert len(a.take_outbound()) == 1
    a.handle_packet(ping, B)
    a.handle_packet(packet(Ping(2, "a"), keyring=ring, sent_at_ms=0), B)
    assert a.take_outbound() == []
    assert a.stats.dropped["replay"] == 1
    assert a.stats.dropped["stale"] == 1
    clock.advance(REPLAY_WINDOW_MS // 2)
    a.handle_packet(packet(Ping(3, "a"), keyring=ring, sent_at_ms=clock.wall_ms()), B)
    assert len(a.take_outbound()) == 1


def test_key_rotation_still_works_with_the_replay_window() -> None:
    old, new = b"o" * 32, b"n" * 32
    a, _ = core(keyring=Keyring([new, old]))
    a.handle_packet(packet(Ping(1, "a"), keyring=Keyring([old])), B)
    a.handle_packet(packet(Ping(2, "a"), keyring=Keyring([new])), B)
    assert len(a.take_outbound()) == 2


def test_a_full_table_forgets_the_longest_dead_member_for_a_new_one() -> None:
    config = replace(FAST, max_members=6, gossip_to_the_dead_ms=30_000)
    a, clock = core(config=config)
    for i in range(5):
        a.handle_packet(packet(Alive(f"fake{i}", 1, ("10.0.0.1", 1000 + i), {})), B)
    for i in range(5):
        a.handle_packet(packet(Dead(f"fake{i}", 1, "x")), B)
        clock.advance(1000)
    newcomer = Alive("real", 1, ("10.0.0.2", 1), {})
    a.handle_packet(packet(newcomer), B)
    assert a.member("real") is None  # every DEAD one is still within its refutation window
    assert a.stats.dropped["member_limit"] == 1
    clock.advance(26_500)  # fake0 has been DEAD for 31.5 s, fake1 for 30.5 s
    a.handle_packet(packet(Alive("real", 2, ("10.0.0.2", 1), {})), B)
    assert a.member("real") is not None
    assert a.member("fake0") is None and a.member("fake1") is not None
    assert len(a.members()) == 6
    assert a.stats.dropped["member_limit"] == 1
