"""The watchdog of a real ``Node`` in this process: ``WATCHDOG=1`` comes from the event
loop, so a loop blocked by a synchronous call stops it while every thread runs on;
a store that is down does not.

(``tests/e2e/test_health.py`` checks the same through ``node run`` processes: pings
while the store is missing, none while the process is stopped.)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from relaymesh.node import Node
from relaymesh.settings import load_settings
from tests.conftest import async_wait_until

PING_INTERVAL_S = 0.05  # WATCHDOG_USEC / 2


class PingLog:
    """Reads the notify socket on its own thread and stamps every WATCHDOG=1."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.02)
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data:
                self.stamps.append(time.monotonic())

    def between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.stamps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


async def test_pings_stop_while_the_loop_is_blocked_and_not_while_the_store_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = PingLog(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(PING_INTERVAL_S * 2 * 1_000_000)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    settings = load_settings(
        None,
        {
            "node": {
                "name": "wd",
                "bind": "127.0.0.1:0",
                # A store that cannot open: the node keeps retrying and turns unhealthy.
                "store_url": f"sqlite:///{tmp_path / 'missing' / 'x.db'}",
                "state_dir": str(tmp_path),
                "store_unhealthy_after_s": 0.3,
            }
        },
    )
    node = Node(settings)
    await node.startup()
    try:
        await async_wait_until(
            lambda: _async(not node.health()["ok"]), 10, what="the node unhealthy"
        )
        assert node.health()["store"] == "unreachable"
        start = time.monotonic()
        await async_wait_until(
            lambda: _async(pings.between(start, time.monotonic()) >= 5),
            5,
            what="pings while the store is down",
        )

        # A synchronous call on the loop (what a wedged loop looks like from outside).
        blocked_from = time.monotonic()
        time.sleep(1.0)
        blocked_to = time.monotonic()
        await async_wait_until(
            lambda: _async(pings.between(blocked_to, time.monotonic()) >= 3),
            5,
            what="pings once the loop runs again",
        )
        # At most the one ping due right as the block began can have been in flight.
        grace = PING_INTERVAL_S
        assert pings.between(blocked_from + grace, blocked_to) == 0
    finally:
        await node.shutdown()
        pings.close()


async def _async(value: bool) -> bool:
    await asyncio.sleep(0)
    return value
