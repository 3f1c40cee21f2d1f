from __future__ import annotations

from pathlib import Path

from relaymesh.clock import FakeClock
from relaymesh.settings import GuardSettings
from relaymesh.work.guard import Readings, ResourceGuard, check, parse_meminfo, read_system

MEMINFO = """MemTotal:       16000000 kB
MemFree:         1000000 kB
MemAvailable:    2048000 kB
SwapTotal:       1000000 kB
SwapFree:         250000 kB
"""


def ok() -> Readings:
    return Readings(load_1m=1.0, available_mb=4096, swap_used_pct=0.0, cpu_count=2)


def test_healthy_host_may_claim() -> None:
    assert check(ok(), GuardSettings()) is None


def test_load_default_is_four_times_cpus() -> None:
    r = Readings(load_1m=8.5, available_mb=4096, swap_used_pct=0, cpu_count=2)
    verdict = check(r, GuardSettings())
    assert verdict is not None
    assert verdict.reason == "load"
    assert "8.50" in verdict.detail and "max_load 8" in verdict.detail
    assert check(Readings(8.0, 4096, 0, 2), GuardSettings()) is None


def test_load_explicit_threshold() -> None:
    verdict = check(Readings(1.5, 4096, 0, 2), GuardSettings(max_load=1.0))
    assert verdict is not None and verdict.reason == "load"


def test_memory_low() -> None:
    verdict = check(Readings(0.1, 10, 0, 2), GuardSettings(min_available_mb=64))
    assert verdict is not None
    assert verdict.reason == "memory"
    assert "10 MB" in verdict.detail


def test_swap_high() -> None:
    verdict = check(Readings(0.1, 4096, 95.0, 2), GuardSettings(max_swap_pct=90))
    assert verdict is not None and verdict.reason == "swap"


def test_unknown_readings_are_not_checked() -> None:
    assert check(Readings(None, None, None, 1), GuardSettings()) is None


def test_parse_meminfo() -> None:
    available, swap = parse_meminfo(MEMINFO)
    assert available == 2000.0
    assert swap == 75.0
    assert parse_meminfo("SwapTotal: 0 kB\nSwapFree: 0 kB\n") == (None, 0.0)


def test_read_system_reads_a_meminfo_file(tmp_path: Path) -> None:
    path = tmp_path / "meminfo"
    path.write_text(MEMINFO)
    r = read_system(str(path))
    assert r.available_mb == 2000.0
    assert r.swap_used_pct == 75.0
    assert r.cpu_count >= 1
    missing = read_system(str(tmp_path / "nope"))
    assert missing.available_mb is None


def test_guard_caches_readings() -> None:
    clock = FakeClock()
    calls: list[int] = []
    readings = [Readings(100.0, 4096, 0, 1), ok()]

    def read() -> Readings:
        calls.append(1)
        return readings[min(len(calls) - 1, 1)]

    guard = ResourceGuard(read, now_ms=clock.monotonic_ms, cache_ms=1000)
    assert guard.check(GuardSettings()) is not None
    clock.advance(500)
    assert guard.check(GuardSettings()) is not None
    assert len(calls) == 1
    clock.advance(500)
    assert guard.check(GuardSettings()) is None
    assert len(calls) == 2
