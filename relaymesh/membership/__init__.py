"""Gossip membership: a sans-IO SWIM + Lifeguard core, its wire format and its fakes.

``protocol.Swim`` is the state machine; ``memory.MemoryNetwork`` runs many of them
on a virtual clock (tests, simulator); the asyncio driver runs one on real sockets.
This package imports nothing from ``work/``, ``store/`` or ``web/``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relaymesh.membership.keyring import Keyring, generate_key
    from relaymesh.membership.protocol import (
        DROP_REASONS,
        MemberChanged,
        Swim,
        SwimConfig,
        SwimStats,
    )
    from relaymesh.membership.seeds import load_seeds, parse_address, parse_seeds
    from relaymesh.membership.state import Address, Member, merge_views

# Loaded on first use (PEP 562): importing one small module of the package (the CLI's
# mesh-summary reads suspicion.py) must not load the whole protocol core.
_LAZY = {
    **dict.fromkeys(("Keyring", "generate_key"), "relaymesh.membership.keyring"),
    **dict.fromkeys(
        ("DROP_REASONS", "MemberChanged", "Swim", "SwimConfig", "SwimStats"),
        "relaymesh.membership.protocol",
    ),
    **dict.fromkeys(("load_seeds", "parse_address", "parse_seeds"), "relaymesh.membership.seeds"),
    **dict.fromkeys(("Address", "Member", "merge_views"), "relaymesh.membership.state"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DROP_REASONS",
    "Address",
    "Keyring",
    "Member",
    "MemberChanged",
    "Swim",
    "SwimConfig",
    "SwimStats",
    "generate_key",
    "load_seeds",
    "merge_views",
    "parse_address",
    "parse_seeds",
]
