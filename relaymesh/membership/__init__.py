"""Gossip membership: a sans-IO SWIM + Lifeguard core, its wire format and its fakes.

``protocol.Swim`` is the state machine; ``memory.MemoryNetwork`` runs many of them
on a virtual clock (tests, simulator); the asyncio driver runs one on real sockets.
This package imports nothing from ``work/``, ``store/`` or ``web/``.
"""

from __future__ import annotations

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
