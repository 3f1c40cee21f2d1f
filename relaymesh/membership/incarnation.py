"""Which incarnation numbers a node believes, and which it may take itself.

Owns the one rule every path applies (UDP updates, push/pull snapshots, a persisted
view, the incarnation file): an incarnation is believed only when it is at most
``incarnation_ceiling(wall_ms)``. A node starts at its wall clock in milliseconds
(``initial_incarnation``) and only refutes (+1) above what it was accused at, so an
honest incarnation is the start time plus a few refutations; a value far above the
clock can only come from a bug or an attacker. Without the ceiling, one datagram
naming a live node at 2**63 - 1 made it refute with 2**63, which no decoder accepts,
and it stayed DEAD everywhere.

The ceiling moves with the clock, so a value one node holds (at most its ceiling
when it got it) is, one millisecond later, below the ceiling of every node whose
clock is not behind it: a refutation at +1 is believed wherever the accusation was.
Pure functions: the caller passes the wall clock.
"""

from __future__ import annotations

__all__ = [
    "INCARNATION_AHEAD_MAX_MS",
    "INCARNATION_MAX",
    "admissible",
    "incarnation_ceiling",
    "initial_incarnation",
    "refutation",
]

INCARNATION_MAX = 2**63 - 1
"""The largest incarnation the wire format carries (msgpack int64)."""

INCARNATION_AHEAD_MAX_MS = 7 * 24 * 3600 * 1000
"""How far above our wall clock (ms) an incarnation may be and still be believed:
a week covers any clock skew a cluster can live with and every refutation a node
will ever make; 2**63 ms is 292 million years, so the headroom costs nothing."""

_RESERVE = 2**32
"""Values this close to INCARNATION_MAX are refused whatever the clock says (a wall
clock set absurdly far ahead must not bring the maximum back into reach)."""


def incarnation_ceiling(wall_ms: int) -> int:
    """The highest incarnation believed when the wall clock reads ``wall_ms``."""
    return min(max(wall_ms, 0) + INCARNATION_AHEAD_MAX_MS, INCARNATION_MAX - _RESERVE)


def admissible(incarnation: int, wall_ms: int) -> bool:
    """True when an incarnation received (or loaded) is believable now."""
    return 0 <= incarnation <= incarnation_ceiling(wall_ms)


def refutation(accused_at: int, current: int) -> int | None:
    """Our next incarnation after an accusation at ``accused_at``; None never to refute.

    Callers only pass admissible accusations, so ``accused_at + 1`` is far below the
    maximum; the check is the last line of defence, not the rule.
    """
    nxt = max(accused_at, current) + 1
    return nxt if nxt <= INCARNATION_MAX - _RESERVE else None


def initial_incarnation(persisted: int | None, wall_ms: int) -> tuple[int, bool]:
    """(incarnation to start at, whether ``persisted`` was refused).

    Above any value this name used before (so a restart rejoins ALIVE at once), but a
    persisted value outside ``admissible`` (a poisoned or corrupt file) is ignored.
    """
    if persisted is not None and admissible(persisted, wall_ms):
        return max(persisted + 1, wall_ms), False
    return max(wall_ms, 0), persisted is not None
