"""Member records and the merge rule: which of two reports about a member wins.

Owns ``Member``, the status precedence, ``judge`` (what the running node does with
one report about a member it holds: the rule ``updates.py`` applies to every update,
from UDP and from push/pull alike) and ``merge_views``. Pure functions on plain data:
no clock, no randomness, no I/O. ``judge`` only ever applies what ``supersedes``
ranks higher, so the node's view moves up the same order ``merge_views`` joins in.

Order between two reports about the same member: the higher incarnation wins; at
equal incarnation LEFT > DEAD > SUSPECT > ALIVE (DEAD and LEFT both outrank SUSPECT;
LEFT outranks DEAD because a graceful leave is the more precise news). Remaining
ties are broken on the other fields so the merge is a true lattice join:
commutative, associative and idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from relaymesh.model import MemberStatus

__all__ = [
    "STATUS_RANK",
    "Address",
    "Member",
    "Verdict",
    "judge",
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
_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT


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


class Verdict(Enum):
    """What to do with one report about a member we hold."""

    IGNORE = "ignore"
    """Old news, or news this rule never takes (see ``judge``)."""
    APPLY = "apply"
    """It outranks what we hold: take it."""
    CONFIRM = "confirm"
    """The same suspicion we hold, from another accuser (Lifeguard counts it)."""


def judge(
    incoming_incarnation: int,
    incoming_status: MemberStatus,
    current_incarnation: int,
    current_status: MemberStatus,
) -> Verdict:
    """The node's rule for one update: ``supersedes``, narrowed by two SWIM rules.

    - A LEFT member stays LEFT until it comes back ALIVE at a higher incarnation (a
      new life); a DEAD one is not re-suspected or re-declared, only an ALIVE above it
      revives it (so a flood of old accusations cannot keep moving a dead record).
    - A SUSPECT at the incarnation we already suspect is a confirmation.

    ``current_incarnation`` is what we hold, or a refutation we hold back (jitter
    suppression) when that is higher.
    """
    if current_status is _LEFT and incoming_status is not _ALIVE:
        return Verdict.IGNORE
    if current_status is _DEAD and incoming_status is not _ALIVE and incoming_status is not _LEFT:
        return Verdict.IGNORE
    if (
        incoming_status is _SUSPECT
        and current_status is _SUSPECT
        and incoming_incarnation == current_incarnation
    ):
        return Verdict.CONFIRM
    if supersedes(incoming_incarnation, incoming_status, current_incarnation, current_status):
        return Verdict.APPLY
    return Verdict.IGNORE


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
