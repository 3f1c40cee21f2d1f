"""The socket shell on its own: framed push/pull, UDP endpoint, sd_notify, signal capture."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
from pathlib import Path

import pytest

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.transport import (
    PushPullServer,
    TransportError,
    open_udp,
    pushpull_request,
)
from relaymesh.ops.systemd import SignalLatch, SystemdNotifier, capture_signals
from tests.conftest import async_wait_until


async def test_pushpull_round_trip_and_refusals() -> None:
    drops: list[str] = []

    def handler(request: bytes, peer: tuple[str, int]) -> bytes | None:
        if request == b"refuse":
            return None
        if request == b"bad":
            raise ProtocolError("schema")
        return request[::-1]

    server = PushPullServer(handler, on_drop=drops.append, max_frame_bytes=1024)
    port = await server.start("127.0.0.1", 0)
    address = ("127.0.0.1", port)
    try:
        assert await pushpull_request(address, b"abc", timeout_s=2) == b"cba"
        with pytest.raises(TransportError):
            await pushpull_request(address, b"refuse", timeout_s=2)
        with pytest.raises(TransportError):
            await pushpull_request(address, b"bad", timeout_s=2)
        with pytest.raises(TransportError):  # the server will not read past the cap
            await pushpull_request(address, b"x" * 2048, timeout_s=2)
        assert drops == ["schema", "too_large"]
        # A reply over the client's own cap is refused too.
        with pytest.raises(ProtocolError) as err:
            await pushpull_request(address, b"y" * 100, timeout_s=2, max_frame_bytes=10)
        assert err.value.reason == "too_large"
    finally:
        await server.close()
    with pytest.raises(TransportError):  # nobody listening any more
        await pushpull_request(address, b"abc", timeout_s=2)


async def test_pushpull_server_bounds_connections_and_slow_peers() -> None:
    drops: list[str] = []
    server = PushPullServer(
        lambda req, peer: req, on_drop=drops.append, read_timeout_s=0.3, max_connections=2
    )
    port = await server.start("127.0.0.1", 0)
    writers = []
    try:
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(struct.pack(">I", 10) + b"ab")  # and then nothing: slow loris
            writers.append(writer)

        async def counted() -> bool:
            return sorted(drops) == ["overload", "timeout", "timeout"]

        await async_wait_until(counted, 3, what="one overload and two timeouts")
        # Still serving after all that.
        assert await pushpull_request(("127.0.0.1", port), b"ok", timeout_s=2) == b"ok"
    finally:
        for writer in writers:
            writer.close()
        await server.close()


async def test_udp_endpoint_delivers_and_survives_handler_errors() -> None:
    got: list[tuple[bytes, tuple[str, int]]] = []

    def on_packet(data: bytes, src: tuple[str, int]) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        got.append((data, src))

    endpoint = await open_udp("127.0.0.1", 0, on_packet)
    try:
        endpoint.send(endpoint.local_address, b"boom")
        endpoint.send(endpoint.local_address, b"hello")

        async def delivered() -> bool:
            return [d for d, _ in got] == [b"hello"]

        await async_wait_until(delivered, 2, what="the datagram after the failing one")
        assert got[0][1] == endpoint.local_address
    finally:
        endpoint.close()
    endpoint.send(("127.0.0.1", 9), b"after close")  # a no-op, not an error


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


async def test_sd_notify_messages_and_watchdog(tmp_path: Path) -> None:
    sock = _notify_socket(tmp_path / "notify")
    try:
        notifier = SystemdNotifier(
            {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"}
        )
        assert notifier.enabled
        assert notifier.watchdog_interval_s == pytest.approx(0.05)
        assert notifier.ready(status="up")
        assert sock.recv(1024) == b"READY=1\nSTATUS=up"
        # Read on the event loop (the pings come from a task on it), each under a deadline.
        loop = asyncio.get_running_loop()
        sock.setblocking(False)

        async def recv() -> bytes:
            return await asyncio.wait_for(loop.sock_recv(sock, 1024), 2)

        task = asyncio.create_task(notifier.run_watchdog())
        assert await recv() == b"WATCHDOG=1"
        assert await recv() == b"WATCHDOG=1"  # it keeps pinging
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert notifier.stopping()
        rest = await recv()
        while rest == b"WATCHDOG=1":  # one more may have gone out before the cancel
            rest = await recv()
        assert rest.startswith(b"STOPPING=1")
        notifier.close()
    finally:
        sock.close()


async def test_sd_notify_is_a_no_op_without_systemd(tmp_path: Path) -> None:
    quiet = SystemdNotifier({})
    assert not quiet.enabled and not quiet.ready()
    await quiet.run_watchdog()  # returns at once
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to ping.
    other = SystemdNotifier(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert other.watchdog_interval_s is None or os.getpid() == 1
    # A vanished supervisor socket is logged, never raised.
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not gone.ready()
    gone.close()


async def test_capture_signals_runs_handlers_and_restores_previous() -> None:
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGHUP)
    seen = asyncio.Event()
    with capture_signals(loop, {signal.SIGHUP: seen.set}):
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(seen.wait(), 2)
    assert signal.getsignal(signal.SIGHUP) == before


async def test_capture_signals_handles_what_a_latch_held_and_puts_the_latch_back() -> None:
    loop = asyncio.get_running_loop()
    latch = SignalLatch()
    before = signal.signal(signal.SIGUSR1, latch)
    try:
        # Arrives before the loop's handlers exist: held, neither lost nor fatal.
        os.kill(os.getpid(), signal.SIGUSR1)  # CPython runs the handler before kill returns
        assert latch.received == [signal.SIGUSR1]
        calls: list[int] = []
        second = asyncio.Event()

        def handler() -> None:
            calls.append(1)
            if len(calls) == 2:
                second.set()

        with capture_signals(loop, {signal.SIGUSR1: handler}):
            assert calls == [1]  # the held one, handled on entry before the block's body
            assert latch.received == []
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.wait_for(second.wait(), 2)
        # The latch again, with no SIG_DFL in between: a late signal is only recorded.
        assert signal.getsignal(signal.SIGUSR1) is latch
        os.kill(os.getpid(), signal.SIGUSR1)
        assert latch.received == [signal.SIGUSR1]
        assert calls == [1, 1]
    finally:
        signal.signal(signal.SIGUSR1, before)
