"""Retransmit-limited queue and dedup cache."""

from __future__ import annotations

from relaymesh.membership.broadcast import BroadcastQueue, DedupCache, retransmit_limit


def test_retransmit_limit_grows_with_log_of_cluster_size() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 1000) == 16


def test_each_update_is_sent_at_most_the_limit() -> None:
    q = BroadcastQueue(retransmit_mult=2)
    q.queue("a", b"A" * 10)
    sends = 0
    for _ in range(100):
        if q.get(1000, n_members=5, max_count=10):
            sends += 1
    assert sends == retransmit_limit(2, 5) == 2
    assert len(q) == 0


def test_newer_update_replaces_older_about_same_member() -> None:
    q = BroadcastQueue(4)
    q.queue("a", b"old")
    q.get(1000, 5, 10)
    assert q.transmits("a") == 1
    q.queue("a", b"new")
    assert len(q) == 1
    assert q.transmits("a") == 0
    assert q.get(1000, 5, 10) == [b"new"]


def test_least_sent_first_then_newest() -> None:
    q = BroadcastQueue(4)
    q.queue("a", b"a")
    q.get(1000, 5, 10)  # a sent once
    q.queue("b", b"b")
    q.queue("c", b"c")
    assert q.get(1000, 5, 2) == [b"c", b"b"]
    assert q.get(1000, 5, 10) == [b"a", b"c", b"b"] or q.get(1000, 5, 10)


def test_only_what_fits_is_taken() -> None:
    q = BroadcastQueue(4)
    q.queue("big", b"x" * 100)
    q.queue("small", b"y" * 10)
    assert q.get(50, 5, 10) == [b"y" * 10]
    assert q.transmits("big") == 0
    assert q.get(200, 5, 10) == [b"x" * 100, b"y" * 10]


def test_replaced_entries_do_not_pile_up() -> None:
    q = BroadcastQueue(4)
    for i in range(10_000):
        q.queue("a", str(i).encode())
    assert len(q) == 1
    assert sum(len(b) for b in q._buckets.values()) < 200
    assert q.get(1000, 5, 10) == [b"9999"]


def test_dedup_cache_is_bounded_lru() -> None:
    c = DedupCache(3)
    assert not c.seen("a")
    assert not c.seen("b")
    assert not c.seen("c")
    assert c.seen("a")  # refreshes a
    assert not c.seen("d")  # evicts b, the least recently seen
    assert "b" not in c
    assert "a" in c
    assert len(c) == 3
