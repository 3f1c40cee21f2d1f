"""Member records and the merge rule: which of two reports about a member wins.

Owns ``Member``, the status precedence and ``merge_views``. Pure functions on plain
data: no clock, no randomness, no I/O. The protocol core (``protocol.py``) applies
updates one at a time with extra rules (refutation, jitter suppression); this module
holds the ordering those rules agree with, and the snapshot merge that anti-entropy
and the property tests rely on.

Order between two reports about the same member: the higher incarnation wins; at
equal incarnation LEFT > DEAD > SUSPECT > ALIVE (DEAD and LEFT both outrank SUSPECT;
LEFT outranks DEAD because a graceful leave is the more precise news). Remaining
ties are broken on the other fields so the merge is a true lattice join:
commutative, associative and idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from relaymesh.model import MemberStatus

__all__ = [
    "STATUS_RANK",
    "Address",
    "Member",
    "merge_member",
    "merge_views",
    "supersedes",
]

Address = tuple[str, int]
"""A UDP/TCP endpoint: (host, port)."""

STATUS_RANK: dict[MemberStatus, int] = {
    MemberStatus.ALIVE: 0,
    MemberStatus.SUSPECT: 1,
    MemberStatus.DEAD: 2,
    MemberStatus.LEFT: 3,
}
"""Precedence at equal incarnation."""


@dataclass(slots=True)
class Member:
    """One member as this node sees it.

    ``status_changed_at_ms`` is wall-clock ms (the injected clock's ``wall_ms``) of
    when the node holding the record saw the status change, or first heard of the
    member; it is not sent on the wire.
    """

    name: str
    address: Address
    status: MemberStatus
    incarnation: int
    metadata: dict[str, str] = field(default_factory=dict)
    status_changed_at_ms: int = 0

    def copy(self) -> Member:
        return Member(
            self.name,
            self.address,
            self.status,
            self.incarnation,
            dict(self.metadata),
            self.status_changed_at_ms,
        )


def supersedes(
    incoming_incarnation: int,
    incoming_status: MemberStatus,
    current_incarnation: int,
    current_status: MemberStatus,
) -> bool:
    """True when the incoming (incarnation, status) strictly outranks the current one."""
    if incoming_incarnation != current_incarnation:
        return incoming_incarnation > current_incarnation
    return STATUS_RANK[incoming_status] > STATUS_RANK[current_status]


def _order_key(m: Member) -> tuple[int, int, str, int, tuple[tuple[str, str], ...], int]:
    return (
        m.incarnation,
        STATUS_RANK[m.status],
        m.address[0],
        m.address[1],
        tuple(sorted(m.metadata.items())),
        m.status_changed_at_ms,
    )


def merge_member(a: Member, b: Member) -> Member:
    """The winner of two reports about the same member (a total order, so a join)."""
    return b if _order_key(b) > _order_key(a) else a


def merge_views(a: Mapping[str, Member], b: Mapping[str, Member]) -> dict[str, Member]:
    """Merge two snapshots (name -> Member); commutative, associative, idempotent.

    The result holds the same ``Member`` objects as the inputs (no copies).
    """
    merged = dict(a)
    for name, theirs in b.items():
        ours = merged.get(name)
        merged[name] = theirs if ours is None else merge_member(ours, theirs)
    return merged
