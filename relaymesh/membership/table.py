"""The member table: every member this node knows, and the indexes kept beside it.

Owns the records (``state.Member``, ourselves included), when each last changed
(monotonic ms, for dwell times and the gossip-to-the-dead window), the count of
members up (ALIVE or SUSPECT: the cluster-size estimate), the sorted ring of members
up (the coordinated probe schedule), which addresses belong to members (who is a
known sender) and the ``MemberChanged`` events not yet taken. Every status or
address change goes through ``set_status`` / ``move`` so the indexes never drift.
Bounded: at most ``max_members`` records. When full, the record DEAD or LEFT the
longest (past ``gossip_to_the_dead_ms``, so it had its chance to refute) is forgotten
to make room (``evict_down``): fake members an attacker announced on an unkeyed mesh
die and then leave room for real ones, instead of filling the table for good.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Container

from relaymesh.clock import Clock
from relaymesh.membership.config import MemberChanged
from relaymesh.membership.state import Address, Member
from relaymesh.model import MemberStatus

__all__ = ["UP", "WANT_ALIVE", "WANT_DEAD", "WANT_GOSSIP", "MemberTable"]

_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT
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
        "_down",
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
        self._down: list[tuple[int, str]] = []
        """(changed_mono_ms, name) of members that went DEAD or LEFT, oldest first;
        lazily cleaned (an entry whose member changed since is skipped)."""
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
        else:
            self._push_down(name, now)
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
        if not is_up and member is not self.local:
            self._push_down(member.name, now)
        self.emit(member, previous)

    def _push_down(self, name: str, now: int) -> None:
        down = self._down
        heapq.heappush(down, (now, name))
        if len(down) > 2 * len(self.members) + 64:  # flapping left stale entries
            self._down = [
                (at, n)
                for at, n in down
                if (m := self.members.get(n)) is not None
                and m.status not in UP
                and self.changed_mono_ms[n] == at
            ]
            heapq.heapify(self._down)

    def evict_down(self, now: int, keep: Container[str]) -> bool:
        """Forget the member DEAD or LEFT the longest, if longer than the
        gossip-to-the-dead window and not in ``keep``; False when none qualifies."""
        down = self._down
        members = self.members
        while down:
            at, name = down[0]
            m = members.get(name)
            if m is None or m.status in UP or self.changed_mono_ms[name] != at:
                heapq.heappop(down)  # stale: the member changed since
                continue
            if now - at <= self._dead_window_ms:
                return False  # the oldest is still within its refutation window
            heapq.heappop(down)
            if name in keep:
                continue
            del members[name]
            del self.changed_mono_ms[name]
            self.peer_names.remove(name)
            addresses = self._addresses
            addresses[m.address] -= 1
            if addresses[m.address] <= 0:
                del addresses[m.address]
            return True
        return False

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
