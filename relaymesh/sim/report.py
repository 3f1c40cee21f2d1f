"""What a simulation run measured, and how it is printed (a table or one JSON document).

Times in a ``SimResult`` are simulated seconds. Detection times are measured from the
kill; "first" and "last" are the first and the last live node to mark the victim DEAD,
and the gap between them is how long the cluster disagreed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Detection", "SimResult", "percentile", "render_text"]


@dataclass(slots=True)
class Detection:
    """One killed node, as the survivors saw it."""

    node: str
    killed_at_s: float
    observers: int
    """Live nodes that should mark it DEAD."""
    marked_by: int = 0
    first_s: float | None = None
    """Seconds from the kill to the first survivor marking it DEAD."""
    last_s: float | None = None
    """Seconds from the kill to the last survivor that marked it (all of them if detected)."""
    first_suspect_s: float | None = None

    @property
    def detected(self) -> bool:
        """Every survivor marked it DEAD."""
        return self.observers > 0 and self.marked_by >= self.observers

    @property
    def gap_s(self) -> float | None:
        if self.first_s is None or self.last_s is None:
            return None
        return self.last_s - self.first_s


@dataclass(slots=True)
class SimResult:
    scenario: dict[str, Any]
    simulated_s: float
    wall_s: float
    converged_at_s: float | None = None
    """First moment every node held every other as a member (ALIVE or SUSPECT)."""
    detections: list[Detection] = field(default_factory=list)
    false_suspect: int = 0
    """SUSPECT marks (observer, subject) of a node that was not killed, not across a cut."""
    false_suspect_nodes: int = 0
    false_dead: int = 0
    false_dead_nodes: int = 0
    frozen_dead: int = 0
    """DEAD marks of a node that was only frozen (included in ``false_dead``)."""
    partition_dead: int = 0
    """DEAD marks across an active partition: expected, not counted as false."""
    messages_per_node_s: float = 0.0
    bytes_per_node_s: float = 0.0
    """Steady state: from convergence (or the start, if it never converged) to the end."""
    messages_per_node_s_total: float = 0.0
    bytes_per_node_s_total: float = 0.0
    """Whole run, joins included."""
    bootstrapped: bool = False
    """Nodes started from the converged view (``Scenario.bootstrap``, ``Swim.preload``)."""
    pushpull_counted: bool = False
    """Whether the byte counts include push/pull streams (the network counts them)."""
    packets_dropped: int = 0
    events: int = 0
    core_stats: dict[str, int] = field(default_factory=dict)

    @property
    def detected_all(self) -> bool:
        return all(d.detected for d in self.detections)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for raw, det in zip(doc["detections"], self.detections, strict=True):
            raw["detected"] = det.detected
            raw["gap_s"] = det.gap_s
        doc["detected_all"] = self.detected_all
        return doc


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``pct`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def _fmt(value: float | None, unit: str = " s", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render_text(result: SimResult) -> str:
    sc = result.scenario
    lines = [
        f"simulated {result.simulated_s:.0f} s of {sc['nodes']} nodes in {result.wall_s:.1f} s "
        f"(loss {sc['loss'] * 100:.1f} %, lifeguard {'on' if sc['lifeguard'] else 'off'}, "
        f"seed {sc['seed']})",
        "convergence after joins: "
        + ("(bootstrapped)" if result.bootstrapped else _fmt(result.converged_at_s)),
    ]
    if result.detections:
        lines.append("killed node   at        first DEAD   last DEAD    gap       marked by")
        for det in result.detections:
            lines.append(
                f"{det.node:12s}  {det.killed_at_s:7.1f} s  {_fmt(det.first_s):11s}  "
                f"{_fmt(det.last_s):11s}  {_fmt(det.gap_s):8s}  "
                f"{det.marked_by}/{det.observers}{'' if det.detected else '  (not all)'}"
            )
        lasts = [d.last_s for d in result.detections if d.detected and d.last_s is not None]
        gaps = [d.gap_s for d in result.detections if d.gap_s is not None]
        if len(result.detections) > 1 and lasts:
            lines.append(
                f"detection (every node) p50 {_fmt(percentile(lasts, 50))}, "
                f"p99 {_fmt(percentile(lasts, 99))}, median gap "
                f"{_fmt(statistics.median(gaps) if gaps else None)}"
            )
    lines += [
        f"false SUSPECT: {result.false_suspect} marks of {result.false_suspect_nodes} healthy "
        f"node(s); false DEAD: {result.false_dead} marks of {result.false_dead_nodes} node(s)"
        f" ({result.frozen_dead} of a frozen node)"
        + (f"; DEAD across a partition: {result.partition_dead}" if sc["partitions"] else ""),
        f"traffic per node: {result.messages_per_node_s:.1f} msg/s, "
        f"{result.bytes_per_node_s:.0f} B/s steady "
        f"({result.messages_per_node_s_total:.1f} msg/s, {result.bytes_per_node_s_total:.0f} B/s "
        f"over the whole run, joins included; "
        f"{'datagrams and push/pull' if result.pushpull_counted else 'datagrams only'})",
    ]
    return "\n".join(lines)
