"""Refutation: our own record, and what we do when a peer reports us wrongly.

Owns the local member (incarnation, status, metadata), its encoded ALIVE, and the
safe-mode flag: from an accusation (SUSPECT or DEAD about us) until our refutation
went out and a probe of ours was answered again, ``is_alive`` is False (the worker
pauses). Only this node raises its incarnation: above the accusation, never past
what peers will believe (``incarnation.refutation``, and the caller only passes
admissible accusations), and it tells everyone by gossip.
"""

from __future__ import annotations

from relaymesh.membership.awareness import Awareness
from relaymesh.membership.dissemination import Dissemination
from relaymesh.membership.incarnation import refutation
from relaymesh.membership.state import Member
from relaymesh.membership.table import MemberTable
from relaymesh.membership.wire import Alive, Dead, Left, Suspect, encode_message
from relaymesh.model import MemberStatus

__all__ = ["SelfRecord"]


class SelfRecord:
    __slots__ = ("_accused", "_awareness", "_diss", "_table", "alive_bytes", "left", "local")

    def __init__(self, table: MemberTable, diss: Dissemination, awareness: Awareness) -> None:
        self._table = table
        self._diss = diss
        self._awareness = awareness
        self.local: Member = table.local
        self.left = False
        self._accused = False
        self.alive_bytes = b""
        """Our ALIVE, encoded once per incarnation (joins, acks, refutations)."""
        self.encode_alive()

    @property
    def name(self) -> str:
        return self.local.name

    def is_alive(self) -> bool:
        return not self.left and not self._accused

    def encode_alive(self) -> None:
        local = self.local
        self.alive_bytes = encode_message(
            Alive(local.name, local.incarnation, local.address, local.metadata)
        )

    def on_probe_answered(self) -> None:
        """A probe of ours was answered: out of safe mode once our refutation is out."""
        if self._accused and self._diss.tracked_out:
            self._accused = False

    def about_us(self, msg: Alive | Suspect | Dead | Left, now: int) -> None:
        """An update naming us: refute what is newer than, or differs from, our record."""
        if self.left:
            return
        local = self.local
        if isinstance(msg, Alive):
            if msg.incarnation > local.incarnation or (
                msg.incarnation == local.incarnation
                and (msg.address != local.address or msg.metadata != local.metadata)
            ):
                self.refute(msg.incarnation, now)
        elif msg.incarnation >= local.incarnation:
            if not isinstance(msg, Left):  # a LEFT from a previous life of ours is no accusation
                self._accused = True
                self._diss.tracked_out = False
            self.refute(msg.incarnation, now)

    def refute(self, incarnation: int, now: int) -> None:
        """Only we raise our incarnation: above the accusation, and tell everyone."""
        nxt = refutation(incarnation, self.local.incarnation)
        if nxt is None:
            return  # never past the maximum (admission keeps us far from it)
        self.local.incarnation = nxt
        self.encode_alive()
        self._awareness.apply_delta(1)
        self._diss.queue_payload(self.local.name, self.alive_bytes, now)
        if self._accused and not self._diss.tracked_out:
            self._diss.track(self.alive_bytes)

    def leave(self, now: int) -> None:
        """LEFT at incarnation + 1, gossiped at once."""
        self.left = True
        local = self.local
        local.incarnation = refutation(local.incarnation, local.incarnation) or local.incarnation
        self._table.set_status(local, MemberStatus.LEFT, now)
        self._diss.queue_update(local.name, Left(local.name, local.incarnation), now)
        self._diss.gossip_now(now)
