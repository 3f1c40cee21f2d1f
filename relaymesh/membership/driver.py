"""``MembershipService``: the sans-IO SWIM core run on real asyncio sockets.

The service owns the I/O and the timers, never the protocol: every decision is the
core's (``protocol.Swim``). It binds UDP (probes, gossip) and TCP (push/pull) on one
port, feeds the core every datagram, sleeps until the core's next deadline or the
next packet, sends what the core queued, and hands the core's ``MemberChanged``
events to subscribers. Two background tasks join the seeds (retrying with backoff,
so nodes can start in any order) and run anti-entropy push/pull.

Push/pull over TCP, one exchange per connection (frames as in ``transport``):

    client -> server   core.encode_state(join=...)
    server -> client   u32 updates the server applied from the client's state
                       + the server's state as it was *before* that merge

Both counts zero means the two views agreed at the exchange: that closes a
``gossip_convergence_seconds`` measurement opened by the first local change.

Nothing a peer sends may crash the node: bad datagrams are counted by the core,
bad TCP frames by ``transport`` and here (``packets_dropped{reason}``), and an
unexpected error in the core is logged and counted as ``internal`` instead of
killing the loop. It imports nothing from ``work/``, ``store/`` or ``web/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relaymesh.clock import Clock, SystemClock
from relaymesh.exceptions import ConfigError, ProtocolError
from relaymesh.logging import get_logger
from relaymesh.membership.antientropy import pushpull_interval_ms
from relaymesh.membership.incarnation import initial_incarnation
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.protocol import DROP_REASONS, MemberChanged, Swim, SwimConfig
from relaymesh.membership.ratelimit import SourceLimiter, SourceLimits
from relaymesh.membership.state import Member
from relaymesh.membership.transport import (
    DEFAULT_MAX_FRAME_BYTES,
    Address,
    PushPullServer,
    TransportError,
    UdpEndpoint,
    open_udp,
    pushpull_request,
)
from relaymesh.model import MemberStatus
from relaymesh.settings import GossipSettings
from relaymesh.telemetry import MembershipMetrics

__all__ = ["MembershipService", "parse_address", "swim_config"]

log = get_logger(__name__)

_REPLY_HEADER = struct.Struct(">I")
_PUSHPULL_TIMEOUT_S = 3.0
"""Whole exchange, connect to last byte; loopback and LAN peers answer in milliseconds."""
_PUSHPULL_READ_TIMEOUT_S = 5.0
"""Server side: a request must arrive whole within this (slow-loris guard)."""
_PUSHPULL_FIRST_BYTE_TIMEOUT_S = 1.0
"""Server side: a client sends its request at once; one that connects and waits
holds one of the 16 slots for at most this."""
_DRIVER_DROP_REASONS = ("timeout", "rate_limit", "overload")
"""Drops counted here, not by the core; exported from the start like the core's."""
_JOIN_BACKOFF_FIRST_S = 0.2
_JOIN_BACKOFF_MAX_S = 5.0
_BIND_ATTEMPTS = 20
"""Port 0: the UDP port the kernel picks may be taken for TCP; try another."""
_LEAVE_FLUSH_ROUNDS = 3
"""Gossip rounds the loop keeps running after LEAVE so the news leaves this host."""
_MAX_SLEEP_S = 1.0
"""Upper bound on one idle sleep, so a far deadline never hides a missed wake-up."""


def swim_config(settings: GossipSettings) -> SwimConfig:
    """The core's plain config from the operator's settings (the core never sees them)."""
    return SwimConfig(
        probe_interval_ms=settings.probe_interval_ms,
        probe_timeout_ms=settings.probe_timeout_ms,
        indirect_checks=settings.indirect_checks,
        gossip_interval_ms=settings.gossip_interval_ms,
        gossip_nodes=settings.gossip_nodes,
        retransmit_mult=settings.retransmit_mult,
        suspicion_mult=settings.suspicion_mult,
        suspicion_max_timeout_mult=settings.suspicion_max_timeout_mult,
        push_pull_interval_ms=settings.push_pull_interval_ms,
        suspect_recover_min_ms=settings.suspect_recover_min_ms,
        dead_recover_min_ms=settings.dead_recover_min_ms,
        awareness_max_multiplier=settings.awareness_max_multiplier,
        lifeguard=settings.lifeguard,
        probe_schedule=settings.probe_schedule,
        dedup_cache_size=settings.dedup_cache_size,
        max_packet_bytes=settings.max_packet_bytes,
        label=settings.label,
    )


def parse_address(value: str, default_host: str = "127.0.0.1") -> Address:
    """``host:port``, ``:port`` or ``[v6]:port`` to a tuple; ``ConfigError`` otherwise."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or default_host, int(port)


class MembershipService:
    """One node's membership: start, subscribe, read the view, stop (with LEAVE)."""

    def __init__(
        self,
        *,
        name: str,
        bind: str,
        advertise: str | None,
        seeds: list[str],
        settings: GossipSettings,
        metrics: MembershipMetrics,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        state_dir: Path | None = None,
        metadata: dict[str, str] | None = None,
        source_limits: SourceLimits | None = None,
    ) -> None:
        self.name = name
        self._limits = source_limits or SourceLimits()
        self._bind = parse_address(bind)
        self._advertise = parse_address(advertise) if advertise else None
        self._seeds = list(seeds)
        for seed in self._seeds:
            parse_address(seed)  # fail at construction, not in a background task
        self._settings = settings
        self.metrics = metrics
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self._state_dir = state_dir
        self._metadata = dict(metadata or {})
        self._keyring = Keyring.from_base64(settings.keys) if settings.keys else None

        self._swim: Swim | None = None
        self._udp: UdpEndpoint | None = None
        self._tcp: PushPullServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._join_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._sleep_until_ms = 0
        self._running = False
        self._stopped = False
        self._subscribers: list[Callable[[MemberChanged], None]] = []
        self.address: Address = self._advertise or self._bind
        """The address peers use; the real port once started (``bind`` may say 0)."""

        # Drops seen outside the core (TCP frames, core bugs), by reason.
        self._extra_drops: Counter[str] = Counter()
        # Last values copied into Prometheus counters, which only move by deltas.
        self._reported: dict[str, int] = {}
        self._updates_merged = 0
        """Member updates applied from push/pull snapshots, both directions."""
        self._unconverged_since_ms: int | None = None
        self.last_convergence_s: float | None = None
        self.joined = False
        """True once a seed answered a push/pull (or there was no seed to ask)."""

    # -- lifecycle

    async def start(self) -> None:
        """Bind UDP and TCP on one port, start the loop, join the seeds in the background.

        Raises ``TransportError`` when the address cannot be bound.
        """
        if self._running or self._stopped:
            raise RuntimeError("a MembershipService starts once")
        host, port = self._bind
        await self._bind_sockets(host, port)
        assert self._udp is not None
        bound_port = self._udp.local_address[1]
        adv_host, adv_port = self._advertise or (_advertise_host(host), bound_port)
        self.address = (adv_host, adv_port or bound_port)
        try:
            incarnation = self._initial_incarnation()
            self._swim = Swim(
                self.name,
                self.address,
                swim_config(self._settings),
                self._clock,
                self._rng,
                keyring=self._keyring,
                incarnation=incarnation,
                metadata=self._metadata,
            )
        except BaseException:
            # Bad settings (label, metadata size): do not leave the port bound.
            self._udp.close()
            if self._tcp is not None:
                await self._tcp.close()
            raise
        self._running = True
        self._drain_core()
        self._tasks.append(asyncio.create_task(self._run_loop(), name="membership-loop"))
        self._tasks.append(asyncio.create_task(self._anti_entropy(), name="membership-pushpull"))
        self._join_task = asyncio.create_task(self._join_seeds(), name="membership-join")
        self._tasks.append(self._join_task)
        log.info(
            "membership_started",
            node=self.name,
            address=_fmt(self.address),
            incarnation=incarnation,
            seeds=len(self._seeds),
            encrypted=self._keyring is not None,
        )

    async def stop(self, *, leave: bool = True, timeout_s: float = 3.0) -> None:
        """Leave (unless ``leave=False``), then close everything within ``timeout_s``.

        The LEAVE is broadcast and the loop keeps gossiping for a few rounds so
        peers hear it from us; peers spread it further themselves.
        """
        if not self._running:
            self._stopped = True
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        swim = self._swim
        assert swim is not None
        if self._join_task is not None:
            self._join_task.cancel()
        if leave:
            peers_to_tell = self._knows_live_peer()
            try:
                swim.leave()
            except Exception:
                log.exception("membership_leave_failed")
            self._drain_core()
            self._wake()
            if peers_to_tell:
                flush_s = _LEAVE_FLUSH_ROUNDS * self._settings.gossip_interval_ms / 1000
                await asyncio.sleep(max(0.0, min(flush_s, deadline - loop.time())))
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=max(0.05, deadline - loop.time()))
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tcp.close(), max(0.05, deadline - loop.time()))
        if self._udp is not None:
            self._udp.close()
        self._persist_incarnation(swim.local.incarnation)
        self._stopped = True
        log.info("membership_stopped", node=self.name, left=leave)

    # -- reading the view

    def subscribe(self, callback: Callable[[MemberChanged], None]) -> None:
        """Call ``callback(event)`` on the event loop for every membership change.

        Callbacks must not block; an exception in one is logged and ignored.
        """
        self._subscribers.append(callback)

    def members(self) -> list[Member]:
        """Every member this node knows, itself included (empty before ``start``)."""
        return list(self._swim.members()) if self._swim is not None else []

    def member(self, name: str) -> Member | None:
        return self._swim.member(name) if self._swim is not None else None

    def local_is_alive(self) -> bool:
        """False before start, after stop, and while this node is suspected and unrefuted."""
        return self._running and self._swim is not None and self._swim.local_is_alive()

    async def sync_now(self) -> dict[str, Any]:
        """One anti-entropy push/pull with a random peer now (``relaymesh gossip-sync``):
        ``{"peer", "merged_here", "merged_there", "agreed", "error"}``, where the merges
        are the member updates each side applied from the other's snapshot and
        ``error`` is None unless there was no peer or the exchange failed."""
        swim = self._swim
        out: dict[str, Any] = {
            "peer": None,
            "merged_here": 0,
            "merged_there": 0,
            "agreed": False,
            "error": None,
        }
        if swim is None or not self._running:
            out["error"] = "gossip is not running"
            return out
        target = swim.pushpull_target()
        if target is None:
            out["error"] = "no peer to exchange with"
            return out
        peer = next((m.name for m in self.members() if m.address == target), None)
        out["peer"] = f"{peer}@{_fmt(target)}" if peer else _fmt(target)
        try:
            applied, remote_applied = await self._pushpull(target, join=False)
        except (TransportError, ProtocolError) as exc:
            out["error"] = f"push/pull with {out['peer']} failed: {exc}"
            return out
        out.update(
            merged_here=applied,
            merged_there=remote_applied,
            agreed=applied == 0 and remote_applied == 0,
        )
        log.info("gossip_sync", node=self.name, **out)
        return out

    def health(self) -> dict[str, Any]:
        counts = self._status_counts()
        local = self._swim.local if self._swim is not None else None
        loop_task = self._tasks[0] if self._tasks else None
        return {
            # The process is healthy while its protocol loop runs; being suspected by
            # peers is the mesh's opinion (``local_alive``), not a reason to restart us.
            "ok": self._running and loop_task is not None and not loop_task.done(),
            "local_alive": self.local_is_alive(),
            "name": self.name,
            "address": _fmt(self.address),
            "running": self._running,
            "joined": self.joined,
            "status": _status_name(local.status) if local is not None else None,
            "incarnation": local.incarnation if local is not None else None,
            "health_score": self._swim.health_score() if self._swim is not None else None,
            "members": {s.value.lower(): counts.get(s.value, 0) for s in MemberStatus},
        }

    def members_json(self) -> list[dict[str, Any]]:
        """The view as JSON-able dicts (``GET /api/members`` of ``relaymesh gossip``).

        ``status_changed_at_ms``: when this node saw the member's status last change,
        or first heard of the member, in wall-clock milliseconds since the Unix epoch
        (the core stamps ``Member.status_changed_at_ms`` with ``Clock.wall_ms()``). It
        is this node's own observation, not gossiped, so two nodes' stamps for one
        change differ by how long the news took to reach each of them.
        """
        return [
            {
                "name": m.name,
                "address": _fmt(m.address),
                "status": _status_name(m.status),
                "incarnation": m.incarnation,
                "metadata": dict(m.metadata or {}),
                "local": m.name == self.name,
                "status_changed_at_ms": m.status_changed_at_ms,
            }
            for m in sorted(self.members(), key=lambda m: m.name)
        ]

    def update_metrics(self) -> None:
        """Copy the core's counters and the view into the metrics (call before a scrape)."""
        swim = self._swim
        if swim is None:
            return
        m = self.metrics
        counts = self._status_counts()
        for status in MemberStatus:
            m.members.labels(status=status.value.lower()).set(counts.get(status.value, 0))
        stats = swim.stats
        # Every reason exported from the start (at 0), so rate() works on the first drop.
        drops: Counter[str] = Counter(dict.fromkeys((*DROP_REASONS, *_DRIVER_DROP_REASONS), 0))
        drops.update(stats.dropped)
        drops.update(self._extra_drops)
        for reason, total in drops.items():
            counter = m.packets_dropped.labels(reason=reason)
            self._bump(f"drop:{reason}", total, counter.inc)
        self._bump("merges", self._updates_merged, m.anti_entropy_merge.inc)
        self._bump("suppressed", stats.recoveries_suppressed, m.membership_recovery_suppressed.inc)
        self._bump("packets_sent", stats.packets_sent, m.gossip_packets_sent.inc)
        self._bump("bytes_sent", stats.bytes_sent, m.gossip_bytes_sent.inc)
        self._bump("packets_received", stats.packets_received, m.gossip_packets_received.inc)
        for rtt_ms in swim.take_rtt_samples():
            m.probe_rtt_seconds.observe(rtt_ms / 1000)
        m.local_health.set(swim.health_score())
        if self.last_convergence_s is not None:
            m.gossip_convergence_seconds.set(self.last_convergence_s)

    def drops(self) -> dict[str, int]:
        """Packets and frames dropped so far, by reason (core and transport together)."""
        total: Counter[str] = Counter()
        if self._swim is not None:
            total.update(dict(self._swim.stats.dropped))
        total.update(self._extra_drops)
        return dict(total)

    # -- sockets

    async def _bind_sockets(self, host: str, port: int) -> None:
        last_error: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
            udp: UdpEndpoint | None = None
            try:
                udp = await open_udp(
                    host,
                    port,
                    self._on_datagram,
                    SourceLimiter(
                        self._limits.udp_datagrams_per_s,
                        self._limits.udp_datagrams_burst,
                        self._clock.monotonic_ms,
                    ),
                    self._count_drop,
                )
                tcp = PushPullServer(
                    self._serve_pushpull,
                    on_drop=self._count_drop,
                    max_frame_bytes=DEFAULT_MAX_FRAME_BYTES,
                    read_timeout_s=_PUSHPULL_READ_TIMEOUT_S,
                    first_byte_timeout_s=_PUSHPULL_FIRST_BYTE_TIMEOUT_S,
                    limiter=SourceLimiter(
                        self._limits.tcp_accepts_per_s,
                        self._limits.tcp_accepts_burst,
                        self._clock.monotonic_ms,
                    ),
                )
                await tcp.start(host, udp.local_address[1])
            except OSError as exc:
                last_error = exc
                if udp is not None:
                    udp.close()
                continue
            self._udp, self._tcp = udp, tcp
            return
        raise TransportError(f"cannot bind {host}:{port}: {last_error}")

    def _on_datagram(self, data: bytes, src: Address) -> None:
        swim = self._swim
        if swim is None or not self._running:
            return
        try:
            swim.handle_packet(data, src)
        except Exception:
            # The core drops and counts bad packets itself; an exception is a core
            # bug a peer could trigger at will, so it must not stop the node.
            self._count_drop("internal")
            log.exception("membership_packet_failed", src=_fmt(src), size=len(data))
        self._drain_core()
        # Wake the loop only when the packet moved the next deadline earlier.
        if swim.next_deadline_ms() < self._sleep_until_ms:
            self._wake()

    def _count_drop(self, reason: str) -> None:
        self._extra_drops[reason] += 1

    def _wake(self) -> None:
        self._wakeup.set()

    # -- the core's side effects

    def _drain_core(self) -> None:
        """Send what the core queued and deliver its events; never raises."""
        swim = self._swim
        if swim is None:
            return
        udp = self._udp
        for address, data in swim.take_outbound():
            if udp is not None:
                udp.send(address, data)
        events = swim.take_events()
        if events and self._unconverged_since_ms is None:
            self._unconverged_since_ms = self._clock.monotonic_ms()
        for event in events:
            log.info(
                "member_changed",
                node=self.name,
                member=event.name,
                address=_fmt(event.address),
                status=_status_name(event.status),
                previous=_status_name(event.previous) if event.previous is not None else None,
                incarnation=event.incarnation,
            )
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    log.exception("membership_subscriber_failed", member=event.name)

    # -- tasks

    async def _run_loop(self) -> None:
        swim = self._swim
        assert swim is not None
        while self._running:
            now_ms = self._clock.monotonic_ms()
            self._sleep_until_ms = swim.next_deadline_ms()
            delay_s = min(max(self._sleep_until_ms - now_ms, 0) / 1000, _MAX_SLEEP_S)
            self._wakeup.clear()
            if delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await self._wakeup.wait()
            try:
                swim.tick()
            except Exception:
                self._count_drop("internal")
                log.exception("membership_tick_failed")
                await asyncio.sleep(0.05)  # a core bug must not become a busy loop
            self._drain_core()

    async def _anti_entropy(self) -> None:
        while True:
            # Slower in big clusters (total TCP load stays flat); jittered, so nodes
            # started together do not push/pull in lockstep.
            swim = self._swim
            assert swim is not None
            interval_ms = pushpull_interval_ms(
                self._settings.push_pull_interval_ms, swim.num_alive()
            )
            await asyncio.sleep(interval_ms / 1000 * (0.75 + 0.5 * self._rng.random()))
            target = swim.pushpull_target()
            if target is None:
                continue
            try:
                await self._pushpull(target, join=False)
            except (TransportError, ProtocolError) as exc:
                log.debug("pushpull_failed", peer=_fmt(target), error=str(exc))
            except Exception:
                # Our bug, not the peer's: log it and keep anti-entropy running.
                log.exception("pushpull_crashed", peer=_fmt(target))

    async def _join_seeds(self) -> None:
        swim = self._swim
        assert swim is not None
        backoff_s = _JOIN_BACKOFF_FIRST_S
        attempt = 0
        while True:
            attempt += 1
            addresses = await self._resolve_seeds()
            if not addresses:
                # No one to ask (the first node, or the seeds name only us): done.
                self.joined = True
                return
            try:
                swim.join(addresses)
            except Exception:
                log.exception("membership_join_failed")
            self._drain_core()
            self._wake()
            self._rng.shuffle(addresses)
            for address in addresses:
                try:
                    await self._pushpull(address, join=True)
                except (TransportError, ProtocolError) as exc:
                    log.debug("join_seed_failed", seed=_fmt(address), error=str(exc))
                    continue
                except Exception:
                    log.exception("join_seed_crashed", seed=_fmt(address))
                    continue
                self.joined = True
                log.info("membership_joined", node=self.name, seed=_fmt(address), attempt=attempt)
                return
            if self._knows_live_peer():
                # A peer found us first (it started later and had us as a seed).
                self.joined = True
                log.info("membership_joined", node=self.name, seed=None, attempt=attempt)
                return
            if attempt % 10 == 0:
                # Normal while the other nodes boot; worth a warning only if it lasts.
                log.warning("join_retrying", node=self.name, attempt=attempt, seeds=len(addresses))
            await asyncio.sleep(backoff_s * (0.5 + self._rng.random()))
            backoff_s = min(backoff_s * 2, _JOIN_BACKOFF_MAX_S)

    async def _resolve_seeds(self) -> list[Address]:
        loop = asyncio.get_running_loop()
        own = {self.address, self._bind}
        # Our UDP socket speaks one address family; a seed must be reachable in it.
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        found: list[Address] = []
        for seed in self._seeds:
            host, port = parse_address(seed)
            try:
                infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.debug("seed_unresolved", seed=seed, error=str(exc))
                continue
            for info in infos[:1]:
                address = (str(info[4][0]), int(info[4][1]))
                if address not in own and address not in found:
                    found.append(address)
        return found

    def _knows_live_peer(self) -> bool:
        return any(
            m.name != self.name and _status_name(m.status) == MemberStatus.ALIVE.value
            for m in self.members()
        )

    # -- push/pull

    async def _pushpull(self, address: Address, *, join: bool) -> tuple[int, int]:
        """One exchange; (updates applied here, updates the peer applied)."""
        swim = self._swim
        assert swim is not None
        try:
            reply = await pushpull_request(
                address, swim.encode_state(join=join), timeout_s=_PUSHPULL_TIMEOUT_S
            )
            if len(reply) < _REPLY_HEADER.size:
                raise ProtocolError("decode", "push/pull reply without header")
        except ProtocolError as exc:
            self._count_drop(exc.reason)  # a bad frame: the core never saw it
            raise
        (remote_applied,) = _REPLY_HEADER.unpack_from(reply)
        applied = swim.merge_state(reply[_REPLY_HEADER.size :])  # counts its own drops
        self._updates_merged += applied
        self._drain_core()
        self._note_agreement(remote_applied == 0 and applied == 0)
        return applied, int(remote_applied)

    def _serve_pushpull(self, request: bytes, peer: Address) -> bytes | None:
        swim = self._swim
        if swim is None or not self._running:
            return None
        # Our state as it was before the peer's: the reply tells the peer what it lacks.
        state = swim.encode_state()
        try:
            applied = swim.merge_state(request)
        except ProtocolError as exc:
            log.debug("pushpull_refused", peer=_fmt(peer), reason=exc.reason)
            return None  # the core counted the drop
        self._updates_merged += applied
        self._drain_core()
        return _REPLY_HEADER.pack(min(applied, 0xFFFFFFFF)) + state

    def _note_agreement(self, agreed: bool) -> None:
        if not agreed or self._unconverged_since_ms is None:
            return
        elapsed_ms = self._clock.monotonic_ms() - self._unconverged_since_ms
        self.last_convergence_s = elapsed_ms / 1000
        self._unconverged_since_ms = None
        self.metrics.gossip_convergence_seconds.set(self.last_convergence_s)

    # -- helpers

    def _status_counts(self) -> Counter[str]:
        return Counter(_status_name(m.status) for m in self.members())

    def _bump(self, key: str, total: int, inc: Callable[[float], None]) -> None:
        delta = total - self._reported.get(key, 0)
        if delta > 0:
            inc(delta)
        self._reported[key] = max(total, self._reported.get(key, 0))

    def _incarnation_path(self) -> Path | None:
        if self._state_dir is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return self._state_dir / f"{safe}.incarnation"

    def _initial_incarnation(self) -> int:
        """Higher than any this name used before, so a restart rejoins ALIVE at once;
        a persisted value the mesh would not believe (``incarnation.admissible``) is
        ignored with a warning, not reused."""
        persisted: int | None = None
        path = self._incarnation_path()
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                persisted = int(path.read_text().strip())
        incarnation, refused = initial_incarnation(persisted, self._clock.wall_ms())
        if refused:
            log.warning("incarnation_file_ignored", path=str(path), value=persisted)
        self._persist_incarnation(incarnation)
        return incarnation

    def _persist_incarnation(self, incarnation: int) -> None:
        path = self._incarnation_path()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(f"{incarnation}\n")
            tmp.replace(path)  # atomic: a crash never leaves half a number
        except OSError as exc:
            log.warning("incarnation_not_saved", path=str(path), error=str(exc))


def _status_name(status: MemberStatus) -> str:
    return status.value


def _fmt(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _advertise_host(bind_host: str) -> str:
    """The address peers can reach when bound to a wildcard."""
    if bind_host not in ("0.0.0.0", "", "::"):
        return bind_host
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"
