"""Per-source token buckets: refill, burst, and a bounded table."""

from __future__ import annotations

from relaymesh.clock import FakeClock
from relaymesh.membership.ratelimit import SourceLimiter


def test_a_source_gets_its_burst_then_its_rate() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(10, 5, clock.monotonic_ms)
    assert sum(limiter.allow("h") for _ in range(20)) == 5
    assert limiter.allow("other")  # buckets are per source
    clock.advance(300)  # 3 tokens back at 10/s
    assert sum(limiter.allow("h") for _ in range(20)) == 3
    clock.advance(60_000)
    assert sum(limiter.allow("h") for _ in range(20)) == 5  # never above the burst


def test_the_table_of_sources_is_bounded() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(10, 5, clock.monotonic_ms, max_sources=100)
    for i in range(10_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
