"""The protocol core's timers: one heap of (deadline, kind, key), popped when due.

Owns no decisions: each part of the core pushes its own kind of timer and the
core's ``tick`` hands every due one back to the part that owns the kind. A timer
is never cancelled; its owner ignores one that no longer matches its state (which
is cheaper than removing it from the heap).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

__all__ = ["GOSSIP", "PROBE", "RECOVER", "RELAY", "SUSPECT", "Timers"]

PROBE = 0
GOSSIP = 1
SUSPECT = 2
RECOVER = 3
RELAY = 4


class Timers:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, object]] = []
        self._seq = 0
        """Ties at one deadline pop in the order pushed."""

    def push(self, at_ms: int, kind: int, key: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, kind, key))

    def next_ms(self) -> int | None:
        """The earliest deadline, or None when no timer is set."""
        return self._heap[0][0] if self._heap else None

    def due(self, now_ms: int) -> Iterator[tuple[int, int, object]]:
        """(deadline, kind, key) of every timer due at ``now_ms``, earliest first,
        including ones pushed while iterating that are already due."""
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            deadline, _, kind, key = heapq.heappop(heap)
            yield deadline, kind, key

    def snapshot(self) -> list[tuple[int, int, int, object]]:
        """The pending timers (tests compare two cores' states)."""
        return list(self._heap)
