"""Applying member updates: the merge rule of ``state.judge`` run against the table.

Owns suspicions (Lifeguard timeouts that end in DEAD unless refuted) and jitter
suppression: a refutation of a member we hold SUSPECT or DEAD takes effect only
once it has dwelt there ``suspect_recover_min_ms`` / ``dead_recover_min_ms``, so a
flapping member does not flap in every view; the held refutation stops the
suspicion at once, so it can never turn into a false DEAD. Updates naming
ourselves go to ``refutation.SelfRecord``. Each ``apply_*`` returns None when it
ignored an update about a member it does not know (so the dedup cache does not
remember it), else whether the view changed. UDP updates and push/pull entries
both come here, after the same admission checks (``protocol.Swim``).
"""

from __future__ import annotations

from relaymesh.clock import Clock
from relaymesh.membership import timers as timer
from relaymesh.membership.config import SwimConfig, SwimStats
from relaymesh.membership.dissemination import Dissemination
from relaymesh.membership.refutation import SelfRecord
from relaymesh.membership.state import Member, Verdict, judge
from relaymesh.membership.suspicion import Suspicion, suspicion_timeout_ms
from relaymesh.membership.table import MemberTable
from relaymesh.membership.timers import Timers
from relaymesh.membership.wire import Alive, Dead, Left, Suspect
from relaymesh.model import MemberStatus

__all__ = ["Updates"]

_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT


class Updates:
    __slots__ = (
        "_clock",
        "_config",
        "_diss",
        "_me",
        "_stats",
        "_table",
        "_timers",
        "pending_alive",
        "suspicions",
    )

    def __init__(
        self,
        *,
        config: SwimConfig,
        clock: Clock,
        table: MemberTable,
        diss: Dissemination,
        me: SelfRecord,
        timers: Timers,
        stats: SwimStats,
    ) -> None:
        self._config = config
        self._clock = clock
        self._table = table
        self._diss = diss
        self._me = me
        self._timers = timers
        self._stats = stats
        self.suspicions: dict[str, Suspicion] = {}
        self.pending_alive: dict[str, Alive] = {}
        """Refutations held back by jitter suppression, by member."""

    # --- ALIVE --------------------------------------------------------------

    def apply_alive(self, a: Alive, now: int) -> bool | None:
        if a.name == self._me.name:
            self._me.about_us(a, now)
            return False
        table = self._table
        cur = table.members.get(a.name)
        if cur is None:
            if table.full() and not table.evict_down(now, self.pending_alive):
                self._stats.dropped["member_limit"] += 1
                return None
            member = Member(
                a.name, a.address, _ALIVE, a.incarnation, dict(a.metadata), self._clock.wall_ms()
            )
            table.add(member, now)
            self._diss.queue_update(a.name, a, now)
            return True
        pending = self.pending_alive.get(a.name)
        floor = pending.incarnation if pending is not None else cur.incarnation
        if judge(a.incarnation, _ALIVE, floor, cur.status) is not Verdict.APPLY:
            return False
        if cur.status is _ALIVE:
            changed = a.address != cur.address or a.metadata != cur.metadata
            cur.incarnation = a.incarnation
            if changed:
                table.move(cur, a.address)
                cur.metadata = dict(a.metadata)
                table.emit(cur, _ALIVE)
            self._diss.queue_update(a.name, a, now)
            return True
        ready_at_ms = table.changed_mono_ms[a.name] + self._dwell_ms(cur.status)
        if now < ready_at_ms:
            # Jitter suppression: hold the recovery until the dwell ends, but stop the
            # suspicion now so a refutation we hold can never turn into a false DEAD.
            if pending is None:  # one timer per dwell, however many refutations arrive
                self._timers.push(ready_at_ms, timer.RECOVER, a.name)
            self.pending_alive[a.name] = a
            self.suspicions.pop(a.name, None)
            self._stats.recoveries_suppressed += 1
            self._diss.queue_update(a.name, a, now)
            return True
        self._recover(cur, a, now)
        self._diss.queue_update(a.name, a, now)
        return True

    def _dwell_ms(self, status: MemberStatus) -> int:
        config = self._config
        return config.suspect_recover_min_ms if status is _SUSPECT else config.dead_recover_min_ms

    def _recover(self, cur: Member, a: Alive, now: int) -> None:
        self.pending_alive.pop(cur.name, None)
        self.suspicions.pop(cur.name, None)
        cur.incarnation = a.incarnation
        self._table.move(cur, a.address)
        cur.metadata = dict(a.metadata)
        self._table.set_status(cur, _ALIVE, now)

    def on_recover_timer(self, name: str, now: int) -> None:
        pending = self.pending_alive.get(name)
        if pending is None:
            return
        cur = self._table.members[name]
        if cur.status is _ALIVE:
            self.pending_alive.pop(name)
            return
        if now >= self._table.changed_mono_ms[name] + self._dwell_ms(cur.status):
            self._recover(cur, pending, now)

    # --- SUSPECT ------------------------------------------------------------

    def apply_suspect(self, s: Suspect, now: int) -> bool | None:
        if s.name == self._me.name:
            self._me.about_us(s, now)
            return False
        cur = self._table.members.get(s.name)
        if cur is None:
            return None
        if judge(s.incarnation, _SUSPECT, cur.incarnation, cur.status) is Verdict.IGNORE:
            return False
        pending = self.pending_alive.get(s.name)
        if pending is not None:
            if s.incarnation < pending.incarnation:
                return False
            del self.pending_alive[s.name]  # the refutation we held is outdated itself
        suspicion = self.suspicions.get(s.name)
        if suspicion is not None and s.incarnation > cur.incarnation:
            # The member refuted the suspicion we hold (we missed its ALIVE) and is
            # suspected again: a new suspicion with its own full timeout. Counting it as
            # a confirmation of the old one would let the old timer, already far along,
            # declare the new incarnation DEAD at once, and everyone would accept that.
            cur.incarnation = s.incarnation
            self.start_suspicion(s.name, s.sender, now)
            self._diss.queue_update(s.name, s, now)
            return True
        if suspicion is not None:
            if suspicion.confirm(s.sender, now):
                self._timers.push(suspicion.deadline_ms, timer.SUSPECT, s.name)
                self._diss.queue_update(s.name, s, now)
                return True
            return False
        cur.incarnation = s.incarnation
        if cur.status is _ALIVE:
            self._table.set_status(cur, _SUSPECT, now)
        # else: SUSPECT whose held refutation was outdated
        self.start_suspicion(s.name, s.sender, now)
        self._diss.queue_update(s.name, s, now)
        return True

    def start_suspicion(self, name: str, sender: str, now: int) -> None:
        config = self._config
        n = self._table.live_count
        k = config.suspicion_mult - 2 if config.lifeguard else 0
        if n - 2 < k:
            k = 0  # too few members to expect independent confirmations
        min_ms = suspicion_timeout_ms(config.suspicion_mult, n, config.probe_interval_ms)
        max_ms = config.suspicion_max_timeout_mult * min_ms if config.lifeguard else min_ms
        suspicion = Suspicion(sender, k, min_ms, max_ms, now)
        self.suspicions[name] = suspicion
        self._timers.push(suspicion.deadline_ms, timer.SUSPECT, name)

    def on_suspicion_timer(self, name: str, now: int) -> None:
        suspicion = self.suspicions.get(name)
        if suspicion is None or now < suspicion.deadline_ms:
            return
        cur = self._table.members[name]
        if cur.status is _SUSPECT:
            self.apply_dead(Dead(name, cur.incarnation, self._me.name), now)
        else:
            del self.suspicions[name]

    # --- DEAD and LEFT ------------------------------------------------------

    def apply_dead(self, d: Dead, now: int) -> bool | None:
        if d.name == self._me.name:
            self._me.about_us(d, now)
            return False
        return self._apply_down(d.name, _DEAD, d.incarnation, d, now)

    def apply_left(self, left: Left, now: int) -> bool | None:
        if left.name == self._me.name:
            self._me.about_us(left, now)
            return False
        return self._apply_down(left.name, _LEFT, left.incarnation, left, now)

    def _apply_down(
        self, name: str, status: MemberStatus, incarnation: int, msg: Dead | Left, now: int
    ) -> bool | None:
        cur = self._table.members.get(name)
        if cur is None:
            return None
        if judge(incarnation, status, cur.incarnation, cur.status) is not Verdict.APPLY:
            return False
        pending = self.pending_alive.get(name)
        if pending is not None:
            if incarnation < pending.incarnation:
                return False  # a refutation we hold outranks it
            del self.pending_alive[name]
        self.suspicions.pop(name, None)
        cur.incarnation = incarnation
        self._table.set_status(cur, status, now)
        self._diss.queue_update(name, msg, now)
        self._diss.gossip_soon(now)
        return True
