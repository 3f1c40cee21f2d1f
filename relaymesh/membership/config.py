"""The protocol core's plain data: its config, its counters and the events it emits.

No behaviour and no imports from the settings model: the driver builds a
``SwimConfig`` from the operator's settings (``driver.swim_config``), the simulator
and the tests build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from relaymesh.membership.state import Address
from relaymesh.model import MemberStatus

__all__ = ["DROP_REASONS", "RTT_SAMPLES_MAX", "MemberChanged", "SwimConfig", "SwimStats"]

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
