"""Resource guard: before claiming, is this host too busy to take more work?

Checks the 1-minute load average against ``max_load`` (default 4 x CPU count),
``MemAvailable`` against ``min_available_mb`` and swap in use against
``max_swap_pct``. ``check`` is pure; ``read_system`` reads the host (Linux
``/proc/meminfo``; on other systems memory and swap are unknown and not checked).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from relaymesh.settings import GuardSettings

__all__ = ["GuardVerdict", "Readings", "ResourceGuard", "check", "parse_meminfo", "read_system"]


@dataclass(frozen=True, slots=True)
class Readings:
    load_1m: float | None
    available_mb: float | None
    swap_used_pct: float | None
    cpu_count: int


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    reason: str
    """Metric label: ``load``, ``memory`` or ``swap``."""
    detail: str
    """For the log: the reading and the threshold."""


def check(readings: Readings, settings: GuardSettings) -> GuardVerdict | None:
    """The first threshold the host is over, or None when it may claim."""
    max_load = settings.max_load if settings.max_load is not None else 4.0 * readings.cpu_count
    if readings.load_1m is not None and readings.load_1m > max_load:
        return GuardVerdict("load", f"load average {readings.load_1m:.2f} > max_load {max_load:g}")
    if readings.available_mb is not None and readings.available_mb < settings.min_available_mb:
        return GuardVerdict(
            "memory",
            f"available memory {readings.available_mb:.0f} MB < min_available_mb "
            f"{settings.min_available_mb}",
        )
    if readings.swap_used_pct is not None and readings.swap_used_pct > settings.max_swap_pct:
        return GuardVerdict(
            "swap",
            f"swap used {readings.swap_used_pct:.1f}% > max_swap_pct {settings.max_swap_pct:g}",
        )
    return None


def parse_meminfo(text: str) -> tuple[float | None, float | None]:
    """``(MemAvailable MB, swap used %)`` from ``/proc/meminfo`` text."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0])  # kB
    available = fields.get("MemAvailable")
    available_mb = available / 1024.0 if available is not None else None
    swap_total = fields.get("SwapTotal")
    swap_free = fields.get("SwapFree")
    swap_pct: float | None = None
    if swap_total is not None and swap_free is not None:
        swap_pct = 0.0 if swap_total == 0 else 100.0 * (swap_total - swap_free) / swap_total
    return available_mb, swap_pct


def read_system(meminfo_path: str = "/proc/meminfo") -> Readings:
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:
        load = None
    try:
        with open(meminfo_path, encoding="ascii", errors="replace") as fh:
            available_mb, swap_pct = parse_meminfo(fh.read())
    except OSError:
        available_mb, swap_pct = None, None
    return Readings(load, available_mb, swap_pct, os.cpu_count() or 1)


class ResourceGuard:
    """Caches readings for ``cache_ms`` so a busy claim loop does not read /proc each
    round. ``read`` and ``now_ms`` are injectable for tests."""

    def __init__(
        self,
        read: Callable[[], Readings] = read_system,
        *,
        now_ms: Callable[[], int],
        cache_ms: int = 1000,
    ) -> None:
        self._read = read
        self._now_ms = now_ms
        self._cache_ms = cache_ms
        self._readings: Readings | None = None
        self._read_at_ms = 0

    def check(self, settings: GuardSettings) -> GuardVerdict | None:
        now = self._now_ms()
        if self._readings is None or now - self._read_at_ms >= self._cache_ms:
            self._readings = self._read()
            self._read_at_ms = now
        return check(self._readings, settings)
