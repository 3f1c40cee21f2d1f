"""What a supervised daemon needs from its supervisor: ``sd_notify`` and signal handling.

``SystemdNotifier`` speaks the sd_notify datagram protocol over ``$NOTIFY_SOCKET``
with the standard library only (no libsystemd binding): ``READY=1`` once listening,
``STOPPING=1`` when draining, ``STATUS=...`` for ``systemctl status``, and
``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` from the event loop — sent from the loop
on purpose, so a wedged loop stops the pings and systemd restarts the process. It
never waits for the store or the worker: a store outage is ``/healthz``'s business
(docs/health.md), and a restart would not bring the store back.
Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a cheap no-op.

``capture_signals`` routes signals to callbacks on the event loop for the lifetime of a
``with`` block and puts the previous handlers back afterwards (like uvicorn), so a test
or an embedding program gets its own handlers back. A daemon wraps its whole command in
``daemon_signals()``, so that outside that block SIGTERM, SIGINT and SIGHUP never take
their default action (being killed by the signal: exit status -15 for SIGTERM): while
it starts they are held, and acted on as soon as the block starts; once its shutdown is
done they are ignored, so a repeated SIGTERM (systemd's stop, then a script's) cannot
turn a clean exit after the leave into a kill.

Nothing here raises on a notify failure: supervision is advisory, and a daemon must
not die because its supervisor went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any

from relaymesh.logging import get_logger

__all__ = [
    "DAEMON_SIGNALS",
    "SignalLatch",
    "SystemdNotifier",
    "capture_signals",
    "daemon_signals",
]

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


DAEMON_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""What a supervisor or an operator sends a daemon: stop, interrupt, reload."""


class SignalLatch:
    """A Python-level signal handler that only records which signals arrived, in order.

    Installed by ``daemon_signals`` where a signal's default action would kill the
    process at a moment it cannot be handled on the event loop yet or any more;
    ``capture_signals`` hands what it recorded to the loop's handlers.
    """

    def __init__(self) -> None:
        self._received: list[signal.Signals] = []

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signal.Signals(signum))

    @property
    def received(self) -> list[signal.Signals]:
        return list(self._received)

    def take(self, wanted: Collection[signal.Signals]) -> list[signal.Signals]:
        """Remove and return the recorded signals in ``wanted``, oldest first."""
        taken = [s for s in self._received if s in wanted]
        self._received = [s for s in self._received if s not in wanted]
        return taken


@contextlib.contextmanager
def daemon_signals(signals: Iterable[signal.Signals] = DAEMON_SIGNALS) -> Iterator[SignalLatch]:
    """A daemon's whole run, from its first line: ``signals`` never kill the process.

    Inside, outside any ``capture_signals`` block, they are recorded by a
    ``SignalLatch``; ``capture_signals`` acts on what arrived before it (a SIGTERM while
    the process was still starting) and puts the latch back when its block ends. On
    exit they are ignored: the work is done, and CPython's finalization resets every
    signal that has a Python-level handler to SIG_DFL (``_PySignal_Fini``), so a
    handler, a latch included, cannot cover the last moments of the process, while
    SIG_IGN is left alone. Main thread only.
    """
    wanted = tuple(signals)
    latch = SignalLatch()
    for sig in wanted:
        signal.signal(sig, latch)
    try:
        yield latch
    finally:
        for sig in wanted:
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def capture_signals(
    loop: asyncio.AbstractEventLoop, handlers: Mapping[signal.Signals, Callable[[], None]]
) -> Iterator[None]:
    """Run ``handlers[sig]()`` on the event loop for each signal while inside the block.

    Enter it from a coroutine on ``loop``, in the main thread. Signals that a
    ``SignalLatch`` (the previous handler) recorded before the block are handled on
    entry, in the order they came. On exit the previous Python-level handlers are
    restored, so a later SIGINT behaves as it did before the block.

    Plain ``signal.signal`` handlers, not ``loop.add_signal_handler``: removing a loop
    handler resets the signal to SIG_DFL before the old handler can be put back, and a
    SIGTERM in that gap killed the process. Swapping one Python-level handler for
    another leaves no such gap. They still run promptly: the loop wakes on the signal
    (uvloop and asyncio keep a wake-up fd), and CPython runs Python-level handlers in
    the main thread, where the loop runs.
    """

    def deliver(signum: int, _frame: FrameType | None) -> None:
        # This may interrupt any code on the main thread: only hand the work to the loop.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(handlers[signal.Signals(signum)])

    previous: dict[signal.Signals, _SignalHandler] = {}
    try:
        for sig in handlers:
            previous[sig] = signal.signal(sig, deliver)
        for latch in {id(h): h for h in previous.values() if isinstance(h, SignalLatch)}.values():
            for sig in latch.take(handlers.keys()):
                handlers[sig]()
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
