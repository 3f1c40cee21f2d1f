"""Piggybacked dissemination: the retransmit-limited queue and the dedup cache.

Owns which membership updates ride on outgoing packets, and how often. Each update
is sent at most ``retransmit_mult * ceil(log10(n + 1))`` times (enough for
epidemic spread to reach every member with high probability, no more); the
least-sent updates go first, newest first among equals; a newer update about a
member replaces the older one still queued. Updates are stored already encoded, so
building a packet is a concatenation (memberlist ``broadcast.go`` / ``queue.go``).

The ``DedupCache`` remembers updates already handled so a rumour that comes back
over another path is neither applied nor re-gossiped again (no echo). Both are
bounded: the queue holds at most one update per member, the cache a fixed count.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Container, Hashable

__all__ = ["BroadcastQueue", "DedupCache", "retransmit_limit"]

_MAX_SKIPPED = 32
"""Updates looked at but too big for the space left, before a packet is called full."""


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one update is sent in a cluster of ``n`` members."""
    return retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


class _Item:
    __slots__ = ("dead", "name", "payload", "size", "transmits")

    def __init__(self, name: str, payload: bytes) -> None:
        self.name = name
        self.payload = payload
        self.size = len(payload)
        self.transmits = 0
        self.dead = False


class BroadcastQueue:
    """Updates waiting to be piggybacked, one per member name, bucketed by sends.

    Each bucket is a stack (newest on top) so taking the next update is a pop; an
    update replaced by a newer one is only marked dead and skipped when reached
    (the stacks are compacted when dead entries outnumber live ones).
    """

    __slots__ = ("_buckets", "_by_name", "_dead", "_limit", "_limit_n", "_retransmit_mult")

    def __init__(self, retransmit_mult: int) -> None:
        self._retransmit_mult = retransmit_mult
        self._by_name: dict[str, _Item] = {}
        self._buckets: dict[int, list[_Item]] = {}
        self._dead = 0
        self._limit_n = -1
        self._limit = 0
        """retransmit_limit() for _limit_n members: the cluster size rarely changes."""

    def __len__(self) -> int:
        return len(self._by_name)

    def queue(self, name: str, payload: bytes) -> None:
        """Queue an encoded update about ``name``, replacing any older one about it."""
        old = self._by_name.get(name)
        if old is not None:
            old.dead = True
            self._dead += 1
            if self._dead > len(self._by_name) + 64:
                self._compact()
        item = _Item(name, payload)
        self._by_name[name] = item
        bucket = self._buckets.get(0)
        if bucket is None:
            self._buckets[0] = [item]
        else:
            bucket.append(item)

    def get(self, space_bytes: int, n_members: int, max_count: int) -> list[bytes]:
        """Encoded updates fitting in ``space_bytes`` (at most ``max_count``); counts a send."""
        if not self._by_name or space_bytes <= 2 or max_count <= 0:
            return []
        if n_members != self._limit_n:
            self._limit = retransmit_limit(self._retransmit_mult, n_members)
            self._limit_n = n_members
        limit = self._limit
        buckets = self._buckets
        payloads: list[bytes] = []
        # Every item of bucket t has been sent t times, so what one bucket gave moves
        # on to bucket t + 1 as a group (in the order taken, as one at a time would).
        moves: list[tuple[int, list[_Item]]] = []
        room = max_count
        skipped = 0
        full = False
        for transmits in sorted(buckets):
            stack = buckets[transmits]
            taken: list[_Item] = []
            too_big: list[_Item] | None = None
            while stack:
                item = stack.pop()
                if item.dead:
                    self._dead -= 1
                    continue
                size = item.size
                if size > space_bytes:
                    if too_big is None:
                        too_big = [item]
                    else:
                        too_big.append(item)
                    skipped += 1
                    if skipped >= _MAX_SKIPPED:
                        full = True
                        break
                    continue
                taken.append(item)
                payloads.append(item.payload)
                space_bytes -= size
                room -= 1
                if not room or space_bytes <= 2:
                    full = True
                    break
            if too_big is not None:
                too_big.reverse()
                stack.extend(too_big)
            if not stack:
                del buckets[transmits]
            if taken:
                moves.append((transmits + 1, taken))
            if full:
                break
        by_name = self._by_name
        for sent, group in moves:
            for item in group:
                item.transmits = sent
            if sent >= limit:
                for item in group:
                    del by_name[item.name]
            else:
                nxt = buckets.get(sent)
                if nxt is None:
                    buckets[sent] = group
                else:
                    nxt.extend(group)
        return payloads

    def clear(self) -> None:
        self._by_name.clear()
        self._buckets.clear()
        self._dead = 0

    def transmits(self, name: str) -> int | None:
        """How often the queued update about ``name`` was sent; None when none is queued."""
        item = self._by_name.get(name)
        return None if item is None else item.transmits

    def _compact(self) -> None:
        for transmits in list(self._buckets):
            live = [item for item in self._buckets[transmits] if not item.dead]
            if live:
                self._buckets[transmits] = live
            else:
                del self._buckets[transmits]
        self._dead = 0


class DedupCache:
    """A bounded LRU set of update keys already handled.

    An ``OrderedDict``, not a dict with delete-and-reinsert: evicting a dict's oldest
    key with ``next(iter(d))`` scans past every key deleted before it until the next
    resize, which made each add cost ~4 us in a suspicion storm (0.6 us this way).
    """

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    @property
    def keys(self) -> Container[Hashable]:
        """The remembered keys, for fast read-only membership tests."""
        return self._keys

    def seen(self, key: Hashable) -> bool:
        """True if ``key`` was seen (and refresh it); else remember it and return False."""
        keys = self._keys
        if key in keys:
            keys.move_to_end(key)
            return True
        keys[key] = None
        if len(keys) > self._capacity:
            keys.popitem(last=False)
        return False

    def add(self, key: Hashable) -> None:
        self.seen(key)
