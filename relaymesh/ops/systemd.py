"""What a supervised daemon needs from its supervisor: ``sd_notify`` and signal handling.

``SystemdNotifier`` speaks the sd_notify datagram protocol over ``$NOTIFY_SOCKET``
with the standard library only (no libsystemd binding): ``READY=1`` once listening,
``STOPPING=1`` when draining, ``STATUS=...`` for ``systemctl status``, and
``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` from the event loop — sent from the loop
on purpose, so a wedged loop stops the pings and systemd restarts the process.
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a cheap no-op.

``capture_signals`` installs asyncio signal handlers for the lifetime of a ``with``
block and puts the previous handlers back afterwards (like uvicorn), so a test or
an embedding program gets its own handlers back.

Nothing here raises on a notify failure: supervision is advisory, and a daemon must
not die because its supervisor went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any

from relaymesh.logging import get_logger

__all__ = ["SystemdNotifier", "capture_signals"]

log = get_logger(__name__)

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SystemdNotifier:
    """Send sd_notify messages; a no-op when ``NOTIFY_SOCKET`` is unset.

    Every method returns at once (non-blocking datagram send) and never raises.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET") or None
        # A leading '@' names a Linux abstract socket, spelt with a NUL byte.
        self._address: str | None = ("\0" + path[1:]) if path and path[0] == "@" else path
        self._sock: socket.socket | None = None
        self.watchdog_interval_s = _watchdog_interval_s(env)
        """How often to send WATCHDOG=1 (half of WATCHDOG_USEC); None when not asked."""

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True when it was sent."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), message=assignments[0])
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping the watchdog until cancelled; returns at once when no watchdog is set."""
        interval_s = self.watchdog_interval_s
        if interval_s is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process meant to ping; a child that inherited it must not.
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2


@contextlib.contextmanager
def capture_signals(
    loop: asyncio.AbstractEventLoop, handlers: Mapping[signal.Signals, Callable[[], None]]
) -> Iterator[None]:
    """Run ``handlers[sig]()`` on the event loop for each signal while inside the block.

    On exit the loop's handlers are removed and the previous Python-level handlers
    restored, so a later SIGINT behaves as it did before the block.
    """
    previous: dict[signal.Signals, _SignalHandler] = {}
    try:
        for sig, handler in handlers.items():
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            loop.remove_signal_handler(sig)
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, old)
