"""The SWIM + Lifeguard membership protocol as a sans-IO state machine.

``Swim`` is the facade the driver, the in-memory network and the simulator run. It
takes bytes and the time and returns what to send and what changed; it never
sleeps, never touches a socket and never calls ``time`` or ``random`` itself
(``Clock`` and ``random.Random`` are injected), so all of them run exactly this
code. It admits what arrives (frame, decode, the incarnation ceiling, the replay
window) and routes it to the part of the core that owns the concern:

- ``table.MemberTable``: the member records and their indexes;
- ``probing.Prober``: failure detection (ping / ack / ping-req / nack), joining;
- ``dissemination.Dissemination``: framing, piggybacked and periodic gossip;
- ``updates.Updates``: the merge rule (``state.judge``), suspicion, jitter suppression;
- ``refutation.SelfRecord``: our own record, refutation and the safe mode.

Driving contract (single-threaded; no method blocks):

- ``handle_packet(data, src)`` for every datagram received; never raises.
- ``tick()`` whenever ``clock.monotonic_ms() >= next_deadline_ms()``; calling it
  early is harmless.
- after either, send ``take_outbound()`` (each datagram <= ``max_packet_bytes``;
  the caller owns the returned bytes) and deliver ``take_events()``.
- every ``antientropy.pushpull_interval_ms(push_pull_interval_ms, n)`` exchange
  ``encode_state()`` / ``merge_state()`` with ``pushpull_target()`` over a
  stream, and once with a seed right after ``join()``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from relaymesh.clock import Clock
from relaymesh.exceptions import ConfigError, ProtocolError
from relaymesh.membership import timers as timer
from relaymesh.membership.antientropy import snapshot_updates
from relaymesh.membership.awareness import Awareness
from relaymesh.membership.config import DROP_REASONS, MemberChanged, SwimConfig, SwimStats
from relaymesh.membership.dissemination import Dissemination
from relaymesh.membership.incarnation import admissible
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.probing import Prober
from relaymesh.membership.refutation import SelfRecord
from relaymesh.membership.state import Address, Member
from relaymesh.membership.table import WANT_ALIVE, WANT_DEAD, MemberTable
from relaymesh.membership.timers import Timers
from relaymesh.membership.updates import Updates
from relaymesh.membership.wire import (
    MAX_NAME_LEN,
    Ack,
    Alive,
    Dead,
    Left,
    Message,
    MessageType,
    Nack,
    Ping,
    PingReq,
    Suspect,
    decode_packet,
    decode_state,
    encode_state,
    valid_name,
)
from relaymesh.model import MemberStatus

__all__ = [
    "DROP_REASONS",
    "Address",
    "MemberChanged",
    "Swim",
    "SwimConfig",
    "SwimStats",
]

_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT

_TAG_ALIVE = int(MessageType.ALIVE)
_TAG_SUSPECT = int(MessageType.SUSPECT)
_TAG_DEAD = int(MessageType.DEAD)
_TAG_LEFT = int(MessageType.LEFT)

_DEAD_PUSHPULL_ODDS = 4
_NEWS_FREE = (_ALIVE, _DEAD, _LEFT)
"""Snapshot entries equal to what we hold in these statuses teach us nothing (see
``merge_state``); a SUSPECT one confirms or restarts a suspicion."""


class Swim:
    """One member's view of the cluster, and the protocol that maintains it."""

    def __init__(
        self,
        name: str,
        address: Address,
        config: SwimConfig,
        clock: Clock,
        rng: random.Random,
        *,
        keyring: Keyring | None = None,
        incarnation: int = 0,
        metadata: dict[str, str] | None = None,
    ) -> None:
        if not valid_name(name):
            raise ConfigError(f"node name {name!r} must be 1-{MAX_NAME_LEN} printable characters")
        self._name = name
        self._address = address
        self._config = config
        self._clock = clock
        self._rng = rng
        self._keyring = keyring
        self.stats = SwimStats()

        now = clock.monotonic_ms()
        local = Member(name, address, _ALIVE, incarnation, dict(metadata or {}), clock.wall_ms())
        self._table = MemberTable(
            local,
            clock,
            rng,
            max_members=config.max_members,
            gossip_to_the_dead_ms=config.gossip_to_the_dead_ms,
        )
        self._timers = Timers()
        self._awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        self._diss = Dissemination(
            config=config,
            clock=clock,
            table=self._table,
            timers=self._timers,
            stats=self.stats,
            keyring=keyring,
        )
        self._me = SelfRecord(self._table, self._diss, self._awareness)
        self._updates = Updates(
            config=config,
            clock=clock,
            table=self._table,
            diss=self._diss,
            me=self._me,
            timers=self._timers,
            stats=self.stats,
        )
        self._prober = Prober(
            config=config,
            clock=clock,
            rng=rng,
            table=self._table,
            diss=self._diss,
            me=self._me,
            updates=self._updates,
            timers=self._timers,
            awareness=self._awareness,
            stats=self.stats,
        )
        self._table.on_up = self._prober.add_to_probe_order

        if len(self._me.alive_bytes) > config.max_packet_bytes - self._diss.overhead_bytes - 64:
            raise ConfigError("node metadata is too large to fit in a gossip packet")
        self._table.emit(local, None)
        self._prober.start(now)

    # --- public: identity and view --------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def address(self) -> Address:
        return self._address

    @property
    def config(self) -> SwimConfig:
        return self._config

    @property
    def local(self) -> Member:
        """A copy of our own record (incarnation, status, metadata)."""
        return self._table.local.copy()

    def members(self) -> list[Member]:
        """Copies of every member we know, ourselves included, in any status."""
        return [m.copy() for m in self._table.members.values()]

    def member(self, name: str) -> Member | None:
        m = self._table.members.get(name)
        return None if m is None else m.copy()

    def num_alive(self) -> int:
        """Members ALIVE or SUSPECT, ourselves included (the cluster-size estimate)."""
        return self._table.live_count

    def local_is_alive(self) -> bool:
        """False after leave(), and from an accusation until our refutation went out
        and a probe of ours was answered again (the worker's safe mode)."""
        return self._me.is_alive()

    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy, up to ``awareness_max_multiplier - 1``."""
        return self._awareness.score

    def take_rtt_samples(self) -> list[float]:
        samples = self.stats.probe_rtt_ms
        self.stats.probe_rtt_ms = []
        return samples

    def take_outbound(self) -> list[tuple[Address, bytes]]:
        """Datagrams to send, oldest first; the caller owns them."""
        return self._diss.take_outbound()

    def take_events(self) -> list[MemberChanged]:
        return self._table.take_events()

    def next_deadline_ms(self) -> int:
        """When ``tick()`` must run next (absolute, on ``clock.monotonic_ms()``)."""
        next_ms = self._timers.next_ms()
        if next_ms is not None:
            return next_ms
        return self._clock.monotonic_ms() + self._config.probe_interval_ms

    # --- public: lifecycle ----------------------------------------------------

    def join(self, seeds: Iterable[Address]) -> None:
        """Announce ourselves to the seeds (UDP): they add us and answer with themselves.

        The seeds are remembered and re-announced to every probe interval while we
        know no live peer, so a node started before its seeds still gets in. Full
        state comes by push/pull (the driver should do one with a seed at once).
        """
        self._prober.add_seeds([(seed[0], int(seed[1])) for seed in seeds])
        self._prober.announce()
        # Gossip our own ALIVE too, so members that hold an older record of us (we
        # restarted, or were declared dead) hear the news from us, not only the seeds.
        self._diss.queue_payload(self._name, self._me.alive_bytes, self._clock.monotonic_ms())

    def preload(self, members: Iterable[Member]) -> None:
        """Insert members as known, without gossip or events: a node restarted with a
        view it had persisted. For the simulator and tests; call before traffic.

        Each record is copied (status, incarnation, address, metadata) as if learned
        just now, so a DEAD one is still gossiped to for ``gossip_to_the_dead_ms``.
        Our own name and members already known are skipped: what we hold is newer
        than a saved view. A SUSPECT record gets a suspicion of our own, so it ends in
        DEAD or a refutation like any other. ``max_members`` and the incarnation
        ceiling still apply (counted drops, as for any update).
        """
        now = self._clock.monotonic_ms()
        wall_ms = self._clock.wall_ms()
        table = self._table
        suspects: list[str] = []
        for m in members:
            name = m.name
            if name in table.members:
                continue
            if table.full() and not table.evict_down(now, self._updates.pending_alive):
                self.stats.dropped["member_limit"] += 1
                break
            if not admissible(m.incarnation, wall_ms):
                self.stats.dropped["incarnation"] += 1
                continue
            record = Member(name, m.address, m.status, m.incarnation, dict(m.metadata), wall_ms)
            table.add(record, now, emit=False)
            if m.status is _SUSPECT:
                suspects.append(name)
        # After the loop: the suspicion timeout scales with the whole view's size.
        for name in suspects:
            self._updates.start_suspicion(name, self._name, now)

    def leave(self) -> None:
        """Broadcast LEFT at incarnation + 1 and stop probing; gossip goes on so it spreads."""
        if self._me.left:
            return
        self._prober.stop()
        self._me.leave(self._clock.monotonic_ms())

    # --- public: input --------------------------------------------------------

    def handle_packet(self, data: bytes, src: Address) -> None:
        """Process one datagram. Bad input is dropped and counted, never raised."""
        stats = self.stats
        stats.packets_received += 1
        stats.bytes_received += len(data)
        if len(data) > self._config.max_packet_bytes:
            stats.dropped["too_large"] += 1
            return
        wall_ms = self._clock.wall_ms()
        try:
            body = self._diss.open(data, wall_ms)
            messages = decode_packet(body, self._diss.dedup.keys, self._drop)
        except ProtocolError as exc:
            self._drop(exc.reason)
            return
        now = self._clock.monotonic_ms()
        # Decided before the packet's own updates: an ALIVE in it must not make its
        # (spoofable) source a member we piggyback on or relay for.
        known_src = self._table.is_member_address(src)
        for msg in messages:
            self._dispatch(msg, src, known_src, now, wall_ms)

    def tick(self) -> None:
        """Run every timer due now."""
        now = self._clock.monotonic_ms()
        for deadline, kind, key in self._timers.due(now):
            if kind == timer.PROBE:
                self._prober.on_probe_timer(deadline, now)
            elif kind == timer.GOSSIP:
                self._diss.on_gossip_timer(deadline, now)
            elif kind == timer.SUSPECT:
                assert isinstance(key, str)
                self._updates.on_suspicion_timer(key, now)
            elif kind == timer.RECOVER:
                assert isinstance(key, str)
                self._updates.on_recover_timer(key, now)
            else:
                assert isinstance(key, int)
                self._prober.on_relay_timer(key)

    # --- public: anti-entropy -------------------------------------------------

    def pushpull_target(self) -> Address | None:
        """A random ALIVE peer to exchange full state with, or None.

        One time in ``_DEAD_PUSHPULL_ODDS`` a DEAD member is tried instead (as serf's
        reconnector does), so the two sides of a healed partition, which each think
        the other dead and so never probe or gossip to it, find each other again.
        """
        table = self._table
        if table.live_count < len(table) and self._rng.randrange(_DEAD_PUSHPULL_ODDS) == 0:
            dead = table.random_peers(1, None, want=WANT_DEAD)
            if dead:
                return dead[0].address
        peers = table.random_peers(1, None, want=WANT_ALIVE)
        if peers:
            return peers[0].address
        seeds = self._prober.seeds
        if seeds and table.live_count <= 1:
            return seeds[self._rng.randrange(len(seeds))]
        return None

    def encode_state(self, join: bool = False) -> bytes:
        """Our full view, framed and sealed like a packet (any size: for a stream)."""
        return self._diss.seal(encode_state(self._table.members.values(), join=join))

    def merge_state(self, data: bytes) -> int:
        """Apply a peer's ``encode_state()``; the number of changes it made.

        Raises ``ProtocolError(reason)`` (and counts the drop) for a bad frame or
        header; a bad entry is dropped alone and counted, like a bad message of a
        datagram, by the same checks.
        """
        # Entries equal to what we hold are left out where the merge rule would ignore
        # them anyway (_NEWS_FREE). Members with a held refutation are always compared
        # in full.
        pending = self._updates.pending_alive
        held = self._table.members
        if pending:
            held = {name: m for name, m in held.items() if name not in pending}
        wall_ms = self._clock.wall_ms()
        try:
            body = self._diss.open(data, wall_ms)
            _join, remote = decode_state(body, held, _NEWS_FREE, self._drop)
        except ProtocolError as exc:
            self._drop(exc.reason)
            raise
        now = self._clock.monotonic_ms()
        updates = self._updates
        applied = 0
        for update in snapshot_updates(remote, self._name):
            if not admissible(update.incarnation, wall_ms):
                self._drop("incarnation")
                continue
            if isinstance(update, Alive):
                changed = updates.apply_alive(update, now)
            elif isinstance(update, Suspect):
                changed = updates.apply_suspect(update, now)
            else:
                changed = updates.apply_left(update, now)
            if changed:
                applied += 1
        self.stats.anti_entropy_merges += 1
        return applied

    # --- dispatch -------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1

    def _dispatch(
        self, msg: Message, src: Address, known_src: bool, now: int, wall_ms: int
    ) -> None:
        # Update keys follow wire.update_key, which decode_packet skips when known.
        dedup = self._diss.dedup
        updates = self._updates
        if isinstance(msg, (Alive, Suspect, Dead, Left)) and not admissible(
            msg.incarnation, wall_ms
        ):
            # Not remembered as handled: once our clock has caught up (a peer's runs
            # a little ahead) a later copy is believed.
            self._drop("incarnation")
            return
        if isinstance(msg, Alive):
            if updates.apply_alive(msg, now) is not None:
                dedup.add((_TAG_ALIVE, msg.name, msg.incarnation))
        elif isinstance(msg, Ack):
            self._prober.on_ack(msg.seq, src, now)
        elif isinstance(msg, Ping):
            self._prober.on_ping(msg, src, known_src)
        elif isinstance(msg, Suspect):
            if updates.apply_suspect(msg, now) is not None:
                dedup.add((_TAG_SUSPECT, msg.name, msg.incarnation, msg.sender))
        elif isinstance(msg, Dead):
            if updates.apply_dead(msg, now) is not None:
                dedup.add((_TAG_DEAD, msg.name, msg.incarnation))
        elif isinstance(msg, Left):
            if updates.apply_left(msg, now) is not None:
                dedup.add((_TAG_LEFT, msg.name, msg.incarnation))
        elif isinstance(msg, PingReq):
            self._prober.on_ping_req(msg, src, known_src, now)
        elif isinstance(msg, Nack):
            self._prober.on_nack(msg.seq)
