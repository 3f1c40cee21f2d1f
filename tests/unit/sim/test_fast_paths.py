"""The simulator's speed-ups change nothing a core decides.

A push/pull leaves out snapshot entries equal to what the receiver holds (where a
repeat is news-free), so these check that a merge through that path ends in exactly
the state, events, queued gossip and return value of the full path, and that the
entries it leaves out are validated as strictly as before. The broadcast queue (taken
bucket by bucket) and the dedup cache (an OrderedDict) are checked against the simple
algorithms they replace.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import msgpack
import pytest

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.antientropy import snapshot_updates
from relaymesh.membership.broadcast import BroadcastQueue, DedupCache, retransmit_limit
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
    _join, remote = decode_state(swim._diss.open(data, swim._clock.wall_ms()))
    now = swim._clock.monotonic_ms()
    applied = 0
    for update in snapshot_updates(remote, swim.name):
        if isinstance(update, Alive):
            changed = swim._updates.apply_alive(update, now)
        elif isinstance(update, Suspect):
            changed = swim._updates.apply_suspect(update, now)
        else:
            changed = swim._updates.apply_left(update, now)
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
            (name, item.payload, item.transmits)
            for name, item in swim._diss.broadcasts._by_name.items()
        ),
        "suspicions": sorted(
            (name, s.deadline_ms, s.confirmations) for name, s in swim._updates.suspicions.items()
        ),
        "pending": sorted(swim._updates.pending_alive),
        "timers": sorted(swim._timers.snapshot(), key=repr),
        "probe_order": list(swim._prober.probe_order),
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
            decode_state(unframe(blob, b"", None), swims[b]._table.members, NEWS_FREE)[1]
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
    b._updates.apply_suspect(Suspect(target.name, target.local.incarnation, a.name), now)
    b._updates.apply_alive(
        Alive(target.name, target.local.incarnation + 1, target.address, {}), now
    )
    assert b._updates.pending_alive
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


# --- the broadcast queue and the dedup cache against the simple algorithms -------


class _ReferenceQueue:
    """The broadcast queue as first written: one item at a time, limit computed per call."""

    def __init__(self, mult: int) -> None:
        self.mult = mult
        self.by_name: dict[str, list[Any]] = {}  # name -> [name, payload, transmits, dead]
        self.buckets: dict[int, list[list[Any]]] = {}

    def queue(self, name: str, payload: bytes) -> None:
        old = self.by_name.get(name)
        if old is not None:
            old[3] = True
        item = [name, payload, 0, False]
        self.by_name[name] = item
        self.buckets.setdefault(0, []).append(item)

    def get(self, space: int, n: int, max_count: int) -> list[bytes]:
        if not self.by_name or space <= 2 or max_count <= 0:
            return []
        limit = retransmit_limit(self.mult, n)
        picked: list[list[Any]] = []
        skipped = 0
        full = False
        for transmits in sorted(self.buckets):
            stack = self.buckets[transmits]
            too_big = []
            while stack:
                item = stack.pop()
                if item[3]:
                    continue
                if len(item[1]) > space:
                    too_big.append(item)
                    skipped += 1
                    if skipped >= 32:
                        full = True
                        break
                    continue
                picked.append(item)
                space -= len(item[1])
                if len(picked) == max_count or space <= 2:
                    full = True
                    break
            stack.extend(reversed(too_big))
            if not stack:
                del self.buckets[transmits]
            if full:
                break
        for item in picked:
            item[2] += 1
            if item[2] >= limit:
                del self.by_name[item[0]]
            else:
                self.buckets.setdefault(item[2], []).append(item)
        return [item[1] for item in picked]

    def live(self) -> list[tuple[int, list[tuple[str, bytes]]]]:
        out = []
        for t, stack in sorted(self.buckets.items()):
            items = [(i[0], i[1]) for i in stack if not i[3]]
            if items:
                out.append((t, items))
        return out


def _live(q: BroadcastQueue) -> list[tuple[int, list[tuple[str, bytes]]]]:
    out = []
    for t, stack in sorted(q._buckets.items()):
        assert all(i.transmits == t for i in stack if not i.dead)
        items = [(i.name, i.payload) for i in stack if not i.dead]
        if items:
            out.append((t, items))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_broadcast_queue_gives_what_the_simple_queue_gives(seed: int) -> None:
    rng = random.Random(seed)
    mult = rng.choice([1, 2, 4])
    fast, ref = BroadcastQueue(mult), _ReferenceQueue(mult)
    names = rng.choice([5, 60, 300])
    for _ in range(400):
        if rng.random() < 0.5:
            name, payload = f"n{rng.randrange(names)}", bytes(rng.randrange(1, 300))
            fast.queue(name, payload)
            ref.queue(name, payload)
        else:
            n = rng.choice([1, 10, 100, 1000, rng.randrange(1, 2000)])
            args = (rng.randrange(-5, 1500), n, rng.randrange(-1, 40))
            assert fast.get(*args) == ref.get(*args)
        assert _live(fast) == ref.live()
        assert len(fast) == len(ref.by_name)


def test_dedup_cache_evicts_the_least_recently_seen_key() -> None:
    rng = random.Random(5)
    cache = DedupCache(50)
    model: list[tuple[int, int]] = []  # least recent first
    for _ in range(5000):
        key = (rng.randrange(3), rng.randrange(120))
        was = key in model
        assert cache.seen(key) is was
        if was:
            model.remove(key)
        model.append(key)
        del model[:-50]
        assert len(cache) == len(model)
    assert list(cache._keys) == model
