"""Work: everything that runs steps.

``workflow`` parses and validates workflow files; ``worker`` claims steps under
fenced leases, runs them through ``agents`` and commits their results;
``retry``, ``breaker`` and ``guard`` are the pure policies it applies;
``maintenance`` reclaims lost work on the elected leader (and on any node that sees
a member die). Talks to the store only through ``relaymesh.store.base.Store``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relaymesh.work.agents import BUILTIN_AGENTS, AgentRegistry, known_agents
    from relaymesh.work.maintenance import Maintenance
    from relaymesh.work.worker import Worker
    from relaymesh.work.workflow import load_workflow_file, parse_workflow

# Loaded on first use (PEP 562): a CLI read command that needs one small module
# (dispatch.py, workflow.py) must not load the worker and the agent runner.
_LAZY = {
    **dict.fromkeys(("BUILTIN_AGENTS", "AgentRegistry", "known_agents"), "relaymesh.work.agents"),
    "Maintenance": "relaymesh.work.maintenance",
    "Worker": "relaymesh.work.worker",
    **dict.fromkeys(("load_workflow_file", "parse_workflow"), "relaymesh.work.workflow"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILTIN_AGENTS",
    "AgentRegistry",
    "Maintenance",
    "Worker",
    "known_agents",
    "load_workflow_file",
    "parse_workflow",
]
