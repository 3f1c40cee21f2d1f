"""The node's own recent samples for the console's small charts (``/api/samples``).

Every ``interval_s`` the node records one sample of what the overview charts: claims
per second (``claimed`` ownership events since the previous sample), queue lag, dead
letters, running and ready steps. An hour of them is kept in memory and lost on
restart, which is fine for "what happened in the last hour on this page"; long
history is Prometheus's job (``/metrics``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from relaymesh.exceptions import RelayMeshError
from relaymesh.model import StepStatus
from relaymesh.store.base import Store

__all__ = ["SAMPLE_INTERVAL_S", "Sample", "Sampler"]

SAMPLE_INTERVAL_S = 10.0
KEEP_S = 3600.0
_CLAIM_SCAN_LIMIT = 10_000
"""Claims counted per interval at most (10 000 in 10 s is beyond one store's rate)."""


@dataclass(frozen=True, slots=True)
class Sample:
    at_ms: int
    claims_per_s: float
    queue_lag_ms: int
    dead_letters: int
    running: int
    ready: int

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at_ms,
            "claims_per_s": round(self.claims_per_s, 3),
            "queue_lag_ms": self.queue_lag_ms,
            "dead_letters": self.dead_letters,
            "running": self.running,
            "ready": self.ready,
        }


class Sampler:
    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=max(1, int(KEEP_S / interval_s)))
        self._last_at_ms: int | None = None

    def samples(self) -> list[Sample]:
        return list(self._samples)

    async def take(self, store: Store) -> Sample:
        now_ms = await store.now_ms()
        counts = await store.step_counts()
        claims = 0.0
        if self._last_at_ms is not None and now_ms > self._last_at_ms:
            events = await store.list_ownership_events(
                since_ms=self._last_at_ms, limit=_CLAIM_SCAN_LIMIT
            )
            claimed = sum(1 for e in events if e.event == "claimed" and e.at_ms < now_ms)
            claims = claimed / ((now_ms - self._last_at_ms) / 1000.0)
        sample = Sample(
            at_ms=now_ms,
            claims_per_s=claims,
            queue_lag_ms=await store.queue_lag_ms(),
            dead_letters=int(counts.get(StepStatus.DEAD_LETTER, 0)),
            running=int(counts.get(StepStatus.RUNNING, 0)),
            ready=int(counts.get(StepStatus.READY, 0)),
        )
        self._last_at_ms = now_ms
        self._samples.append(sample)
        return sample

    async def run(self, store: Store) -> None:
        """Sample until cancelled; a store outage skips samples, it does not stop this."""
        while True:
            try:
                await self.take(store)
            except RelayMeshError:
                pass
            await asyncio.sleep(self.interval_s)
