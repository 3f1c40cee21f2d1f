"""Per-source token buckets: how much one address may make a node do.

Owns the limits on what reaches the membership core from one source host: UDP
datagrams and TCP push/pull accepts (``transport.py`` asks before it reads or
serves). A legitimate peer sends a few datagrams a second and opens a push/pull
every several seconds; the defaults leave room for a whole test cluster on one
loopback address, and cap what a flood from one host costs us. Bounded: at most
``max_sources`` buckets, the least recently used forgotten first (a spoofed flood
from many addresses then meets full buckets, never an unbounded table).
Time is injected (monotonic ms), so this is a pure state machine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "TCP_ACCEPTS_BURST",
    "TCP_ACCEPTS_PER_S",
    "UDP_DATAGRAMS_BURST",
    "UDP_DATAGRAMS_PER_S",
    "SourceLimiter",
    "SourceLimits",
]

UDP_DATAGRAMS_PER_S = 2000.0
"""Datagrams per second one source host may send us (a LAN peer sends a few)."""
UDP_DATAGRAMS_BURST = 4000.0
TCP_ACCEPTS_PER_S = 20.0
"""Push/pull connections per second one source host may open."""
TCP_ACCEPTS_BURST = 40.0
MAX_SOURCES = 4096
"""Buckets kept (one per source host)."""


@dataclass(frozen=True, slots=True)
class SourceLimits:
    """The per-source-host rates a node's transport enforces (defaults above)."""

    udp_datagrams_per_s: float = UDP_DATAGRAMS_PER_S
    udp_datagrams_burst: float = UDP_DATAGRAMS_BURST
    tcp_accepts_per_s: float = TCP_ACCEPTS_PER_S
    tcp_accepts_burst: float = TCP_ACCEPTS_BURST


class SourceLimiter:
    """``allow(source)`` spends one token of that source's bucket, False when empty."""

    __slots__ = ("_buckets", "_burst", "_max_sources", "_now_ms", "_rate_per_ms")

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        now_ms: Callable[[], int],
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self._rate_per_ms = rate_per_s / 1000
        self._burst = burst
        self._now_ms = now_ms
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """source -> (tokens, at monotonic ms)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str) -> bool:
        now = self._now_ms()
        buckets = self._buckets
        held = buckets.get(source)
        if held is None:
            tokens = self._burst
            if len(buckets) >= self._max_sources:
                buckets.popitem(last=False)
        else:
            tokens = min(self._burst, held[0] + (now - held[1]) * self._rate_per_ms)
            buckets.move_to_end(source)
        if tokens < 1.0:
            buckets[source] = (tokens, now)
            return False
        buckets[source] = (tokens - 1.0, now)
        return True
