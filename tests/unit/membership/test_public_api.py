"""The names other packages (driver, simulator, node) code against stay put."""

from __future__ import annotations

import inspect

import relaymesh.membership as membership
from relaymesh.membership.protocol import Swim

from ._helpers import core


def test_package_exports() -> None:
    assert sorted(membership.__all__) == sorted(
        [
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
    )
    for name in membership.__all__:
        assert hasattr(membership, name)


def test_swim_surface() -> None:
    expected = {
        "handle_packet",
        "tick",
        "next_deadline_ms",
        "take_outbound",
        "take_events",
        "join",
        "leave",
        "members",
        "member",
        "local",
        "local_is_alive",
        "health_score",
        "take_rtt_samples",
        "pushpull_target",
        "encode_state",
        "merge_state",
        "num_alive",
        "stats",
    }
    swim, _ = core()
    # Methods and properties on the class, plain attributes (``stats``) on an instance.
    public = {n for n in dir(Swim) if not n.startswith("_")}
    public |= {n for n in vars(swim) if not n.startswith("_")}
    assert expected <= public, sorted(expected - public)
    params = list(inspect.signature(Swim.__init__).parameters)
    assert params[:6] == ["self", "name", "address", "config", "clock", "rng"]
    assert {"keyring", "incarnation", "metadata"} <= set(params)
