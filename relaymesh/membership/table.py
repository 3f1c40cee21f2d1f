"""The member table: every member this node knows, and the indexes kept beside it.

Owns the records (``state.Member``, ourselves included), when each last changed
(monotonic ms, for dwell times and the gossip-to-the-dead window), the count of
members up (ALIVE or SUSPECT: the cluster-size estimate), the sorted ring of members
up (the coordinated probe schedule), which addresses belong to members (who is a
known sender) and the ``MemberChanged`` events not yet taken. Every status or
address change goes through ``set_status`` / ``move`` so the indexes never drift.
Bounded: at most ``max_members`` records; ``add`` refuses past it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from relaymesh.clock import Clock
from relaymesh.membership.config import MemberChanged
from relaymesh.membership.state import Address, Member
from relaymesh.model import MemberStatus

__all__ = ["UP", "WANT_ALIVE", "WANT_DEAD", "WANT_GOSSIP", "MemberTable"]

_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
UP = (_ALIVE, _SUSPECT)

# which peers random_peers may return
WANT_ALIVE = 0
WANT_GOSSIP = 1
"""ALIVE, SUSPECT, and DEAD for gossip_to_the_dead_ms (so it can refute)."""
WANT_DEAD = 2


class MemberTable:
    """The records and their indexes; ``on_up(name)`` hears of every member going up."""

    __slots__ = (
        "_addresses",
        "_clock",
        "_dead_window_ms",
        "_events",
        "_max_members",
        "_ring",
        "_ring_stale",
        "_rng",
        "changed_mono_ms",
        "live_count",
        "local",
        "members",
        "on_up",
        "peer_names",
    )

    def __init__(
        self,
        local: Member,
        clock: Clock,
        rng: random.Random,
        *,
        max_members: int,
        gossip_to_the_dead_ms: int,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._max_members = max_members
        self._dead_window_ms = gossip_to_the_dead_ms
        self.local = local
        self.members: dict[str, Member] = {local.name: local}
        self.changed_mono_ms: dict[str, int] = {local.name: clock.monotonic_ms()}
        self.peer_names: list[str] = []
        """Every member but us, in the order first heard of (random picks index it)."""
        self.live_count = 1
        self._addresses: Counter[Address] = Counter({local.address: 1})
        """How many members we hold at each address: who is a known sender."""
        self._ring: list[str] = [local.name]
        """Sorted names of the members held ALIVE or SUSPECT, self included (schedule)."""
        self._ring_stale = False
        self._events: list[MemberChanged] = []
        self.on_up: Callable[[str], None] = lambda name: None

    def __len__(self) -> int:
        return len(self.members)

    def full(self) -> bool:
        return len(self.members) >= self._max_members

    def is_member_address(self, address: Address) -> bool:
        return address in self._addresses

    def add(self, member: Member, now: int, *, emit: bool = True) -> None:
        """Insert a member we did not know (the caller checked ``full``)."""
        name = member.name
        self.members[name] = member
        self.changed_mono_ms[name] = now
        self.peer_names.append(name)
        self._addresses[member.address] += 1
        if member.status in UP:
            self.live_count += 1
            self._ring_stale = True
            self.on_up(name)
        if emit:
            self.emit(member, None)

    def set_status(self, member: Member, status: MemberStatus, now: int) -> None:
        previous = member.status
        if previous is status:
            return
        was_up = previous in UP
        is_up = status in UP
        if was_up and not is_up:
            self.live_count -= 1
            self._ring_stale = True
        elif is_up and not was_up:
            self.live_count += 1
            self._ring_stale = True
            self.on_up(member.name)
        member.status = status
        member.status_changed_at_ms = self._clock.wall_ms()
        self.changed_mono_ms[member.name] = now
        self.emit(member, previous)

    def move(self, member: Member, address: Address) -> None:
        """Set a member's address, keeping the known-sender index right."""
        if member.address == address:
            return
        addresses = self._addresses
        addresses[member.address] -= 1
        if addresses[member.address] <= 0:
            del addresses[member.address]
        addresses[address] += 1
        member.address = address

    def emit(self, member: Member, previous: MemberStatus | None) -> None:
        self._events.append(
            MemberChanged(
                member.name,
                member.address,
                member.status,
                previous,
                member.incarnation,
                dict(member.metadata),
                self._clock.wall_ms(),
            )
        )

    def take_events(self) -> list[MemberChanged]:
        events = self._events
        self._events = []
        return events

    def ring(self) -> list[str]:
        """Sorted names of the members up, ourselves included."""
        if self._ring_stale:
            members = self.members
            self._ring = sorted(n for n, m in members.items() if m.status in UP)
            self._ring_stale = False
        return self._ring

    def random_peers(self, k: int, exclude: str | None, *, want: int, now: int = 0) -> list[Member]:
        """Up to ``k`` distinct random peers of the ``want`` kind (few tries, O(k))."""
        names = self.peer_names
        n = len(names)
        if n == 0 or k <= 0:
            return []
        members = self.members
        rand = self._rng.random
        dead_window_ms = self._dead_window_ms
        chosen: list[Member] = []
        picked: set[str] = set()
        for _ in range(3 * n if n < 64 else 3 * k + 64):
            name = names[int(rand() * n)]
            if name in picked or name == exclude:
                continue
            m = members[name]
            status = m.status
            if want == WANT_DEAD:
                if status is not _DEAD:
                    continue
            elif status is _ALIVE:
                pass
            elif want == WANT_ALIVE:
                continue
            elif status is _DEAD:
                if now - self.changed_mono_ms[name] > dead_window_ms:
                    continue
            elif status is not _SUSPECT:
                continue
            picked.add(name)
            chosen.append(m)
            if len(chosen) >= k:
                break
        return chosen
