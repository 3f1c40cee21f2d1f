"""Time, injected.

Everything that needs the time takes a ``Clock``; nothing below the drivers calls
``time`` directly. ``monotonic_ms`` is for durations and timers (never goes back);
``wall_ms`` is for timestamps that leave the process (logs, store rows, incarnations).
``FakeClock`` is the virtual clock used by unit tests and the simulator.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def monotonic_ms(self) -> int:
        """Milliseconds on a clock that never goes backwards; only differences mean anything."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch; may jump when the host's clock is set."""
        ...


class SystemClock:
    """The real clocks of this host."""

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that moves only when told to. Wall time starts at ``wall_start_ms``."""

    def __init__(self, start_ms: int = 0, wall_start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._wall_offset_ms = wall_start_ms - start_ms

    def monotonic_ms(self) -> int:
        return self._now_ms

    def wall_ms(self) -> int:
        return self._now_ms + self._wall_offset_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a FakeClock never goes backwards")
        self._now_ms += ms

    def set(self, now_ms: int) -> None:
        if now_ms < self._now_ms:
            raise ValueError("a FakeClock never goes backwards")
        self._now_ms = now_ms
