"""Two ``MembershipService``s in one event loop on real UDP/TCP loopback sockets."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relaymesh.membership import driver
from relaymesh.membership.driver import MembershipService
from relaymesh.membership.protocol import MemberChanged
from relaymesh.model import MemberStatus
from relaymesh.ops.metrics import Metrics
from relaymesh.settings import GossipSettings
from tests.conftest import async_wait_until

FAST = GossipSettings(
    probe_interval_ms=200,
    probe_timeout_ms=100,
    gossip_interval_ms=100,
    push_pull_interval_ms=1000,
)

ServiceFactory = Callable[..., MembershipService]


@pytest.fixture
async def services() -> AsyncIterator[ServiceFactory]:
    made: list[MembershipService] = []

    def make(
        name: str,
        seeds: list[str] | None = None,
        settings: GossipSettings = FAST,
        state_dir: Path | None = None,
    ) -> MembershipService:
        service = MembershipService(
            name=name,
            bind="127.0.0.1:0",
            advertise=None,
            seeds=seeds or [],
            settings=settings,
            metrics=Metrics(),
            state_dir=state_dir,
            metadata={"role": "test"},
        )
        made.append(service)
        return service

    yield make
    for service in made:
        await service.stop(leave=False, timeout_s=1.0)


def status_of(service: MembershipService, name: str) -> MemberStatus | None:
    member = service.member(name)
    return member.status if member is not None else None


def addr(service: MembershipService) -> str:
    return f"{service.address[0]}:{service.address[1]}"


async def test_two_services_join_see_each_other_and_see_leave(
    services: ServiceFactory, tmp_path: Path
) -> None:
    a = services("a", state_dir=tmp_path)
    await a.start()
    assert a.address[1] != 0  # port 0 asked, the real port reported
    assert a.local_is_alive()
    b = services("b", seeds=[addr(a)], state_dir=tmp_path)
    events: list[MemberChanged] = []
    b.subscribe(events.append)
    await b.start()

    async def both_alive() -> bool:
        return status_of(a, "b") == MemberStatus.ALIVE and status_of(b, "a") == MemberStatus.ALIVE

    await async_wait_until(both_alive, 10, what="a and b to see each other ALIVE")
    assert any(e.name == "a" and e.status == MemberStatus.ALIVE for e in events)
    assert {m["name"] for m in b.members_json()} == {"a", "b"}
    assert b.health()["ok"] is True
    assert b.health()["members"]["alive"] == 2

    # Anti-entropy finds the two views equal: that closes a convergence measurement.
    async def converged() -> bool:
        return a.last_convergence_s is not None or b.last_convergence_s is not None

    await async_wait_until(converged, 10, what="a push/pull to find the views equal")
    b.update_metrics()
    text = b.metrics.render().decode()
    assert 'relaymesh_members{status="alive"} 2.0' in text
    assert 'relaymesh_packets_dropped_total{reason="auth"} 0.0' in text
    assert _sample(text, "relaymesh_gossip_packets_sent_total") > 0

    async def rtt_observed() -> bool:
        b.update_metrics()
        return _sample(b.metrics.render().decode(), "relaymesh_probe_rtt_seconds_count") > 0

    await async_wait_until(rtt_observed, 5, what="a probe RTT in the histogram")

    incarnation_before = b.member("b").incarnation  # type: ignore[union-attr]
    await b.stop(leave=True, timeout_s=2.0)
    assert not b.local_is_alive()

    async def a_sees_left() -> bool:
        return status_of(a, "b") == MemberStatus.LEFT

    await async_wait_until(a_sees_left, 5, what="a to see b LEFT")

    # Restarted under its old name: a higher incarnation, ALIVE again at once.
    b2 = services("b", seeds=[addr(a)], state_dir=tmp_path)
    await b2.start()
    assert b2.member("b").incarnation > incarnation_before  # type: ignore[union-attr]

    async def a_sees_b_back() -> bool:
        return status_of(a, "b") == MemberStatus.ALIVE

    await async_wait_until(a_sees_b_back, 10, what="a to see b ALIVE again")


async def test_default_timings_join_and_leave(services: ServiceFactory) -> None:
    # The LAN profile (probe 1 s, push/pull 30 s): joining must not wait for a
    # push/pull round, and a LEAVE must not wait for failure detection.
    a = services("a", settings=GossipSettings())
    await a.start()
    b = services("b", seeds=[addr(a)], settings=GossipSettings())
    await b.start()

    async def joined() -> bool:
        return status_of(a, "b") == MemberStatus.ALIVE and status_of(b, "a") == MemberStatus.ALIVE

    await async_wait_until(joined, 5, what="join at default timings")
    await b.stop(leave=True)

    async def left() -> bool:
        return status_of(a, "b") == MemberStatus.LEFT

    await async_wait_until(left, 5, what="LEFT at default timings")


async def test_seed_started_later_is_joined_by_retry(services: ServiceFactory) -> None:
    a = services("a")
    await a.start()
    port = a.address[1]
    await a.stop(leave=False)
    # b's only seed is down; b keeps retrying with backoff until it comes up.
    b = services("b", seeds=[f"127.0.0.1:{port}"])
    with capture_logs() as logs:
        await b.start()

        async def retried() -> bool:
            return sum(e["event"] == "join_seed_failed" for e in logs) >= 2

        await async_wait_until(retried, 5, what="b to try its seed twice")
    assert not b.joined
    a2 = MembershipService(
        name="a",
        bind=f"127.0.0.1:{port}",
        advertise=None,
        seeds=[],
        settings=FAST,
        metrics=Metrics(),
    )
    await a2.start()
    try:

        async def joined() -> bool:
            return status_of(b, "a") == MemberStatus.ALIVE and b.joined

        await async_wait_until(joined, 10, what="b to join a once it is up")
    finally:
        await a2.stop(leave=False)


async def test_bad_tcp_frames_are_dropped_and_counted(
    services: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "_PUSHPULL_READ_TIMEOUT_S", 0.3)
    a = services("a")
    await a.start()
    host, port = a.address

    async def send(raw: bytes, hold_s: float = 0.0) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(raw)
        await writer.drain()
        if hold_s:
            await asyncio.sleep(hold_s)
        try:
            return await asyncio.wait_for(reader.read(), 2.0)
        finally:
            writer.close()

    # Over the cap: refused on the header alone, nothing allocated.
    assert await send(struct.pack(">I", 2**31)) == b""
    # Garbage inside a well-formed frame: the core refuses it.
    assert await send(struct.pack(">I", 5) + b"\xc1\xff\x00\x01\x02") == b""
    # Slow loris: half a frame, then silence until the server gives up.
    assert await send(struct.pack(">I", 100) + b"x" * 10) == b""
    # Cut short: the peer closes mid-frame.
    _, writer = await asyncio.open_connection(host, port)
    writer.write(struct.pack(">I", 100) + b"y")
    writer.close()

    async def counted() -> bool:
        return sum(a.drops().values()) >= 4

    await async_wait_until(counted, 5, what="4 TCP drops counted")
    # Each by its reason: the cap, the two undecodable frames (garbage, cut short), the
    # slow loris.
    assert {r: n for r, n in a.drops().items() if n} == {"too_large": 1, "decode": 2, "timeout": 1}
    assert a.local_is_alive()
    a.update_metrics()
    assert 'relaymesh_packets_dropped_total{reason="too_large"}' in a.metrics.render().decode()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")
