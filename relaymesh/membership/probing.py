"""Probing: who we ping each round, ping / ack / ping-req / nack, and joining seeds.

Owns failure detection (SWIM with Lifeguard): one probe at a time, a direct ping,
then at the probe timeout ``indirect_checks`` ping-reqs through random peers and a
second direct ping; a probe unanswered by the end of the interval makes the target
SUSPECT (``updates.Updates.apply_suspect``). Targets come from the coordinated
schedule (``schedule.py``) or each node's own shuffled round-robin. Lifeguard's
awareness stretches our timeouts when our own acks and nacks go missing. Also owns
the relays we run for others' ping-reqs, answered only for members at the
addresses we know, and the seeds we announce ourselves to while alone.
"""

from __future__ import annotations

import random
from bisect import bisect_left

from relaymesh.clock import Clock
from relaymesh.membership import timers as timer
from relaymesh.membership.awareness import Awareness
from relaymesh.membership.config import RTT_SAMPLES_MAX, SwimConfig, SwimStats
from relaymesh.membership.dissemination import Dissemination
from relaymesh.membership.refutation import SelfRecord
from relaymesh.membership.schedule import probe_round, probe_shift
from relaymesh.membership.state import Address, Member
from relaymesh.membership.table import UP, WANT_ALIVE, MemberTable
from relaymesh.membership.timers import Timers
from relaymesh.membership.updates import Updates
from relaymesh.membership.wire import MAX_SEQ, Ack, Nack, Ping, PingReq, Suspect, encode_message
from relaymesh.model import MemberStatus

__all__ = ["Prober"]

_SUSPECT = MemberStatus.SUSPECT


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


class Prober:
    __slots__ = (
        "_awareness",
        "_clock",
        "_config",
        "_diss",
        "_me",
        "_probe",
        "_probe_due_ms",
        "_probe_index",
        "_probe_order",
        "_relays",
        "_rng",
        "_seq",
        "_stats",
        "_table",
        "_timers",
        "_updates",
        "seeds",
    )

    def __init__(
        self,
        *,
        config: SwimConfig,
        clock: Clock,
        rng: random.Random,
        table: MemberTable,
        diss: Dissemination,
        me: SelfRecord,
        updates: Updates,
        timers: Timers,
        awareness: Awareness,
        stats: SwimStats,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._table = table
        self._diss = diss
        self._me = me
        self._updates = updates
        self._timers = timers
        self._awareness = awareness
        self._stats = stats
        self._probe: _Probe | None = None
        self._probe_due_ms = -1
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._relays: dict[int, _Relay] = {}
        self._seq = rng.randrange(MAX_SEQ)
        self.seeds: list[Address] = []

    def start(self, now: int) -> None:
        # Spread first probes over one interval so a cluster started at once does not pulse.
        self._schedule(now + self._rng.randrange(max(1, self._config.probe_interval_ms)))

    def stop(self) -> None:
        self._probe = None

    # --- answering ----------------------------------------------------------

    def on_ping(self, ping: Ping, src: Address, known_src: bool) -> None:
        if ping.target and ping.target != self._me.name:
            return  # meant for a previous owner of this address
        parts = [encode_message(Ack(ping.seq))]
        if not ping.target:
            parts.append(self._me.alive_bytes)  # a join ping: introduce ourselves
        # To a source we do not know (spoofable), a reply no bigger than the request:
        # no piggybacked updates, so we cannot be used to amplify.
        self._diss.send(src, parts, piggyback=known_src)

    def on_ack(self, seq: int, src: Address, now: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if src == probe.address and now <= probe.timeout_at_ms:
                self._record_rtt(float(now - probe.started_ms))
            self._awareness.apply_delta(-1)
            self._probe = None
            self._me.on_probe_answered()
            self._schedule(max(now, probe.end_at_ms))
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._diss.send(relay.requester, [encode_message(Ack(relay.seq))])

    def on_nack(self, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and probe.nacks < probe.expected_nacks:
            probe.nacks += 1

    def on_ping_req(self, req: PingReq, src: Address, known_src: bool, now: int) -> None:
        target = self._table.members.get(req.target)
        if not known_src or target is None or target.address != req.address:
            # Relaying for anyone would make us ping any address named in a packet.
            self._stats.dropped["unknown_sender"] += 1
            return
        if req.target == self._me.name:
            self._diss.send(src, [encode_message(Ack(req.seq))], piggyback=False)
            return
        if len(self._relays) >= self._config.max_pending_relays:
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(src, req.seq, req.nack)
        self._diss.send(req.address, [encode_message(Ping(seq, req.target))])
        # Nack at 80% of the probe timeout so it reaches the requester before its deadline.
        self._timers.push(now + self._config.probe_timeout_ms * 4 // 5, timer.RELAY, seq)

    def on_relay_timer(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._diss.send(relay.requester, [encode_message(Nack(relay.seq))])

    # --- probing ------------------------------------------------------------

    def on_probe_timer(self, deadline: int, now: int) -> None:
        if deadline != self._probe_due_ms or self._me.left:
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
            self._schedule(probe.end_at_ms)
            return
        self._probe = None
        self._probe_failed(probe, now)
        self._start_probe(now)

    def _start_probe(self, now: int) -> None:
        target = self._next_target()
        config = self._config
        if target is None:
            if self.seeds:
                self.announce()
            self._schedule(now + config.probe_interval_ms)
            return
        seq = self._next_seq()
        timeout_ms = self._awareness.scale_ms(config.probe_timeout_ms)
        interval_ms = self._awareness.scale_ms(config.probe_interval_ms)
        probe = _Probe(target, seq, now, now + timeout_ms, now + interval_ms)
        parts = [encode_message(Ping(seq, target.name))]
        if target.status is _SUSPECT:
            # Tell it it is suspected so it can refute at once.
            parts.append(encode_message(Suspect(target.name, target.incarnation, self._me.name)))
        self._probe = probe
        self._diss.send(target.address, parts)
        if probe.timeout_at_ms < probe.end_at_ms:
            self._schedule(probe.timeout_at_ms)
        else:
            probe.indirect_sent = True
            self._schedule(probe.end_at_ms)

    def _send_indirect(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        peers = self._table.random_peers(
            self._config.indirect_checks, probe.target, want=WANT_ALIVE
        )
        nack = self._config.lifeguard
        payload = encode_message(PingReq(probe.seq, probe.target, probe.address, nack))
        for peer in peers:
            self._diss.send(peer.address, [payload])
        probe.expected_nacks = len(peers) if nack else 0
        # A second direct ping, in the role of memberlist's TCP fallback: with p loss per
        # datagram a lone lost ping or ack no longer leads to a suspicion with odds ~2p.
        self._diss.send(probe.address, [encode_message(Ping(probe.seq, probe.target))])

    def _probe_failed(self, probe: _Probe, now: int) -> None:
        # Missing nacks mean our own network is the likelier culprit (Lifeguard).
        if probe.expected_nacks > 0:
            self._awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self._awareness.apply_delta(1)
        target = self._table.members.get(probe.target)
        if target is not None and target.status in UP:
            self._updates.apply_suspect(
                Suspect(target.name, target.incarnation, self._me.name), now
            )

    def _next_target(self) -> Member | None:
        if self._config.probe_schedule == "coordinated":
            return self._scheduled_target()
        members = self._table.members
        for _ in range(len(self._probe_order) + 1):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = [n for n in self._table.peer_names if members[n].status in UP]
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            member = members.get(self._probe_order[self._probe_index])
            self._probe_index += 1
            if member is not None and member.status in UP:  # None: forgotten since
                return member
        return None

    def _scheduled_target(self) -> Member | None:
        """This round's target under the coordinated schedule; None when alone."""
        ring = self._table.ring()
        n = len(ring)
        me = bisect_left(ring, self._me.name)
        if n < 2:
            return None  # we are the ring's only member (probing stops once we leave)
        round_number = probe_round(self._clock.wall_ms(), self._config.probe_interval_ms)
        return self._table.members[ring[(me + probe_shift(round_number, n)) % n]]

    def add_to_probe_order(self, name: str) -> None:
        order = self._probe_order
        if len(order) - self._probe_index > 2 * len(self._table.peer_names):
            return  # flapping members: the next round's reshuffle includes it anyway
        order.append(name)
        lo = min(self._probe_index, len(order) - 1)
        j = lo + int(self._rng.random() * (len(order) - lo))
        order[j], order[-1] = order[-1], order[j]

    def _schedule(self, at_ms: int) -> None:
        self._probe_due_ms = at_ms
        self._timers.push(at_ms, timer.PROBE)

    def _record_rtt(self, rtt_ms: float) -> None:
        samples = self._stats.probe_rtt_ms
        samples.append(rtt_ms)
        if len(samples) > RTT_SAMPLES_MAX:
            del samples[: len(samples) - RTT_SAMPLES_MAX]

    # --- seeds --------------------------------------------------------------

    def add_seeds(self, seeds: list[Address]) -> None:
        for addr in seeds:
            if addr != self._me.local.address and addr not in self.seeds:
                self.seeds.append(addr)

    def announce(self) -> None:
        for seed in self.seeds:
            ping = encode_message(Ping(self._next_seq(), ""))
            self._diss.send(seed, [self._me.alive_bytes, ping])

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & MAX_SEQ
        return self._seq

    @property
    def probe_order(self) -> list[str]:
        return self._probe_order
