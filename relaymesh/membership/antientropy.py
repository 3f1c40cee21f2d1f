"""Anti-entropy: how a full snapshot from a peer turns into updates, and how often.

Owns the rules of push/pull (memberlist ``mergeRemoteState`` / ``pushPullScale``);
the protocol core applies what this returns by its ordinary merge rules, and the
driver (TCP) or the in-memory network moves the bytes. Pure functions, no I/O.

A remote DEAD is taken as SUSPECT, not DEAD: a snapshot may be old, and a member
we can still reach deserves the chance to refute before we declare it dead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from relaymesh.membership.state import Member
from relaymesh.membership.wire import Alive, Left, Suspect
from relaymesh.model import MemberStatus

__all__ = ["PUSH_PULL_SCALE_THRESHOLD", "pushpull_interval_ms", "snapshot_updates"]

PUSH_PULL_SCALE_THRESHOLD = 32
"""Above this many members, push/pull slows down so total TCP load stays flat."""


def pushpull_interval_ms(base_interval_ms: int, n: int) -> int:
    """The push/pull interval for ``n`` members: ``base`` up to 32, then x(log2(n/32)+1)."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return base_interval_ms
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return int(multiplier * base_interval_ms)


def snapshot_updates(remote: Iterable[Member], local_name: str) -> Iterator[Alive | Suspect | Left]:
    """The update each remote record stands for, ``local_name`` as the accuser."""
    for m in remote:
        if m.status is MemberStatus.ALIVE:
            yield Alive(m.name, m.incarnation, m.address, m.metadata)
        elif m.status is MemberStatus.LEFT:
            yield Left(m.name, m.incarnation)
        else:
            yield Suspect(m.name, m.incarnation, local_name)
