"""Dissemination: what leaves this node, framed, and when gossip goes out.

Owns the outbound datagrams, their framing (label, sealing with our wall clock for
the receiver's replay window) and the opening of what arrives (label, keys, our own
replay window), the queue of updates to piggyback (``broadcast.BroadcastQueue``),
the dedup cache of updates already handled, and the gossip timer: news is sent to
``gossip_nodes`` random peers every ``gossip_interval_ms`` while any is queued, and
sooner for a death. Every datagram is at most ``max_packet_bytes``.
"""

from __future__ import annotations

from relaymesh.clock import Clock
from relaymesh.exceptions import ConfigError
from relaymesh.membership import timers as timer
from relaymesh.membership.broadcast import BroadcastQueue, DedupCache
from relaymesh.membership.config import SwimConfig, SwimStats
from relaymesh.membership.keyring import Keyring, ReplayGuard
from relaymesh.membership.state import Address
from relaymesh.membership.table import WANT_GOSSIP, MemberTable
from relaymesh.membership.timers import Timers
from relaymesh.membership.wire import (
    MAX_LABEL_BYTES,
    MAX_MESSAGES_PER_PACKET,
    Alive,
    Dead,
    Left,
    Suspect,
    encode_message,
    frame,
    frame_overhead,
    pack_compound,
    unframe,
)

__all__ = ["Dissemination"]

_HEADER_BYTES = 3
"""Room for the compound's msgpack array header."""


class Dissemination:
    __slots__ = (
        "_clock",
        "_config",
        "_gossip_due_ms",
        "_keyring",
        "_label",
        "_last_gossip_ms",
        "_outbound",
        "_replay",
        "_stats",
        "_table",
        "_timers",
        "_tracked",
        "broadcasts",
        "dedup",
        "overhead_bytes",
        "tracked_out",
    )

    def __init__(
        self,
        *,
        config: SwimConfig,
        clock: Clock,
        table: MemberTable,
        timers: Timers,
        stats: SwimStats,
        keyring: Keyring | None,
    ) -> None:
        label = config.label.encode("utf-8")
        if len(label) > MAX_LABEL_BYTES:
            raise ConfigError(f"gossip label is longer than {MAX_LABEL_BYTES} bytes")
        self._config = config
        self._clock = clock
        self._table = table
        self._timers = timers
        self._stats = stats
        self._keyring = keyring
        self._replay = ReplayGuard() if keyring is not None else None
        self._label = label
        self.overhead_bytes = frame_overhead(label, keyring) + _HEADER_BYTES
        self.broadcasts = BroadcastQueue(config.retransmit_mult)
        self.dedup = DedupCache(config.dedup_cache_size)
        self._outbound: list[tuple[Address, bytes]] = []
        self._gossip_due_ms: int | None = None
        self._last_gossip_ms = clock.monotonic_ms() - config.gossip_interval_ms
        self._tracked: bytes | None = None
        self.tracked_out = False
        """Whether the payload given to ``track`` has gone out in a datagram."""

    # --- framing ------------------------------------------------------------

    def seal(self, body: bytes) -> bytes:
        return frame(body, self._label, self._keyring, self._clock.wall_ms())

    def open(self, data: bytes, wall_ms: int) -> bytes:
        """The body of a datagram or snapshot; ``ProtocolError`` when refused."""
        return unframe(data, self._label, self._keyring, self._replay, wall_ms)

    def take_outbound(self) -> list[tuple[Address, bytes]]:
        out = self._outbound
        self._outbound = []
        return out

    # --- queueing -----------------------------------------------------------

    def queue_update(self, name: str, msg: Alive | Suspect | Dead | Left, now: int) -> None:
        self.queue_payload(name, encode_message(msg), now)

    def queue_payload(self, name: str, payload: bytes, now: int) -> None:
        if len(payload) > self._config.max_packet_bytes - self.overhead_bytes:
            return  # can never ride in a datagram; anti-entropy carries it
        self.broadcasts.queue(name, payload)
        if self._gossip_due_ms is None:
            due = max(now, self._last_gossip_ms + self._config.gossip_interval_ms)
            self._gossip_due_ms = due
            self._timers.push(due, timer.GOSSIP)

    def track(self, payload: bytes) -> None:
        """Watch for this very payload (our refutation) to go out; see ``tracked_out``."""
        self._tracked = payload
        self.tracked_out = False

    def gossip_now(self, now: int) -> None:
        self._gossip_due_ms = now
        self._timers.push(now, timer.GOSSIP)

    def gossip_soon(self, now: int) -> None:
        """Pass news of a death on without waiting out the gossip interval.

        Every hop of the epidemic otherwise waits up to ``gossip_interval_ms``, which is
        most of the first-to-last DEAD gap. Deaths are rare, and a burst of them still
        gossips at most four times per interval.
        """
        due = max(now, self._last_gossip_ms + self._config.gossip_interval_ms // 4)
        if self._gossip_due_ms is None or due < self._gossip_due_ms:
            self._gossip_due_ms = due
            self._timers.push(due, timer.GOSSIP)

    def on_gossip_timer(self, deadline: int, now: int) -> None:
        if deadline != self._gossip_due_ms:
            return  # superseded by an earlier or later one
        self._gossip_due_ms = None
        self._last_gossip_ms = now
        config = self._config
        broadcasts = self.broadcasts
        if len(broadcasts):
            for peer in self._table.random_peers(
                config.gossip_nodes, None, want=WANT_GOSSIP, now=now
            ):
                if not len(broadcasts) or not self.send(peer.address, [], gossip=True):
                    break
        if len(broadcasts):
            self._gossip_due_ms = now + config.gossip_interval_ms
            self._timers.push(self._gossip_due_ms, timer.GOSSIP)

    # --- sending ------------------------------------------------------------

    def send(
        self, dst: Address, parts: list[bytes], *, gossip: bool = False, piggyback: bool = True
    ) -> bool:
        """Frame ``parts`` plus as many queued updates as fit (none without
        ``piggyback``); False if nothing to send."""
        space = self._config.max_packet_bytes - self.overhead_bytes
        for part in parts:
            space -= len(part)
        extras = (
            self.broadcasts.get(space, self._table.live_count, MAX_MESSAGES_PER_PACKET - len(parts))
            if piggyback
            else []
        )
        if gossip and not extras:
            return False
        if extras:
            tracked = self._tracked
            if tracked is not None and any(p is tracked for p in extras):
                self._tracked = None
                self.tracked_out = True
            parts = parts + extras
        data = frame(pack_compound(parts), self._label, self._keyring, self._clock.wall_ms())
        self._outbound.append((dst, data))
        self._stats.packets_sent += 1
        self._stats.bytes_sent += len(data)
        return True
