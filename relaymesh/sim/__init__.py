"""The membership simulator: many real protocol cores on a simulated network.

``run_scenario(Scenario(...))`` runs N ``membership.protocol.Swim`` cores on
``membership.memory.MemoryNetwork`` (loss, delay, partitions, slow and frozen nodes,
kills) on a virtual clock and returns a ``SimResult``: how fast killed nodes were
declared DEAD (first and last survivor, and the gap), healthy nodes wrongly marked
SUSPECT or DEAD, convergence after the joins, and traffic per node.

``python -m relaymesh.sim`` and ``relaymesh sim`` are the command lines. This package
imports ``membership/`` (and the leaf modules) only.
"""

from relaymesh.sim.report import Detection, SimResult, percentile, render_text
from relaymesh.sim.runner import node_name, run_scenario
from relaymesh.sim.scenario import (
    Freeze,
    Partition,
    Scenario,
    parse_freeze,
    parse_partition,
    parse_range_ms,
)

__all__ = [
    "Detection",
    "Freeze",
    "Partition",
    "Scenario",
    "SimResult",
    "node_name",
    "parse_freeze",
    "parse_partition",
    "parse_range_ms",
    "percentile",
    "render_text",
    "run_scenario",
]
