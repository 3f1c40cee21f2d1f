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
from collections.abc import Hashable

__all__ = ["BroadcastQueue", "DedupCache", "retransmit_limit"]

_MAX_SKIPPED = 32
"""Updates looked at but too big for the space left, before a packet is called full."""


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one update is sent in a cluster of ``n`` members."""
    return retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


class _Item:
    __slots__ = ("name", "payload", "transmits")

    def __init__(self, name: str, payload: bytes) -> None:
        self.name = name
        self.payload = payload
        self.transmits = 0


class BroadcastQueue:
    """Updates waiting to be piggybacked, one per member name, bucketed by sends."""

    __slots__ = ("_buckets", "_by_name", "_retransmit_mult")

    def __init__(self, retransmit_mult: int) -> None:
        self._retransmit_mult = retransmit_mult
        self._by_name: dict[str, _Item] = {}
        # transmits -> {name: item}, insertion order = age within the bucket
        self._buckets: dict[int, dict[str, _Item]] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def queue(self, name: str, payload: bytes) -> None:
        """Queue an encoded update about ``name``, replacing any older one about it."""
        old = self._by_name.pop(name, None)
        if old is not None:
            self._drop_from_bucket(old)
        item = _Item(name, payload)
        self._by_name[name] = item
        self._buckets.setdefault(0, {})[name] = item

    def get(self, space_bytes: int, n_members: int, max_count: int) -> list[bytes]:
        """Encoded updates fitting in ``space_bytes`` (at most ``max_count``); counts a send."""
        if not self._by_name or space_bytes <= 0 or max_count <= 0:
            return []
        limit = retransmit_limit(self._retransmit_mult, n_members)
        picked: list[_Item] = []
        skipped = 0
        for transmits in sorted(self._buckets):
            bucket = self._buckets[transmits]
            for item in reversed(bucket.values()):
                size = len(item.payload)
                if size > space_bytes:
                    skipped += 1
                    if skipped >= _MAX_SKIPPED:
                        break
                    continue
                picked.append(item)
                space_bytes -= size
                if len(picked) >= max_count or space_bytes <= 2:
                    break
            else:
                continue
            break
        for item in picked:
            self._drop_from_bucket(item)
            item.transmits += 1
            if item.transmits >= limit:
                del self._by_name[item.name]
            else:
                self._buckets.setdefault(item.transmits, {})[item.name] = item
        return [item.payload for item in picked]

    def clear(self) -> None:
        self._by_name.clear()
        self._buckets.clear()

    def transmits(self, name: str) -> int | None:
        """How often the queued update about ``name`` was sent; None when none is queued."""
        item = self._by_name.get(name)
        return None if item is None else item.transmits

    def _drop_from_bucket(self, item: _Item) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item.name]
        if not bucket:
            del self._buckets[item.transmits]


class DedupCache:
    """A bounded LRU set of update keys already handled."""

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._keys: dict[Hashable, None] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def seen(self, key: Hashable) -> bool:
        """True if ``key`` was seen (and refresh it); else remember it and return False."""
        keys = self._keys
        if key in keys:
            del keys[key]
            keys[key] = None
            return True
        keys[key] = None
        if len(keys) > self._capacity:
            del keys[next(iter(keys))]
        return False

    def add(self, key: Hashable) -> None:
        self.seen(key)
