"""The SWIM + Lifeguard membership protocol as a sans-IO state machine.

Owns probing (a coordinated randomized round-robin, see ``schedule.py``, or each node's
own shuffled round-robin; ping / ack / ping-req / nack), suspicion and
refutation, join, leave, piggybacked and periodic gossip, and the application of
updates by the merge rule with jitter suppression. It is given bytes and the time
and returns what to send and what changed; it never sleeps, never touches a
socket and never calls ``time`` or ``random`` itself (``Clock`` and
``random.Random`` are injected), so the asyncio driver, the unit tests and the
simulator all run exactly this code.

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

import heapq
import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from relaymesh.clock import Clock
from relaymesh.exceptions import ConfigError, ProtocolError
from relaymesh.membership.antientropy import snapshot_updates
from relaymesh.membership.awareness import Awareness
from relaymesh.membership.broadcast import BroadcastQueue, DedupCache
from relaymesh.membership.incarnation import admissible, refutation
from relaymesh.membership.keyring import Keyring, ReplayGuard
from relaymesh.membership.schedule import probe_round, probe_shift
from relaymesh.membership.state import Address, Member
from relaymesh.membership.suspicion import Suspicion, suspicion_timeout_ms
from relaymesh.membership.wire import (
    MAX_LABEL_BYTES,
    MAX_MESSAGES_PER_PACKET,
    MAX_NAME_LEN,
    MAX_SEQ,
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
    encode_message,
    encode_state,
    frame,
    frame_overhead,
    pack_compound,
    unframe,
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

DROP_REASONS = (
    "decode",
    "auth",
    "label",
    "too_large",
    "schema",
    "metadata",
    "incarnation",
    "member_limit",
    "stale",
    "replay",
    "unknown_sender",
)
"""Why the core dropped a packet, or one message of it (``packets_dropped_total``):
``incarnation`` above ``incarnation.incarnation_ceiling``; ``member_limit`` a new
member past ``max_members``; ``stale``/``replay`` a sealed packet outside the replay
window or seen before; ``unknown_sender`` a ping-req not from a member at its known
address, or for a target not at the address we know."""
RTT_SAMPLES_MAX = 1024
"""Probe RTT samples kept until the driver drains them."""

_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT
_UP = (_ALIVE, _SUSPECT)

# timer kinds
_T_PROBE = 0
_T_GOSSIP = 1
_T_SUSPECT = 2
_T_RECOVER = 3
_T_RELAY = 4

_TAG_ALIVE = int(MessageType.ALIVE)
_TAG_SUSPECT = int(MessageType.SUSPECT)
_TAG_DEAD = int(MessageType.DEAD)
_TAG_LEFT = int(MessageType.LEFT)

_HEADER_BYTES = 3

_DEAD_PUSHPULL_ODDS = 4

# which peers _random_peers may return
_WANT_ALIVE = 0
_WANT_GOSSIP = 1
"""ALIVE, SUSPECT, and DEAD for gossip_to_the_dead_ms (so it can refute)."""
_WANT_DEAD = 2
"""Room for the compound's msgpack array header."""


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """A member appeared or changed status (or address/metadata while ALIVE).

    ``at_ms`` is wall-clock time; ``previous`` is None the first time a member is seen.
    """

    name: str
    address: Address
    status: MemberStatus
    previous: MemberStatus | None
    incarnation: int
    metadata: dict[str, str]
    at_ms: int


@dataclass(slots=True)
class SwimConfig:
    """Protocol timings and limits; defaults are memberlist's LAN profile."""

    probe_interval_ms: int = 1000
    probe_timeout_ms: int = 500
    indirect_checks: int = 3
    gossip_interval_ms: int = 200
    gossip_nodes: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    push_pull_interval_ms: int = 30_000
    suspect_recover_min_ms: int = 0
    dead_recover_min_ms: int = 1000
    awareness_max_multiplier: int = 8
    lifeguard: bool = True
    dedup_cache_size: int = 4096
    max_packet_bytes: int = 1400
    label: str = ""
    gossip_to_the_dead_ms: int = 30_000
    """DEAD members still get gossip this long, so a wrongly declared one can refute."""
    max_members: int = 16_384
    """Members (any status) held at most; a new one past it is dropped and counted
    (``member_limit``): a peer cannot grow our table without bound. With
    ``wire.MAX_METADATA_BYTES`` a full table is a few tens of MB at most."""
    max_pending_relays: int = 1024
    """Ping-reqs we relay at once; more are ignored."""
    probe_schedule: Literal["coordinated", "random"] = "coordinated"
    """"coordinated": every member probed by one peer per round (``schedule.py``);
    "random": each node walks its own shuffled list (classic SWIM, memberlist)."""


@dataclass(slots=True)
class SwimStats:
    """Counters the driver copies into metrics. Monotonic except ``probe_rtt_ms``."""

    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    recoveries_suppressed: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    anti_entropy_merges: int = 0
    probe_rtt_ms: list[float] = field(default_factory=list)
    """Direct-probe round trips, newest last, at most ``RTT_SAMPLES_MAX``."""


class _Probe:
    __slots__ = (
        "address",
        "end_at_ms",
        "expected_nacks",
        "extended",
        "indirect_sent",
        "nacks",
        "seq",
        "started_ms",
        "target",
        "timeout_at_ms",
    )

    def __init__(
        self, target: Member, seq: int, started_ms: int, timeout_at_ms: int, end_at_ms: int
    ) -> None:
        self.target = target.name
        self.address = target.address
        self.seq = seq
        self.started_ms = started_ms
        self.timeout_at_ms = timeout_at_ms
        self.end_at_ms = end_at_ms
        self.indirect_sent = False
        self.extended = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """A ping we send on behalf of a ping-req."""

    __slots__ = ("nack", "requester", "seq")

    def __init__(self, requester: Address, seq: int, nack: bool) -> None:
        self.requester = requester
        self.seq = seq
        self.nack = nack


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
        label = config.label.encode("utf-8")
        if len(label) > MAX_LABEL_BYTES:
            raise ConfigError(f"gossip label is longer than {MAX_LABEL_BYTES} bytes")
        self._name = name
        self._address = address
        self._config = config
        self._clock = clock
        self._rng = rng
        self._keyring = keyring
        self._replay = ReplayGuard() if keyring is not None else None
        self._label = label
        self._overhead_bytes = frame_overhead(label, keyring) + _HEADER_BYTES
        self.stats = SwimStats()

        now = clock.monotonic_ms()
        self._local = Member(
            name, address, _ALIVE, incarnation, dict(metadata or {}), clock.wall_ms()
        )
        self._members: dict[str, Member] = {name: self._local}
        self._addresses: Counter[Address] = Counter({address: 1})
        """How many members we hold at each address: who is a known sender."""
        self._changed_mono_ms: dict[str, int] = {name: now}
        self._peer_names: list[str] = []
        self._live_count = 1
        self._suspicions: dict[str, Suspicion] = {}
        self._pending_alive: dict[str, Alive] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._ring: list[str] = [name]
        """Sorted names of the members held ALIVE or SUSPECT, self included (schedule)."""
        self._ring_stale = False
        self._awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        self._broadcasts = BroadcastQueue(config.retransmit_mult)
        self._dedup = DedupCache(config.dedup_cache_size)
        self._seq = rng.randrange(MAX_SEQ)
        self._probe: _Probe | None = None
        self._probe_due_ms = -1
        self._relays: dict[int, _Relay] = {}
        self._gossip_due_ms: int | None = None
        self._last_gossip_ms = now - config.gossip_interval_ms
        self._timers: list[tuple[int, int, int, object]] = []
        self._timer_seq = 0
        self._outbound: list[tuple[Address, bytes]] = []
        self._events: list[MemberChanged] = []
        self._seeds: list[Address] = []
        self._left = False
        self._accused = False
        self._refutation_sent = False

        self._local_alive_bytes = b""
        self._encode_local_alive()
        if len(self._local_alive_bytes) > config.max_packet_bytes - self._overhead_bytes - 64:
            raise ConfigError("node metadata is too large to fit in a gossip packet")
        self._emit(self._local, None)
        # Spread first probes over one interval so a cluster started at once does not pulse.
        self._schedule_probe(now + rng.randrange(max(1, config.probe_interval_ms)))

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
        return self._local.copy()

    def members(self) -> list[Member]:
        """Copies of every member we know, ourselves included, in any status."""
        return [m.copy() for m in self._members.values()]

    def member(self, name: str) -> Member | None:
        m = self._members.get(name)
        return None if m is None else m.copy()

    def num_alive(self) -> int:
        """Members ALIVE or SUSPECT, ourselves included (the cluster-size estimate)."""
        return self._live_count

    def local_is_alive(self) -> bool:
        """False after leave(), and from an accusation until our refutation went out
        and a probe of ours was answered again (the worker's safe mode)."""
        return not self._left and not self._accused

    def health_score(self) -> int:
        """Lifeguard local health: 0 is healthy, up to ``awareness_max_multiplier - 1``."""
        return self._awareness.score

    def take_rtt_samples(self) -> list[float]:
        samples = self.stats.probe_rtt_ms
        self.stats.probe_rtt_ms = []
        return samples

    def take_outbound(self) -> list[tuple[Address, bytes]]:
        """Datagrams to send, oldest first; the caller owns them."""
        out = self._outbound
        self._outbound = []
        return out

    def take_events(self) -> list[MemberChanged]:
        events = self._events
        self._events = []
        return events

    def next_deadline_ms(self) -> int:
        """When ``tick()`` must run next (absolute, on ``clock.monotonic_ms()``)."""
        if self._timers:
            return self._timers[0][0]
        return self._clock.monotonic_ms() + self._config.probe_interval_ms

    # --- public: lifecycle ----------------------------------------------------

    def join(self, seeds: Iterable[Address]) -> None:
        """Announce ourselves to the seeds (UDP): they add us and answer with themselves.

        The seeds are remembered and re-announced to every probe interval while we
        know no live peer, so a node started before its seeds still gets in. Full
        state comes by push/pull (the driver should do one with a seed at once).
        """
        for seed in seeds:
            addr = (seed[0], int(seed[1]))
            if addr != self._address and addr not in self._seeds:
                self._seeds.append(addr)
        self._announce()
        # Gossip our own ALIVE too, so members that hold an older record of us (we
        # restarted, or were declared dead) hear the news from us, not only the seeds.
        self._queue_payload(self._name, self._local_alive_bytes, self._clock.monotonic_ms())

    def preload(self, members: Iterable[Member]) -> None:
        """Insert members as known, without gossip or events: a node restarted with a
        view it had persisted. For the simulator and tests; call before traffic.

        Each record is copied (status, incarnation, address, metadata) as if learned
        just now, so a DEAD one is still gossiped to for ``gossip_to_the_dead_ms``.
        Our own name and members already known are skipped: what we hold is newer
        than a saved view. A SUSPECT record gets a suspicion of our own, so it ends in
        DEAD or a refutation like any other. ``max_members`` still bounds the table.
        """
        now = self._clock.monotonic_ms()
        wall_ms = self._clock.wall_ms()
        known = self._members
        max_members = self._config.max_members
        suspects: list[str] = []
        for m in members:
            name = m.name
            if name in known:
                continue
            if len(known) >= max_members:
                self.stats.dropped["member_limit"] += 1
                break
            if not admissible(m.incarnation, wall_ms):
                self.stats.dropped["incarnation"] += 1
                continue
            status = m.status
            known[name] = Member(name, m.address, status, m.incarnation, dict(m.metadata), wall_ms)
            self._addresses[m.address] += 1
            self._changed_mono_ms[name] = now
            self._peer_names.append(name)
            if status in _UP:
                self._live_count += 1
                self._ring_stale = True
                self._add_to_probe_order(name)
                if status is _SUSPECT:
                    suspects.append(name)
        # After the loop: the suspicion timeout scales with the whole view's size.
        for name in suspects:
            self._start_suspicion(name, self._name, now)

    def leave(self) -> None:
        """Broadcast LEFT at incarnation + 1 and stop probing; gossip goes on so it spreads."""
        if self._left:
            return
        now = self._clock.monotonic_ms()
        self._left = True
        self._probe = None
        self._local.incarnation = refutation(self._local.incarnation, 0) or self._local.incarnation
        self._set_status(self._local, _LEFT, now)
        self._queue_update(self._name, Left(self._name, self._local.incarnation), now)
        self._broadcasts_gossip_now(now)

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
            body = unframe(data, self._label, self._keyring, self._replay, wall_ms)
            messages = decode_packet(body, self._dedup.keys, self._drop)
        except ProtocolError as exc:
            self._drop(exc.reason)
            return
        now = self._clock.monotonic_ms()
        # Decided before the packet's own updates: an ALIVE in it must not make its
        # (spoofable) source a member we piggyback on or relay for.
        known_src = src in self._addresses
        for msg in messages:
            self._dispatch(msg, src, known_src, now, wall_ms)

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1

    def tick(self) -> None:
        """Run every timer due now."""
        now = self._clock.monotonic_ms()
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, kind, key = heapq.heappop(timers)
            if kind == _T_PROBE:
                if deadline == self._probe_due_ms:
                    self._on_probe_timer(deadline, now)
            elif kind == _T_GOSSIP:
                if deadline == self._gossip_due_ms:
                    self._on_gossip_timer(now)
            elif kind == _T_SUSPECT:
                assert isinstance(key, str)
                self._on_suspicion_timer(key, now)
            elif kind == _T_RECOVER:
                assert isinstance(key, str)
                self._on_recover_timer(key, now)
            else:
                assert isinstance(key, int)
                self._on_relay_timer(key)

    # --- public: anti-entropy -------------------------------------------------

    def pushpull_target(self) -> Address | None:
        """A random ALIVE peer to exchange full state with, or None.

        One time in ``_DEAD_PUSHPULL_ODDS`` a DEAD member is tried instead (as serf's
        reconnector does), so the two sides of a healed partition, which each think
        the other dead and so never probe or gossip to it, find each other again.
        """
        if self._live_count < len(self._members) and self._rng.randrange(_DEAD_PUSHPULL_ODDS) == 0:
            dead = self._random_peers(1, None, want=_WANT_DEAD)
            if dead:
                return dead[0].address
        peers = self._random_peers(1, None, want=_WANT_ALIVE)
        if peers:
            return peers[0].address
        if self._seeds and self._live_count <= 1:
            return self._seeds[self._rng.randrange(len(self._seeds))]
        return None

    def encode_state(self, join: bool = False) -> bytes:
        """Our full view, framed and sealed like a packet (any size: for a stream)."""
        body = encode_state(self._members.values(), join=join)
        return frame(body, self._label, self._keyring, self._clock.wall_ms())

    def merge_state(self, data: bytes) -> int:
        """Apply a peer's ``encode_state()``; the number of changes it made.

        Raises ``ProtocolError(reason)`` (and counts the drop) for bad data.
        """
        # Entries equal to what we hold are left out where the _apply_* rules below
        # would ignore them anyway: ALIVE (not above the incarnation we hold), DEAD
        # (never re-suspected), LEFT. Not SUSPECT: it confirms or restarts a suspicion.
        # Members with a held refutation are always compared in full.
        pending = self._pending_alive
        held = self._members
        if pending:
            held = {name: m for name, m in held.items() if name not in pending}
        wall_ms = self._clock.wall_ms()
        try:
            body = unframe(data, self._label, self._keyring, self._replay, wall_ms)
            _join, remote = decode_state(body, held, (_ALIVE, _DEAD, _LEFT), self._drop)
        except ProtocolError as exc:
            self._drop(exc.reason)
            raise
        now = self._clock.monotonic_ms()
        applied = 0
        for update in snapshot_updates(remote, self._name):
            if not admissible(update.incarnation, wall_ms):
                self._drop("incarnation")
                continue
            if isinstance(update, Alive):
                changed = self._apply_alive(update, now)
            elif isinstance(update, Suspect):
                changed = self._apply_suspect(update, now)
            else:
                changed = self._apply_left(update, now)
            if changed:
                applied += 1
        self.stats.anti_entropy_merges += 1
        return applied

    # --- dispatch -------------------------------------------------------------

    def _dispatch(
        self, msg: Message, src: Address, known_src: bool, now: int, wall_ms: int
    ) -> None:
        # Update keys follow wire.update_key, which decode_packet skips when known.
        dedup = self._dedup
        if isinstance(msg, (Alive, Suspect, Dead, Left)) and not admissible(
            msg.incarnation, wall_ms
        ):
            # Not remembered as handled: once our clock has caught up (a peer's runs
            # a little ahead) a later copy is believed.
            self._drop("incarnation")
            return
        if isinstance(msg, Alive):
            if self._apply_alive(msg, now) is not None:
                dedup.add((_TAG_ALIVE, msg.name, msg.incarnation))
        elif isinstance(msg, Ack):
            self._on_ack(msg.seq, src, now)
        elif isinstance(msg, Ping):
            self._on_ping(msg, src, known_src)
        elif isinstance(msg, Suspect):
            if self._apply_suspect(msg, now) is not None:
                dedup.add((_TAG_SUSPECT, msg.name, msg.incarnation, msg.sender))
        elif isinstance(msg, Dead):
            if self._apply_dead(msg, now) is not None:
                dedup.add((_TAG_DEAD, msg.name, msg.incarnation))
        elif isinstance(msg, Left):
            if self._apply_left(msg, now) is not None:
                dedup.add((_TAG_LEFT, msg.name, msg.incarnation))
        elif isinstance(msg, PingReq):
            self._on_ping_req(msg, src, known_src, now)
        else:
            probe = self._probe
            if probe is not None and probe.seq == msg.seq and probe.nacks < probe.expected_nacks:
                probe.nacks += 1

    # --- probing --------------------------------------------------------------

    def _on_ping(self, ping: Ping, src: Address, known_src: bool) -> None:
        if ping.target and ping.target != self._name:
            return  # meant for a previous owner of this address
        parts = [encode_message(Ack(ping.seq))]
        if not ping.target:
            parts.append(self._local_alive_bytes)  # a join ping: introduce ourselves
        # To a source we do not know (spoofable), a reply no bigger than the request:
        # no piggybacked updates, so we cannot be used to amplify.
        self._send(src, parts, piggyback=known_src)

    def _on_ack(self, seq: int, src: Address, now: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if src == probe.address and now <= probe.timeout_at_ms:
                self._record_rtt(float(now - probe.started_ms))
            self._awareness.apply_delta(-1)
            self._probe = None
            if self._accused and self._refutation_sent:
                self._accused = False
            self._schedule_probe(max(now, probe.end_at_ms))
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(relay.requester, [encode_message(Ack(relay.seq))])

    def _on_ping_req(self, req: PingReq, src: Address, known_src: bool, now: int) -> None:
        target = self._members.get(req.target)
        if not known_src or target is None or target.address != req.address:
            # Relaying for anyone would make us ping any address named in a packet.
            self._drop("unknown_sender")
            return
        if req.target == self._name:
            self._send(src, [encode_message(Ack(req.seq))], piggyback=False)
            return
        if len(self._relays) >= self._config.max_pending_relays:
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(src, req.seq, req.nack)
        self._send(req.address, [encode_message(Ping(seq, req.target))])
        # Nack at 80% of the probe timeout so it reaches the requester before its deadline.
        self._push_timer(now + self._config.probe_timeout_ms * 4 // 5, _T_RELAY, seq)

    def _on_relay_timer(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._send(relay.requester, [encode_message(Nack(relay.seq))])

    def _on_probe_timer(self, deadline: int, now: int) -> None:
        if self._left:
            return
        probe = self._probe
        if probe is None:
            self._start_probe(now)
            return
        # A timer that fires much too late means our own process stalled: give the
        # target the full window again instead of accusing it for our slowness.
        if now - deadline > self._config.probe_timeout_ms and not probe.extended:
            probe.extended = True
            self._awareness.apply_delta(1)
            window_ms = max(probe.end_at_ms - probe.timeout_at_ms, self._config.probe_timeout_ms)
            probe.end_at_ms = max(probe.end_at_ms, now + window_ms)
        if not probe.indirect_sent:
            self._send_indirect(probe)
        if now < probe.end_at_ms:
            self._schedule_probe(probe.end_at_ms)
            return
        self._probe = None
        self._probe_failed(probe, now)
        self._start_probe(now)

    def _start_probe(self, now: int) -> None:
        target = self._next_probe_target()
        config = self._config
        if target is None:
            if self._seeds:
                self._announce()
            self._schedule_probe(now + config.probe_interval_ms)
            return
        seq = self._next_seq()
        timeout_ms = self._awareness.scale_ms(config.probe_timeout_ms)
        interval_ms = self._awareness.scale_ms(config.probe_interval_ms)
        probe = _Probe(target, seq, now, now + timeout_ms, now + interval_ms)
        parts = [encode_message(Ping(seq, target.name))]
        if target.status is _SUSPECT:
            # Tell it it is suspected so it can refute at once.
            parts.append(encode_message(Suspect(target.name, target.incarnation, self._name)))
        self._probe = probe
        self._send(target.address, parts)
        if probe.timeout_at_ms < probe.end_at_ms:
            self._schedule_probe(probe.timeout_at_ms)
        else:
            probe.indirect_sent = True
            self._schedule_probe(probe.end_at_ms)

    def _send_indirect(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        peers = self._random_peers(self._config.indirect_checks, probe.target, want=_WANT_ALIVE)
        nack = self._config.lifeguard
        payload = encode_message(PingReq(probe.seq, probe.target, probe.address, nack))
        for peer in peers:
            self._send(peer.address, [payload])
        probe.expected_nacks = len(peers) if nack else 0
        # A second direct ping, in the role of memberlist's TCP fallback: with p loss per
        # datagram a lone lost ping or ack no longer leads to a suspicion with odds ~2p.
        self._send(probe.address, [encode_message(Ping(probe.seq, probe.target))])

    def _probe_failed(self, probe: _Probe, now: int) -> None:
        # Missing nacks mean our own network is the likelier culprit (Lifeguard).
        if probe.expected_nacks > 0:
            self._awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self._awareness.apply_delta(1)
        target = self._members.get(probe.target)
        if target is not None and target.status in _UP:
            self._apply_suspect(Suspect(target.name, target.incarnation, self._name), now)

    def _next_probe_target(self) -> Member | None:
        if self._config.probe_schedule == "coordinated":
            return self._scheduled_target()
        members = self._members
        for _ in range(len(self._probe_order) + 1):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = [n for n in self._peer_names if members[n].status in _UP]
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            member = members[self._probe_order[self._probe_index]]
            self._probe_index += 1
            if member.status in _UP:
                return member
        return None

    def _scheduled_target(self) -> Member | None:
        """This round's target under the coordinated schedule; None when alone."""
        ring = self._ring
        if self._ring_stale:
            members = self._members
            ring = sorted(n for n, m in members.items() if m.status in _UP)
            self._ring = ring
            self._ring_stale = False
        n = len(ring)
        me = bisect_left(ring, self._name)
        if n < 2:
            return None  # we are the ring's only member (probing stops once we leave)
        round_number = probe_round(self._clock.wall_ms(), self._config.probe_interval_ms)
        return self._members[ring[(me + probe_shift(round_number, n)) % n]]

    def _add_to_probe_order(self, name: str) -> None:
        order = self._probe_order
        if len(order) - self._probe_index > 2 * len(self._peer_names):
            return  # flapping members: the next round's reshuffle includes it anyway
        order.append(name)
        lo = min(self._probe_index, len(order) - 1)
        j = lo + int(self._rng.random() * (len(order) - lo))
        order[j], order[-1] = order[-1], order[j]

    def _schedule_probe(self, at_ms: int) -> None:
        self._probe_due_ms = at_ms
        self._push_timer(at_ms, _T_PROBE, None)

    def _record_rtt(self, rtt_ms: float) -> None:
        samples = self.stats.probe_rtt_ms
        samples.append(rtt_ms)
        if len(samples) > RTT_SAMPLES_MAX:
            del samples[: len(samples) - RTT_SAMPLES_MAX]

    def _announce(self) -> None:
        for seed in self._seeds:
            ping = encode_message(Ping(self._next_seq(), ""))
            self._send(seed, [self._local_alive_bytes, ping])

    # --- gossip ---------------------------------------------------------------

    def _queue_update(self, name: str, msg: Alive | Suspect | Dead | Left, now: int) -> None:
        self._queue_payload(name, encode_message(msg), now)

    def _queue_payload(self, name: str, payload: bytes, now: int) -> None:
        if len(payload) > self._config.max_packet_bytes - self._overhead_bytes:
            return  # can never ride in a datagram; anti-entropy carries it
        self._broadcasts.queue(name, payload)
        if self._gossip_due_ms is None:
            due = max(now, self._last_gossip_ms + self._config.gossip_interval_ms)
            self._gossip_due_ms = due
            self._push_timer(due, _T_GOSSIP, None)

    def _broadcasts_gossip_now(self, now: int) -> None:
        self._gossip_due_ms = now
        self._push_timer(now, _T_GOSSIP, None)

    def _gossip_soon(self, now: int) -> None:
        """Pass news of a death on without waiting out the gossip interval.

        Every hop of the epidemic otherwise waits up to ``gossip_interval_ms``, which is
        most of the first-to-last DEAD gap. Deaths are rare, and a burst of them still
        gossips at most four times per interval.
        """
        due = max(now, self._last_gossip_ms + self._config.gossip_interval_ms // 4)
        if self._gossip_due_ms is None or due < self._gossip_due_ms:
            self._gossip_due_ms = due
            self._push_timer(due, _T_GOSSIP, None)

    def _on_gossip_timer(self, now: int) -> None:
        self._gossip_due_ms = None
        self._last_gossip_ms = now
        config = self._config
        if len(self._broadcasts):
            for peer in self._random_peers(config.gossip_nodes, None, want=_WANT_GOSSIP, now=now):
                if not len(self._broadcasts) or not self._send(peer.address, [], gossip=True):
                    break
        if len(self._broadcasts):
            self._gossip_due_ms = now + config.gossip_interval_ms
            self._push_timer(self._gossip_due_ms, _T_GOSSIP, None)

    def _random_peers(
        self, k: int, exclude: str | None, *, want: int, now: int = 0
    ) -> list[Member]:
        """Up to ``k`` distinct random peers of the ``want`` kind (few tries, O(k))."""
        names = self._peer_names
        n = len(names)
        if n == 0 or k <= 0:
            return []
        members = self._members
        rand = self._rng.random
        dead_window_ms = self._config.gossip_to_the_dead_ms
        chosen: list[Member] = []
        picked: set[str] = set()
        for _ in range(3 * n if n < 64 else 3 * k + 64):
            name = names[int(rand() * n)]
            if name in picked or name == exclude:
                continue
            m = members[name]
            status = m.status
            if want == _WANT_DEAD:
                if status is not _DEAD:
                    continue
            elif status is _ALIVE:
                pass
            elif want == _WANT_ALIVE:
                continue
            elif status is _DEAD:
                if now - self._changed_mono_ms[name] > dead_window_ms:
                    continue
            elif status is not _SUSPECT:
                continue
            picked.add(name)
            chosen.append(m)
            if len(chosen) >= k:
                break
        return chosen

    def _send(
        self, dst: Address, parts: list[bytes], *, gossip: bool = False, piggyback: bool = True
    ) -> bool:
        """Frame ``parts`` plus as many queued updates as fit (none without
        ``piggyback``); False if nothing to send."""
        space = self._config.max_packet_bytes - self._overhead_bytes
        for part in parts:
            space -= len(part)
        extras = (
            self._broadcasts.get(space, self._live_count, MAX_MESSAGES_PER_PACKET - len(parts))
            if piggyback
            else []
        )
        if gossip and not extras:
            return False
        if extras:
            if self._accused and not self._refutation_sent:
                alive = self._local_alive_bytes
                self._refutation_sent = any(p is alive for p in extras)
            parts = parts + extras
        data = frame(pack_compound(parts), self._label, self._keyring, self._clock.wall_ms())
        self._outbound.append((dst, data))
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(data)
        return True

    # --- applying updates -----------------------------------------------------
    # Each returns None when it ignored an update about a member it does not know
    # (so the dedup cache does not remember it), else whether the view changed.

    def _apply_alive(self, a: Alive, now: int) -> bool | None:
        if a.name == self._name:
            local = self._local
            if not self._left and (
                a.incarnation > local.incarnation
                or (
                    a.incarnation == local.incarnation
                    and (a.address != local.address or a.metadata != local.metadata)
                )
            ):
                self._refute(a.incarnation, now)
            return False
        cur = self._members.get(a.name)
        if cur is None:
            if len(self._members) >= self._config.max_members:
                self._drop("member_limit")
                return None
            member = Member(
                a.name, a.address, _ALIVE, a.incarnation, dict(a.metadata), self._clock.wall_ms()
            )
            self._members[a.name] = member
            self._addresses[a.address] += 1
            self._changed_mono_ms[a.name] = now
            self._peer_names.append(a.name)
            self._live_count += 1
            self._ring_stale = True
            self._add_to_probe_order(a.name)
            self._emit(member, None)
            self._queue_update(a.name, a, now)
            return True
        pending = self._pending_alive.get(a.name)
        floor = pending.incarnation if pending is not None else cur.incarnation
        if a.incarnation <= floor:
            return False
        if cur.status is _ALIVE:
            changed = a.address != cur.address or a.metadata != cur.metadata
            cur.incarnation = a.incarnation
            if changed:
                self._move(cur, a.address)
                cur.metadata = dict(a.metadata)
                self._emit(cur, _ALIVE)
            self._queue_update(a.name, a, now)
            return True
        config = self._config
        dwell_ms = (
            config.suspect_recover_min_ms if cur.status is _SUSPECT else config.dead_recover_min_ms
        )
        ready_at_ms = self._changed_mono_ms[a.name] + dwell_ms
        if now < ready_at_ms:
            # Jitter suppression: hold the recovery until the dwell ends, but stop the
            # suspicion now so a refutation we hold can never turn into a false DEAD.
            if pending is None:  # one timer per dwell, however many refutations arrive
                self._push_timer(ready_at_ms, _T_RECOVER, a.name)
            self._pending_alive[a.name] = a
            self._suspicions.pop(a.name, None)
            self.stats.recoveries_suppressed += 1
            self._queue_update(a.name, a, now)
            return True
        self._recover(cur, a, now)
        self._queue_update(a.name, a, now)
        return True

    def _recover(self, cur: Member, a: Alive, now: int) -> None:
        self._pending_alive.pop(cur.name, None)
        self._suspicions.pop(cur.name, None)
        if cur.status not in _UP:
            self._add_to_probe_order(cur.name)
        cur.incarnation = a.incarnation
        self._move(cur, a.address)
        cur.metadata = dict(a.metadata)
        self._set_status(cur, _ALIVE, now)

    def _move(self, member: Member, address: Address) -> None:
        """Set a member's address, keeping the known-sender index right."""
        if member.address == address:
            return
        addresses = self._addresses
        addresses[member.address] -= 1
        if addresses[member.address] <= 0:
            del addresses[member.address]
        addresses[address] += 1
        member.address = address

    def _on_recover_timer(self, name: str, now: int) -> None:
        pending = self._pending_alive.get(name)
        if pending is None:
            return
        cur = self._members[name]
        if cur.status is _ALIVE:
            self._pending_alive.pop(name)
            return
        config = self._config
        dwell_ms = (
            config.suspect_recover_min_ms if cur.status is _SUSPECT else config.dead_recover_min_ms
        )
        if now >= self._changed_mono_ms[name] + dwell_ms:
            self._recover(cur, pending, now)

    def _apply_suspect(self, s: Suspect, now: int) -> bool | None:
        if s.name == self._name:
            if not self._left and s.incarnation >= self._local.incarnation:
                self._accuse()
                self._refute(s.incarnation, now)
            return False
        cur = self._members.get(s.name)
        if cur is None:
            return None
        if s.incarnation < cur.incarnation or cur.status is _DEAD or cur.status is _LEFT:
            return False  # DEAD/LEFT are not re-suspected; only an ALIVE revives them
        pending = self._pending_alive.get(s.name)
        if pending is not None:
            if s.incarnation < pending.incarnation:
                return False
            del self._pending_alive[s.name]  # the refutation we held is outdated itself
        suspicion = self._suspicions.get(s.name)
        if suspicion is not None and s.incarnation > cur.incarnation:
            # The member refuted the suspicion we hold (we missed its ALIVE) and is
            # suspected again: a new suspicion with its own full timeout. Counting it as
            # a confirmation of the old one would let the old timer, already far along,
            # declare the new incarnation DEAD at once, and everyone would accept that.
            cur.incarnation = s.incarnation
            self._start_suspicion(s.name, s.sender, now)
            self._queue_update(s.name, s, now)
            return True
        if suspicion is not None:
            if suspicion.confirm(s.sender, now):
                self._push_timer(suspicion.deadline_ms, _T_SUSPECT, s.name)
                self._queue_update(s.name, s, now)
                return True
            return False
        if cur.status is _ALIVE:
            cur.incarnation = s.incarnation
            self._set_status(cur, _SUSPECT, now)
        else:
            cur.incarnation = s.incarnation  # SUSPECT whose held refutation was outdated
        self._start_suspicion(s.name, s.sender, now)
        self._queue_update(s.name, s, now)
        return True

    def _start_suspicion(self, name: str, sender: str, now: int) -> None:
        config = self._config
        n = self._live_count
        k = config.suspicion_mult - 2 if config.lifeguard else 0
        if n - 2 < k:
            k = 0  # too few members to expect independent confirmations
        min_ms = suspicion_timeout_ms(config.suspicion_mult, n, config.probe_interval_ms)
        max_ms = config.suspicion_max_timeout_mult * min_ms if config.lifeguard else min_ms
        suspicion = Suspicion(sender, k, min_ms, max_ms, now)
        self._suspicions[name] = suspicion
        self._push_timer(suspicion.deadline_ms, _T_SUSPECT, name)

    def _on_suspicion_timer(self, name: str, now: int) -> None:
        suspicion = self._suspicions.get(name)
        if suspicion is None or now < suspicion.deadline_ms:
            return
        cur = self._members[name]
        if cur.status is _SUSPECT:
            self._apply_dead(Dead(name, cur.incarnation, self._name), now)
        else:
            del self._suspicions[name]

    def _apply_dead(self, d: Dead, now: int) -> bool | None:
        if d.name == self._name:
            if not self._left and d.incarnation >= self._local.incarnation:
                self._accuse()
                self._refute(d.incarnation, now)
            return False
        return self._apply_down(d.name, _DEAD, d.incarnation, d, now)

    def _apply_left(self, left: Left, now: int) -> bool | None:
        if left.name == self._name:
            if not self._left and left.incarnation >= self._local.incarnation:
                self._refute(left.incarnation, now)  # a LEFT from a previous life of ours
            return False
        return self._apply_down(left.name, _LEFT, left.incarnation, left, now)

    def _apply_down(
        self, name: str, status: MemberStatus, incarnation: int, msg: Dead | Left, now: int
    ) -> bool | None:
        cur = self._members.get(name)
        if cur is None:
            return None
        if incarnation < cur.incarnation or cur.status is _LEFT:
            return False
        if cur.status is _DEAD and status is _DEAD:
            return False
        pending = self._pending_alive.get(name)
        if pending is not None:
            if incarnation < pending.incarnation:
                return False  # a refutation we hold outranks it
            del self._pending_alive[name]
        self._suspicions.pop(name, None)
        cur.incarnation = incarnation
        self._set_status(cur, status, now)
        self._queue_update(name, msg, now)
        self._gossip_soon(now)
        return True

    # --- self -----------------------------------------------------------------

    def _accuse(self) -> None:
        self._accused = True
        self._refutation_sent = False

    def _refute(self, incarnation: int, now: int) -> None:
        """Only we raise our incarnation: above the accusation, and tell everyone."""
        nxt = refutation(incarnation, self._local.incarnation)
        if nxt is None:
            return  # never past the maximum (admission keeps us far from it)
        self._local.incarnation = nxt
        self._encode_local_alive()
        self._awareness.apply_delta(1)
        # The very bytes object, so _send can tell when the refutation went out.
        self._queue_payload(self._name, self._local_alive_bytes, now)

    def _encode_local_alive(self) -> None:
        local = self._local
        self._local_alive_bytes = encode_message(
            Alive(self._name, local.incarnation, local.address, local.metadata)
        )

    # --- bookkeeping ----------------------------------------------------------

    def _set_status(self, member: Member, status: MemberStatus, now: int) -> None:
        previous = member.status
        if previous is status:
            return
        was_up = previous in _UP
        is_up = status in _UP
        if was_up and not is_up:
            self._live_count -= 1
            self._ring_stale = True
        elif is_up and not was_up:
            self._live_count += 1
            self._ring_stale = True
        member.status = status
        member.status_changed_at_ms = self._clock.wall_ms()
        self._changed_mono_ms[member.name] = now
        self._emit(member, previous)

    def _emit(self, member: Member, previous: MemberStatus | None) -> None:
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

    def _push_timer(self, at_ms: int, kind: int, key: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at_ms, self._timer_seq, kind, key))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & MAX_SEQ
        return self._seq
