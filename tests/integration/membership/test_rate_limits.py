"""Per-source rate limits of the real driver on real loopback sockets.

In-process ``MembershipService``s with small limits, so the test does not depend on
how fast a loaded machine can send: the attacker's socket binds 127.0.0.2 and sends
in batches, yielding to the event loop between them so the node reads each batch
(a datagram the kernel dropped on a full buffer would never reach the limiter).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from relaymesh.membership.driver import MembershipService
from relaymesh.membership.ratelimit import SourceLimits
from relaymesh.membership.wire import Ping, encode_message, frame, pack_compound
from relaymesh.model import MemberStatus
from relaymesh.ops.metrics import Metrics
from relaymesh.settings import GossipSettings
from tests.conftest import async_wait_until

FAST = GossipSettings(probe_interval_ms=200, probe_timeout_ms=100, gossip_interval_ms=100)
LIMITS = SourceLimits(
    udp_datagrams_per_s=100, udp_datagrams_burst=200, tcp_accepts_per_s=2, tcp_accepts_burst=4
)
ATTACKER_HOST = "127.0.0.2"

Factory = Callable[..., MembershipService]


@pytest.fixture
async def services() -> AsyncIterator[Factory]:
    made: list[MembershipService] = []

    def make(name: str, seeds: list[str] | None = None) -> MembershipService:
        service = MembershipService(
            name=name,
            bind="127.0.0.1:0",
            advertise=None,
            seeds=seeds or [],
            settings=FAST,
            metrics=Metrics(),
            source_limits=LIMITS,
        )
        made.append(service)
        return service

    yield make
    for service in made:
        await service.stop(leave=False, timeout_s=1.0)


async def pair(services: Factory) -> tuple[MembershipService, MembershipService]:
    a = services("a")
    await a.start()
    b = services("b", seeds=[f"{a.address[0]}:{a.address[1]}"])
    await b.start()

    async def both_alive() -> bool:
        ma, mb = a.member("b"), b.member("a")
        return (
            ma is not None
            and mb is not None
            and ma.status is MemberStatus.ALIVE
            and mb.status is MemberStatus.ALIVE
        )

    await async_wait_until(both_alive, 20, what="a and b to see each other")
    return a, b


async def test_a_datagram_flood_from_one_host_is_dropped_as_rate_limit(
    services: Factory,
) -> None:
    a, b = await pair(services)
    junk = frame(pack_compound([encode_message(Ping(1, "not-me"))]), b"", None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER_HOST, 0))
    sock.setblocking(False)
    try:
        for _ in range(60):  # bounded: 3,000 datagrams
            for _ in range(50):
                sock.sendto(junk, a.address)
            await asyncio.sleep(0.001)
    finally:
        sock.close()

    async def limited() -> bool:
        return a.drops().get("rate_limit", 0) >= 1000

    await async_wait_until(limited, 10, what="the flood to be rate limited")
    # The cluster's own traffic (from 127.0.0.1) is not: b stays ALIVE for a.
    await asyncio.sleep(0)
    member = a.member("b")
    assert member is not None and member.status is MemberStatus.ALIVE
    assert b.drops().get("rate_limit", 0) == 0


async def test_push_pull_accepts_from_one_host_are_rate_limited(services: Factory) -> None:
    a, _b = await pair(services)
    loop = asyncio.get_running_loop()
    for _ in range(30):  # bounded; far above 2/s with a burst of 4
        sock = socket.socket()
        sock.bind((ATTACKER_HOST, 0))
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, a.address)
            await asyncio.sleep(0.001)
        finally:
            sock.close()

    async def limited() -> bool:
        return a.drops().get("rate_limit", 0) >= 10

    await async_wait_until(limited, 10, what="accepts to be rate limited")
