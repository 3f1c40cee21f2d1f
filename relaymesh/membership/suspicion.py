"""Lifeguard suspicion timeout: starts long, shrinks with independent confirmations.

Owns the arithmetic of one suspicion (after hashicorp/memberlist ``suspicion.go``):
a member suspected at ``started_at_ms`` is declared DEAD at ``deadline_ms``. The
timeout starts at ``max_timeout_ms`` and shrinks logarithmically toward
``min_timeout_ms`` as up to ``k`` other members independently report the same
suspicion, so a member that many peers cannot reach is declared dead quickly,
while one node's bad network alone cannot do it fast. Pure: the caller passes the
time and schedules its own timer at ``deadline_ms``.
"""

from __future__ import annotations

import math

__all__ = ["Suspicion", "remaining_timeout_ms", "suspicion_timeout_ms"]


def suspicion_timeout_ms(suspicion_mult: int, n: int, probe_interval_ms: int) -> int:
    """The minimum (classic SWIM) suspicion timeout for a cluster of ``n`` members.

    ``suspicion_mult * max(1, log10(max(1, n))) * probe_interval_ms``: the floor of 1
    keeps small clusters from declaring members dead within one probe interval.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    return int(suspicion_mult * node_scale * probe_interval_ms)


def remaining_timeout_ms(
    confirmations: int, k: int, elapsed_ms: int, min_timeout_ms: int, max_timeout_ms: int
) -> int:
    """Time left after ``elapsed_ms`` with ``confirmations`` of ``k`` wanted (may be <= 0)."""
    if k <= 0:
        timeout_ms = min_timeout_ms
    else:
        frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
        raw_ms = max_timeout_ms - frac * (max_timeout_ms - min_timeout_ms)
        timeout_ms = max(min_timeout_ms, math.floor(raw_ms))
    return timeout_ms - elapsed_ms


class Suspicion:
    """One member's suspicion: who confirmed it and when it expires."""

    __slots__ = (
        "_confirmers",
        "_k",
        "_max_timeout_ms",
        "_min_timeout_ms",
        "confirmations",
        "deadline_ms",
        "started_at_ms",
    )

    def __init__(
        self,
        from_name: str,
        k: int,
        min_timeout_ms: int,
        max_timeout_ms: int,
        started_at_ms: int,
    ) -> None:
        """``from_name`` raised the suspicion; it does not count as a confirmation."""
        self._confirmers = {from_name}
        self._k = k
        self._min_timeout_ms = min_timeout_ms
        self._max_timeout_ms = max_timeout_ms
        self.started_at_ms = started_at_ms
        self.confirmations = 0
        timeout_ms = max_timeout_ms if k >= 1 else min_timeout_ms
        self.deadline_ms = started_at_ms + timeout_ms

    def confirm(self, from_name: str, now_ms: int) -> bool:
        """Count an independent confirmation; True when it was new (re-gossip it).

        The deadline moves earlier (never later) as confirmations arrive.
        """
        if self.confirmations >= self._k or from_name in self._confirmers:
            return False
        self._confirmers.add(from_name)
        self.confirmations += 1
        elapsed_ms = now_ms - self.started_at_ms
        remaining_ms = remaining_timeout_ms(
            self.confirmations, self._k, elapsed_ms, self._min_timeout_ms, self._max_timeout_ms
        )
        self.deadline_ms = now_ms + max(0, remaining_ms)
        return True
