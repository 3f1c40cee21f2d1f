"""What a simulation run does: the cluster, the network, and the faults, in plain data.

A ``Scenario`` is everything a run depends on besides the protocol code: same scenario
(seed included), same result. Times are simulated seconds (``_s``) or milliseconds
(``_ms``) from the start of the run. This module parses the command-line fault specs and
checks them; it knows nothing about the protocol or the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relaymesh.exceptions import ConfigError

__all__ = ["Freeze", "Partition", "Scenario", "parse_freeze", "parse_partition", "parse_range_ms"]


@dataclass(frozen=True, slots=True)
class Freeze:
    """Node ``node`` (an index) handles nothing from ``at_s`` for ``for_s``: a stalled event
    loop. Packets sent to it wait and are handled, late, when it thaws."""

    node: int
    at_s: float
    for_s: float


@dataclass(frozen=True, slots=True)
class Partition:
    """From ``at_s`` for ``for_s``, a random ``fraction`` of the nodes (never node 0, the seed)
    can reach only each other; the rest only each other."""

    at_s: float
    for_s: float
    fraction: float


@dataclass(frozen=True, slots=True)
class Scenario:
    nodes: int = 100
    duration_s: float = 60.0
    seed: int = 1
    loss: float = 0.0
    """Probability that any one packet is lost, independently."""
    delay_ms: tuple[int, int] = (1, 5)
    """One-way network delay, uniform in this range (a LAN)."""
    kill: int = 1
    """Nodes SIGKILLed (silently stopped) at ``kill_at_s``; never the seed, node 0."""
    kill_at_s: float | None = None
    """None: 10 s after every node first saw every other (or at a third of the run if that
    never happens)."""
    slow_frac: float = 0.0
    """Fraction of nodes (never the seed) that handle every packet late..."""
    slow_delay_ms: tuple[int, int] = (500, 2500)
    """...by a delay uniform in this range, drawn per packet."""
    freezes: tuple[Freeze, ...] = ()
    partitions: tuple[Partition, ...] = ()
    lifeguard: bool = True
    join_spread_s: float = 0.0
    """Nodes start (and join through the seed) at times spread uniformly over this window."""
    bootstrap: bool = False
    """Start every node with the converged view (``Swim.preload``) instead of joining:
    detection scenarios at scale without the join storm. Convergence after joins is then
    not measured (``converged_at_s`` is 0)."""
    seeds: int = 3
    """Nodes 0 .. seeds-1 are the seeds every joiner is given."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """``SwimConfig`` fields to override (timings, fanout), by name."""

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ConfigError("a simulation needs at least 2 nodes")
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError(f"loss must be in [0, 1), got {self.loss}")
        if not 0 <= self.kill < self.nodes - 1:
            raise ConfigError(f"can kill 0 .. {self.nodes - 2} of {self.nodes} nodes")
        if not 0.0 <= self.slow_frac < 1.0:
            raise ConfigError(f"slow fraction must be in [0, 1), got {self.slow_frac}")
        if self.duration_s <= 0:
            raise ConfigError("duration must be positive")
        for lo, hi in (self.delay_ms, self.slow_delay_ms):
            if not 0 <= lo <= hi:
                raise ConfigError(f"bad delay range {lo}-{hi} ms")
        for freeze in self.freezes:
            if not 0 <= freeze.node < self.nodes:
                raise ConfigError(f"freeze: no node {freeze.node} in {self.nodes}")
        for part in self.partitions:
            if not 0.0 < part.fraction < 1.0:
                raise ConfigError("partition fraction must be in (0, 1)")


def parse_range_ms(text: str) -> tuple[int, int]:
    """``"500-2500"`` or ``"700"`` to an inclusive range in milliseconds."""
    lo, sep, hi = text.partition("-")
    try:
        low = int(lo)
        high = int(hi) if sep else low
    except ValueError as exc:
        raise ConfigError(f"expected MS or MS-MS, got {text!r}") from exc
    if not 0 <= low <= high:
        raise ConfigError(f"bad range {text!r}")
    return low, high


def parse_freeze(text: str) -> Freeze:
    """``NODE:AT_S:FOR_S``, e.g. ``7:30:2`` freezes node 7 at 30 s for 2 s."""
    parts = text.split(":")
    try:
        node, at_s, for_s = int(parts[0]), float(parts[1]), float(parts[2])
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"expected NODE:AT_S:FOR_S, got {text!r}") from exc
    if len(parts) != 3 or at_s < 0 or for_s <= 0:
        raise ConfigError(f"expected NODE:AT_S:FOR_S, got {text!r}")
    return Freeze(node, at_s, for_s)


def parse_partition(text: str) -> Partition:
    """``AT_S:FOR_S:FRACTION``, e.g. ``60:20:0.3`` cuts 30 % of the nodes off at 60 s for 20 s."""
    parts = text.split(":")
    try:
        at_s, for_s, fraction = float(parts[0]), float(parts[1]), float(parts[2])
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"expected AT_S:FOR_S:FRACTION, got {text!r}") from exc
    if len(parts) != 3 or at_s < 0 or for_s <= 0:
        raise ConfigError(f"expected AT_S:FOR_S:FRACTION, got {text!r}")
    return Partition(at_s, for_s, fraction)
