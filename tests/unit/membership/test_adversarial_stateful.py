"""Several protocol cores on a memory network, driven by hypothesis with forged traffic.

The machine interleaves honest time with attacks a peer without the keys can make
on an unkeyed mesh: forged SUSPECT / DEAD / LEFT / ALIVE about real nodes at any
incarnation (up to 2**63 - 1), compound packets mixing bad and good messages,
fake members with large metadata, forged ping-reqs, and push/pull snapshots with
all of that. Invariants after every step: every incarnation anyone holds is within
the ceiling; the member table, the broadcast queue, the dedup cache and the relays
stay bounded. At the end the attacks stop, and within a bounded time every running
node is ALIVE again in every view.

``make fuzz`` runs many more examples (RELAYMESH_FUZZ=1); ``make test`` a few seconds.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

import msgpack
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from relaymesh.clock import FakeClock
from relaymesh.membership.incarnation import INCARNATION_MAX, incarnation_ceiling
from relaymesh.membership.memory import MemoryNetwork
from relaymesh.membership.protocol import Swim
from relaymesh.membership.state import Address, Member
from relaymesh.membership.wire import (
    MAX_METADATA_BYTES,
    Alive,
    Dead,
    Left,
    Message,
    Ping,
    PingReq,
    Suspect,
    encode_message,
    encode_state,
    frame,
    pack_compound,
)
from relaymesh.model import MemberStatus

from ._helpers import FAST

NODES = 4
MAX_MEMBERS = 12
"""Small, so the fake-member rule reaches the bound within a few steps."""
CONFIG = replace(FAST, max_members=MAX_MEMBERS, push_pull_interval_ms=5_000)
SETTLE_MS = 120_000
"""After the last attack: every fake member suspected and DEAD (a probe round, then at
most 6 x 4 x log10(n) probe intervals), then an accused node's next probe answered
(its own probes of fakes failing had stretched its intervals up to 8x) to leave safe
mode, plus the DEAD dwell and a push/pull round."""
FUZZ = bool(os.environ.get("RELAYMESH_FUZZ"))
ATTACKER: Address = ("10.66.6.6", 6666)


def address(i: int) -> Address:
    return ("10.0.0.1", 8000 + i)


def datagram(*parts: bytes) -> bytes:
    return frame(pack_compound(list(parts)), b"", None)


_incarnations = st.sampled_from(["zero", "current", "next", "edge", "above", "max"])
_nodes = st.integers(0, NODES - 1)


class AdversarialMesh(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.rng = random.Random(11)
        self.net = MemoryNetwork(self.clock, self.rng, delay_ms=(1, 5))
        self.swims = [
            Swim(f"n{i}", address(i), CONFIG, self.clock, random.Random(100 + i))
            for i in range(NODES)
        ]
        for swim in self.swims:
            self.net.add(swim)
        for i in range(1, NODES):
            self.net.join(address(i), [address(0)])
        self.net.run_for(5_000)
        self.fakes = 0

    def incarnation(self, choice: str, victim: int) -> int:
        current = self.swims[victim].local.incarnation
        ceiling = incarnation_ceiling(self.clock.wall_ms())
        return {
            "zero": 0,
            "current": current,
            "next": current + 1,
            "edge": ceiling,
            "above": ceiling + 1,
            "max": INCARNATION_MAX,
        }[choice]

    # --- attacks ------------------------------------------------------------

    @rule(
        kind=st.sampled_from(["suspect", "dead", "left", "alive"]),
        victim=_nodes,
        receiver=_nodes,
        inc=_incarnations,
        spoof=st.booleans(),
    )
    def forge_update(self, kind: str, victim: int, receiver: int, inc: str, spoof: bool) -> None:
        name = self.swims[victim].name
        incarnation = self.incarnation(inc, victim)
        msg: Message
        if kind == "suspect":
            msg = Suspect(name, incarnation, "forger")
        elif kind == "dead":
            msg = Dead(name, incarnation, "forger")
        elif kind == "left":
            msg = Left(name, incarnation)
        else:
            msg = Alive(name, incarnation, address(victim), {})
        src = address((receiver + 1) % NODES) if spoof else ATTACKER
        self.net.inject(address(receiver), datagram(encode_message(msg)), src)

    @rule(receiver=_nodes, victim=_nodes)
    def compound_with_bad_messages(self, receiver: int, victim: int) -> None:
        bad_name = msgpack.packb([4, "evil\nname", 1, "10.9.9.9", 1, {}])
        too_high = encode_message(Dead(self.swims[victim].name, INCARNATION_MAX, "x"))
        ping = encode_message(Ping(1, self.swims[receiver].name))
        self.net.inject(address(receiver), datagram(bad_name, too_high, ping), ATTACKER)

    @rule(receiver=_nodes, count=st.integers(5, 12), big=st.booleans(), by_tcp=st.booleans())
    def fake_members(self, receiver: int, count: int, big: bool, by_tcp: bool) -> None:
        fakes = []
        for _ in range(count):
            self.fakes += 1
            meta = {"pad": "x" * ((MAX_METADATA_BYTES - 3) if big else 10)}  # at the bound
            fakes.append(Alive(f"fake{self.fakes}", 1, ("10.7.7.7", self.fakes % 60000 + 1), meta))
        if by_tcp:
            members = [
                Member(a.name, a.address, MemberStatus.ALIVE, a.incarnation, a.metadata)
                for a in fakes
            ]
            snapshot = frame(encode_state(members, join=False), b"", None)
            self.net.inject_state(address(receiver), snapshot)
            return
        for alive in fakes:  # one a datagram: a big one fills a packet
            self.net.inject(address(receiver), datagram(encode_message(alive)), ATTACKER)

    @rule(receiver=_nodes, named=_nodes)
    def forged_ping_req(self, receiver: int, named: int) -> None:
        req = PingReq(7, self.swims[named].name, ATTACKER, True)
        self.net.inject(address(receiver), datagram(encode_message(req)), ATTACKER)

    @rule(receiver=_nodes, victim=_nodes, inc=_incarnations)
    def forged_snapshot(self, receiver: int, victim: int, inc: str) -> None:
        members = [
            Member(
                self.swims[victim].name,
                address(victim),
                MemberStatus.DEAD,
                self.incarnation(inc, victim),
                {},
            ),
            Member("snap-fake", ("10.8.8.8", 1), MemberStatus.ALIVE, 1, {}),
        ]
        self.net.inject_state(
            address(receiver), frame(encode_state(members, join=False), b"", None)
        )

    @rule(ms=st.integers(1, 3_000))
    def time_passes(self, ms: int) -> None:
        self.net.run_for(ms)

    # --- invariants ---------------------------------------------------------

    @invariant()
    def incarnations_stay_bounded(self) -> None:
        ceiling = incarnation_ceiling(self.clock.wall_ms()) + 1  # a refutation at +1
        for swim in self.swims:
            for m in swim.members():
                assert m.incarnation <= ceiling, (swim.name, m)

    @invariant()
    def memory_stays_bounded(self) -> None:
        for swim in self.swims:
            assert len(swim.members()) <= MAX_MEMBERS
            assert len(swim._diss.broadcasts) <= MAX_MEMBERS
            assert len(swim._diss.dedup) <= CONFIG.dedup_cache_size
            assert len(swim._prober._relays) <= CONFIG.max_pending_relays

    def teardown(self) -> None:
        # The attacks stop; every node that kept running is ALIVE everywhere again.
        self.net.run_for(SETTLE_MS)
        for observer in self.swims:
            for swim in self.swims:
                m = observer.member(swim.name)
                assert m is not None and m.status is MemberStatus.ALIVE, (observer.name, m)
            assert observer.local_is_alive(), observer.name


AdversarialMesh.TestCase.settings = settings(
    max_examples=300 if FUZZ else 8,
    stateful_step_count=30 if FUZZ else 12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No shrinking: every example simulates minutes of a cluster, and a failure reports
    # its whole (short) list of steps anyway.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
test_adversarial_mesh = AdversarialMesh.TestCase
