"""Work: everything that runs steps.

``workflow`` parses and validates workflow files; ``worker`` claims steps under
fenced leases, runs them through ``agents`` and commits their results;
``retry``, ``breaker`` and ``guard`` are the pure policies it applies;
``maintenance`` reclaims lost work on the elected leader (and on any node that sees
a member die). Talks to the store only through ``relaymesh.store.base.Store``.
"""

from __future__ import annotations

from relaymesh.work.agents import BUILTIN_AGENTS, AgentRegistry, known_agents
from relaymesh.work.maintenance import Maintenance
from relaymesh.work.worker import Worker
from relaymesh.work.workflow import load_workflow_file, parse_workflow

__all__ = [
    "BUILTIN_AGENTS",
    "AgentRegistry",
    "Maintenance",
    "Worker",
    "known_agents",
    "load_workflow_file",
    "parse_workflow",
]
