"""Thousands of random and mutated datagrams, and garbage TCP frames, at a live node.

The node must stay up, keep its members, and count what it dropped by reason.
Valid packets to mutate come from a real protocol core run in this process, so the
mutations start from bytes that pass every check and then break one of them.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from pathlib import Path

import pytest

from relaymesh.clock import FakeClock
from relaymesh.membership.driver import swim_config
from relaymesh.membership.protocol import Swim
from relaymesh.settings import GossipSettings
from tests.integration.membership.conftest import (
    GossipFactory,
    free_port,
    metric_value,
    wait_for,
    write_seeds,
)

pytestmark = pytest.mark.slow

DATAGRAMS = 4000


def valid_packets(target: tuple[str, int], rogue_port: int) -> list[bytes]:
    """Real packets a joining core would send to ``target`` (pings, gossip, a state)."""
    clock = FakeClock()
    rogue = Swim(
        "rogue",
        ("127.0.0.1", rogue_port),
        swim_config(GossipSettings(probe_interval_ms=200, probe_timeout_ms=100)),
        clock,
        random.Random(3),
        incarnation=1,
    )
    rogue.join([target])
    packets = [data for _, data in rogue.take_outbound()]
    for _ in range(20):
        clock.advance(100)
        rogue.tick()
        packets.extend(data for _, data in rogue.take_outbound())
    packets.append(rogue.encode_state(join=True))
    return [p for p in packets if p]


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    choice = rng.randrange(6)
    if choice == 0 and data:  # flip a few bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif choice == 1 and data:  # truncate
        del data[rng.randrange(len(data)) :]
    elif choice == 2:  # append junk
        data += rng.randbytes(rng.randint(1, 64))
    elif choice == 3 and data:  # overwrite a byte with an interesting value
        data[rng.randrange(len(data))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xDC, 0xFF])
    elif choice == 4 and len(data) > 4:  # splice two halves out of order
        cut = rng.randrange(1, len(data))
        data = data[cut:] + data[:cut]
    else:  # inflate: huge lengths and repeats
        data = data * rng.randint(2, 40)
    return bytes(data)


def test_random_and_mutated_datagrams_and_garbage_frames(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    target = gossip_procs("target", seeds, port=ports[0])
    peer = gossip_procs("peer", seeds, port=ports[1])
    procs = [target, peer]

    def converged() -> bool:
        view = target.members()
        return view is not None and view.get("peer") == "ALIVE" and view.get("target") == "ALIVE"

    wait_for(converged, 30, "target and peer to converge", procs)

    rng = random.Random(20240601)
    address = ("127.0.0.1", target.port)
    corpus = valid_packets(address, free_port())
    assert corpus, "the core produced no packets to mutate"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(DATAGRAMS):
            kind = i % 3
            if kind == 0:
                payload = rng.randbytes(rng.randint(0, 1500))
            elif kind == 1:
                payload = mutate(rng, rng.choice(corpus))
            else:
                payload = bytes([rng.choice([1, 2]), rng.randint(0, 255)]) + rng.randbytes(
                    rng.randint(0, 200)
                )
            sock.sendto(payload[:65000], address)
            if i % 200 == 199:
                time.sleep(0.01)  # let the node read; a full buffer drops in the kernel
    finally:
        sock.close()

    frames = [
        struct.pack(">I", 2**31),  # over the cap
        struct.pack(">I", 16) + b"\x00" * 16,  # well-framed garbage
        struct.pack(">I", 50) + b"short",  # cut short
        *(struct.pack(">I", len(p)) + p for p in (mutate(rng, corpus[-1]) for _ in range(20))),
        *(rng.randbytes(rng.randint(1, 300)) for _ in range(20)),
    ]
    for frame in frames:
        with socket.create_connection(address, timeout=2) as conn:
            conn.sendall(frame)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(2)
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    assert target.alive(), target.log_text()[-3000:]
    wait_for(converged, 15, "target to keep peer ALIVE", procs)

    def drops(reason: str) -> float:
        return metric_value(
            target.metrics(), "relaymesh_packets_dropped_total", f'reason="{reason}"'
        )

    def counted() -> bool:
        return drops("decode") + drops("schema") >= DATAGRAMS // 4 and drops("too_large") >= 1

    wait_for(counted, 10, "drops to be counted", procs)
    text = target.metrics()
    total = sum(
        metric_value(text, "relaymesh_packets_dropped_total", f'reason="{r}"')
        for r in ("decode", "schema", "auth", "label", "too_large", "timeout")
    )
    # Most, not all: under load the kernel may drop some before the node reads them.
    assert total >= DATAGRAMS // 3, text
    assert "internal" not in text, "a peer's bytes reached an unexpected error path"
