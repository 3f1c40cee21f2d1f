"""Builders shared by the membership tests: packets by hand, cores, clusters."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from relaymesh.clock import FakeClock
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.memory import MemoryNetwork
from relaymesh.membership.protocol import MemberChanged, Swim, SwimConfig
from relaymesh.membership.state import Address
from relaymesh.membership.wire import (
    Message,
    decode_packet,
    encode_message,
    frame,
    pack_compound,
    unframe,
)

FAST = SwimConfig(dead_recover_min_ms=1000)


WALL_START_MS = FakeClock().wall_ms()
"""A new FakeClock's wall time: sealed test packets say they were sent then."""


def packet(
    *messages: Message,
    label: str = "",
    keyring: Keyring | None = None,
    sent_at_ms: int = WALL_START_MS,
) -> bytes:
    body = pack_compound([encode_message(m) for m in messages])
    return frame(body, label.encode(), keyring, sent_at_ms)


def read(data: bytes, label: str = "", keyring: Keyring | None = None) -> list[Message]:
    return decode_packet(unframe(data, label.encode(), keyring))


def sent_messages(swim: Swim) -> list[tuple[Address, Message]]:
    """Everything the core wants to send, decoded (drains its outbound)."""
    out: list[tuple[Address, Message]] = []
    for dst, data in swim.take_outbound():
        keyring = swim._keyring
        for msg in read(data, swim.config.label, keyring):
            out.append((dst, msg))
    return out


def core(
    name: str = "a",
    port: int = 7000,
    *,
    clock: FakeClock | None = None,
    config: SwimConfig = FAST,
    seed: int = 1,
    incarnation: int = 0,
    keyring: Keyring | None = None,
) -> tuple[Swim, FakeClock]:
    clock = clock or FakeClock()
    swim = Swim(
        name,
        ("127.0.0.1", port),
        config,
        clock,
        random.Random(seed),
        keyring=keyring,
        incarnation=incarnation,
    )
    return swim, clock


class Cluster:
    """N cores on a memory network, joined through the first, with every event kept."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 7,
        loss: float = 0.0,
        delay_ms: tuple[int, int] = (1, 5),
        config: SwimConfig = FAST,
        keyrings: Sequence[Keyring | None] | None = None,
        labels: Sequence[str] | None = None,
        join: bool = True,
    ) -> None:
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.events: list[tuple[int, str, MemberChanged]] = []
        self.net = MemoryNetwork(
            self.clock, self.rng, loss=loss, delay_ms=delay_ms, event_sink=self._sink
        )
        self.config = config
        self.swims: list[Swim] = []
        for i in range(n):
            cfg = config if labels is None else replace(config, label=labels[i])
            keyring = None if keyrings is None else keyrings[i]
            swim = Swim(
                f"n{i}",
                self.address(i),
                cfg,
                self.clock,
                random.Random(seed * 1000 + i),
                keyring=keyring,
            )
            self.swims.append(swim)
            self.net.add(swim)
        if join:
            for i in range(1, n):
                self.net.join(self.address(i), [self.address(0)])

    @staticmethod
    def address(i: int) -> Address:
        return ("10.0.0.1", 8000 + i)

    def _sink(self, observer: str, event: MemberChanged) -> None:
        self.events.append((self.clock.monotonic_ms(), observer, event))

    def run(self, ms: int) -> None:
        self.net.run_for(ms)

    def statuses(self, name: str, *, among: Sequence[Swim] | None = None) -> set[str]:
        out: set[str] = set()
        for swim in among if among is not None else self.net.swims():
            if swim.name == name:
                continue
            m = swim.member(name)
            out.add("UNKNOWN" if m is None else m.status.value)
        return out

    def converged(self, among: Sequence[Swim] | None = None) -> bool:
        group = list(among if among is not None else self.net.swims())
        names = {s.name for s in group}
        return all(
            {m.name for m in s.members() if m.status.value == "ALIVE"} >= names for s in group
        )
