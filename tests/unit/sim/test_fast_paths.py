"""The simulator's speed-ups change nothing a core decides.

A push/pull leaves out snapshot entries equal to what the receiver holds (where a
repeat is news-free), so these check that a merge through that path ends in exactly
the state, events, queued gossip and return value of the full path, and that the
entries it leaves out are validated as strictly as before.
"""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.antientropy import snapshot_updates
from relaymesh.membership.protocol import Swim
from relaymesh.membership.state import Member
from relaymesh.membership.wire import Alive, Suspect, decode_state, encode_state, unframe
from relaymesh.model import MemberStatus
from tests.unit.membership._helpers import FAST, Cluster

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)
NEWS_FREE = (ALIVE, DEAD, LEFT)


def _full_merge(swim: Swim, data: bytes) -> int:
    """``merge_state`` as it was before the fast path: build and apply every entry."""
    _join, remote = decode_state(unframe(data, swim._label, swim._keyring))
    now = swim._clock.monotonic_ms()
    applied = 0
    for update in snapshot_updates(remote, swim.name):
        if isinstance(update, Alive):
            changed = swim._apply_alive(update, now)
        elif isinstance(update, Suspect):
            changed = swim._apply_suspect(update, now)
        else:
            changed = swim._apply_left(update, now)
        if changed:
            applied += 1
    swim.stats.anti_entropy_merges += 1
    return applied


def _state(swim: Swim) -> dict[str, Any]:
    return {
        "members": sorted(
            (m.name, m.address, m.status, m.incarnation, sorted(m.metadata.items()))
            for m in swim.members()
        ),
        "live": swim.num_alive(),
        "events": swim.take_events(),
        "outbound": swim.take_outbound(),
        "broadcasts": sorted(
            (name, item.payload, item.transmits) for name, item in swim._broadcasts._by_name.items()
        ),
        "suspicions": sorted(
            (name, s.deadline_ms, s.confirmations) for name, s in swim._suspicions.items()
        ),
        "pending": sorted(swim._pending_alive),
        "timers": sorted(swim._timers, key=repr),
        "probe_order": list(swim._probe_order),
        "local_incarnation": swim.local.incarnation,
    }


def _messy_cluster(seed: int) -> Cluster:
    """Views that disagree: loss, kills, a revival, a leave, metadata, mid-suspicion."""
    cluster = Cluster(12, seed=seed, loss=0.2)
    cluster.run(8_000)
    cluster.net.kill(cluster.address(3))
    cluster.net.kill(cluster.address(4))
    cluster.run(6_000)
    cluster.net.revive(cluster.address(4))
    cluster.swims[5].leave()
    cluster.run(3_000)
    return cluster


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merge_state_ends_where_the_full_merge_ends(seed: int) -> None:
    cluster = _messy_cluster(seed)
    swims = cluster.swims
    pairs = [(a, b) for a in range(0, 12, 3) for b in range(12) if a != b]
    checked_skips = 0
    for a, b in pairs:
        blob = swims[a].encode_state(join=a % 2 == 0)
        fast, full = copy.deepcopy(swims[b]), copy.deepcopy(swims[b])
        fast.take_events(), full.take_events(), fast.take_outbound(), full.take_outbound()
        assert fast.merge_state(blob) == _full_merge(full, blob)
        assert _state(fast) == _state(full)
        assert fast.stats == full.stats
        held_left_out = len(swims[a].members()) - len(
            decode_state(unframe(blob, b"", None), swims[b]._members, NEWS_FREE)[1]
        )
        checked_skips += held_left_out
    assert checked_skips > 0  # the fast path was taken


def test_merge_into_a_node_holding_a_refutation_matches_the_full_merge() -> None:
    # A SUSPECT member whose ALIVE is held back by the dwell (recovery suppressed).
    config = FAST.__class__(suspect_recover_min_ms=5_000, dead_recover_min_ms=5_000)
    cluster = Cluster(6, seed=4, config=config)
    cluster.run(5_000)
    a, b = cluster.swims[0], cluster.swims[1]
    target = cluster.swims[2]
    now = cluster.clock.monotonic_ms()
    b._apply_suspect(Suspect(target.name, target.local.incarnation, a.name), now)
    b._apply_alive(Alive(target.name, target.local.incarnation + 1, target.address, {}), now)
    assert b._pending_alive
    blob = a.encode_state()
    fast, full = copy.deepcopy(b), copy.deepcopy(b)
    assert fast.merge_state(blob) == _full_merge(full, blob)
    assert _state(fast) == _state(full)


def _snapshot(*entries: list[Any]) -> bytes:
    packed: bytes = msgpack.packb([8, False, list(entries)])
    return packed


HELD = {
    "a": Member("a", ("h", 1), ALIVE, 1, {}, 0),
    "b": Member("b", ("h", 2), DEAD, 4, {"k": "v"}, 0),
    "c": Member("c", ("h", 3), SUSPECT, 5, {}, 0),
}


def test_decode_state_leaves_out_only_news_free_repeats() -> None:
    body = encode_state(
        [
            Member("a", ("h", 1), ALIVE, 1, {}, 0),  # same: left out
            Member("b", ("h", 2), DEAD, 4, {"k": "v"}, 0),  # same: left out
            Member("c", ("h", 3), SUSPECT, 5, {}, 0),  # same, but SUSPECT is news
            Member("d", ("h", 4), ALIVE, 0, {}, 0),  # unknown
        ],
        join=False,
    )
    _, full = decode_state(body)
    _, fast = decode_state(body, HELD, NEWS_FREE)
    assert [m.name for m in full] == ["a", "b", "c", "d"]
    assert [m.name for m in fast] == ["c", "d"]
    assert fast == full[2:]
    for changed in (
        ["a", 2, 0, "h", 1, {}],  # incarnation
        ["a", 1, 1, "h", 1, {}],  # status
        ["a", 1, 0, "h2", 1, {}],  # host
        ["a", 1, 0, "h", 9, {}],  # port
        ["b", 4, 2, "h", 2, {"k": "w"}],  # metadata
    ):
        _, got = decode_state(_snapshot(changed), HELD, NEWS_FREE)
        assert len(got) == 1


@pytest.mark.parametrize(
    "entry",
    [
        ["a", True, 0, "h", 1, {}],  # a bool equal to the held incarnation (1)
        ["a", 1.0, 0, "h", 1, {}],  # a float equal to it
        ["a", 1, 0, "h", True, {}],  # a bool equal to the held port
        ["a", 1, 0.0, "h", 1, {}],  # a float status code
        ["a", 1, False, "h", 1, {}],  # a bool status code
        ["b", 4, 2, "h", 2, {"k": 1}],  # bad metadata value
        ["a" * 200, 3, 0, "h", 1, {}],  # name too long
    ],
)
def test_entries_equal_to_held_records_are_still_validated(entry: list[Any]) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_state(_snapshot(entry), HELD, NEWS_FREE)
    assert err.value.reason == "schema"


def test_a_bad_entry_refuses_the_snapshot_even_after_news_free_repeats() -> None:
    body = _snapshot(["a", 1, 0, "h", 1, {}], ["a", 1, 0, "h", 1, {}])
    with pytest.raises(ProtocolError, match="listed twice"):
        decode_state(body, HELD, NEWS_FREE)
    with pytest.raises(ProtocolError, match="bad port"):
        decode_state(_snapshot(["a", 1, 0, "h", 1, {}], ["z", 0, 0, "h", 0, {}]), HELD, NEWS_FREE)


def test_held_records_that_are_invalid_do_not_let_entries_through() -> None:
    # A record we hold need not pass the wire's limits (our own name, a preloaded view):
    # an entry equal to it is still refused.
    long_name = "n" * 200
    held = {long_name: Member(long_name, ("h", 1), ALIVE, 0, {}, 0)}
    with pytest.raises(ProtocolError, match="bad member name"):
        decode_state(_snapshot([long_name, 0, 0, "h", 1, {}]), held, NEWS_FREE)
