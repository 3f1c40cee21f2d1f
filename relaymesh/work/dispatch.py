"""Dispatch statistics: a sliding one-hour window of claim decisions and step outcomes.

Every step a node claims ends in one outcome (``ok`` or a failure reason), and some
claim decisions refuse work (a breaker opening, the resource guard pausing the node).
Each is one sample. ``DispatchWindow`` keeps the samples of the last ``window_ms`` in
``bucket_ms`` buckets, with running totals, so recording and reading are O(1) and
memory is bounded by ``window_ms / bucket_ms`` buckets whatever the rate.
``DispatchStats`` keeps one window per node and one per agent (samples without an
agent, such as a guard pause, count for the node only) and turns them into the
rows a node writes to the store, where ``mesh-summary`` reads the whole mesh
(``summarize_rows``).

Pure: the time comes from an injected ``now_ms`` (monotonic); the store rows are dated
by ``wall_offset_ms`` fixed at start, so rewriting a bucket always hits the same row.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FAILURE_REASONS",
    "NODE_SCOPE",
    "OK",
    "STORE_BUCKET_MS",
    "WINDOW_MS",
    "DispatchStats",
    "DispatchWindow",
    "SummaryRow",
    "WindowStats",
    "outcome_reason",
    "summarize_rows",
]

WINDOW_MS = 3_600_000
BUCKET_MS = 10_000
STORE_BUCKET_MS = 60_000
"""The store keeps minutes: 60 rows per node, agent and reason at most."""
OK = "ok"
"""The reason recorded for a success."""
NODE_SCOPE = ""
"""The agent name of samples that belong to the node only (a guard pause)."""
FAILURE_REASONS = (
    "agent_error",
    "timeout",
    "lost_lease",
    "breaker_open",
    "low_success_rate",
    "guard_refused",
    "local_not_alive",
    "draining",
    "store_error",
    "unknown_agent",
)
"""Every reason a sample may carry besides ``ok``; anything else is ``other``."""
_KNOWN = frozenset((OK, *FAILURE_REASONS))


def outcome_reason(error: Mapping[str, Any] | None) -> str:
    """The window's reason for an agent's failed run (its error object)."""
    reason = str((error or {}).get("reason", ""))
    if reason == "timeout":
        return "timeout"
    if reason == "unstorable_result":
        return "store_error"
    return "agent_error"


@dataclass(frozen=True, slots=True)
class WindowStats:
    window_s: int
    success: int
    failure_reasons: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(self.failure_reasons.values())

    @property
    def total(self) -> int:
        return self.success + self.failed

    @property
    def rate(self) -> float | None:
        """Successes over samples; None without samples."""
        return None if self.total == 0 else self.success / self.total

    def to_json(self) -> dict[str, Any]:
        """The INTERFACE.md shape."""
        rate = self.rate
        return {
            "window_s": self.window_s,
            "total": self.total,
            "success": self.success,
            "failed": self.failed,
            "rate": None if rate is None else round(rate, 4),
            "failure_reasons": dict(sorted(self.failure_reasons.items())),
        }


@dataclass(slots=True)
class _Bucket:
    start_ms: int
    counts: Counter[str] = field(default_factory=Counter)
    dirty: bool = True


class DispatchWindow:
    """Samples of the last ``window_ms``, bucketed by ``bucket_ms``."""

    def __init__(
        self,
        now_ms: Callable[[], int],
        *,
        window_ms: int = WINDOW_MS,
        bucket_ms: int = BUCKET_MS,
    ) -> None:
        if bucket_ms <= 0 or window_ms < bucket_ms:
            raise ValueError("need 0 < bucket_ms <= window_ms")
        self._now_ms = now_ms
        self.window_ms = window_ms
        self.bucket_ms = bucket_ms
        self._buckets: deque[_Bucket] = deque()
        self._totals: Counter[str] = Counter()

    def record(self, reason: str, count: int = 1, *, now_ms: int | None = None) -> None:
        """One sample (``OK`` or a failure reason); ``now_ms`` saves a clock read when
        the caller has the time already."""
        if reason not in _KNOWN:
            reason = "other"
        now = self._now_ms() if now_ms is None else now_ms
        self._expire(now)
        start = now - now % self.bucket_ms
        if not self._buckets or self._buckets[-1].start_ms < start:
            self._buckets.append(_Bucket(start))
        bucket = self._buckets[-1]
        bucket.counts[reason] += count
        bucket.dirty = True
        self._totals[reason] += count

    def stats(self) -> WindowStats:
        self._expire(self._now_ms())
        reasons = {r: n for r, n in self._totals.items() if r != OK and n > 0}
        return WindowStats(self.window_ms // 1000, self._totals[OK], reasons)

    def clear(self) -> None:
        self._buckets.clear()
        self._totals.clear()

    def __len__(self) -> int:
        """Buckets held (at most ``window_ms / bucket_ms + 1``)."""
        return len(self._buckets)

    def take_dirty(
        self, granularity_ms: int, *, everything: bool = False
    ) -> dict[int, Counter[str]]:
        """The counts of every ``granularity_ms`` period (by monotonic start) that got new
        samples since the last call (all periods when ``everything``), summed over
        its buckets still in the window; the periods are marked clean."""
        self._expire(self._now_ms())
        dirty = {
            b.start_ms - b.start_ms % granularity_ms for b in self._buckets if b.dirty or everything
        }
        out: dict[int, Counter[str]] = {}
        for bucket in self._buckets:
            period = bucket.start_ms - bucket.start_ms % granularity_ms
            if period in dirty:
                out.setdefault(period, Counter()).update(bucket.counts)
            bucket.dirty = False
        return out

    def _expire(self, now_ms: int) -> None:
        oldest_ms = now_ms - self.window_ms
        buckets = self._buckets
        while buckets and buckets[0].start_ms + self.bucket_ms <= oldest_ms:
            self._totals.subtract(buckets.popleft().counts)
        if not buckets:
            self._totals.clear()


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One store row: the samples of ``agent`` (``NODE_SCOPE`` for the node's own) on
    ``node`` with ``reason`` in the minute starting at ``bucket_ms`` (wall clock)."""

    node: str
    agent: str
    bucket_ms: int
    reason: str
    count: int


class DispatchStats:
    """A node's windows: one for the node, one per agent."""

    def __init__(
        self,
        node: str,
        now_ms: Callable[[], int],
        *,
        wall_offset_ms: int = 0,
        window_ms: int = WINDOW_MS,
        bucket_ms: int = BUCKET_MS,
    ) -> None:
        self.node = node
        self._now_ms = now_ms
        self._wall_offset_ms = wall_offset_ms
        self._window_ms = window_ms
        self._bucket_ms = bucket_ms
        self._node = self._new()
        self._scopes: dict[str, DispatchWindow] = {}
        self._everything = False

    def record(self, agent: str | None, reason: str) -> None:
        """One sample; ``agent`` None for a node-wide decision. On the worker's hot
        path (once per step): one clock read, a few counter increments."""
        now_ms = self._now_ms()
        self._node.record(reason, now_ms=now_ms)
        scope = self._scopes.get(agent or NODE_SCOPE)
        if scope is None:
            scope = self._scopes[agent or NODE_SCOPE] = self._new()
        scope.record(reason, now_ms=now_ms)

    def node_stats(self) -> WindowStats:
        return self._node.stats()

    def agent_stats(self) -> dict[str, WindowStats]:
        return {a: w.stats() for a, w in sorted(self._scopes.items()) if a != NODE_SCOPE}

    def to_json(self) -> dict[str, Any]:
        doc = self.node_stats().to_json()
        doc["agents"] = {a: s.to_json() for a, s in self.agent_stats().items()}
        return doc

    def summary_rows(self) -> list[SummaryRow]:
        """The store rows changed since the last call (absolute counts, so writing one
        twice is harmless). After a failed write call ``resend_all``."""
        everything, self._everything = self._everything, False
        rows: list[SummaryRow] = []
        for agent, window in sorted(self._scopes.items()):
            for period, counts in window.take_dirty(STORE_BUCKET_MS, everything=everything).items():
                wall = period + self._wall_offset_ms
                minute_ms = wall - wall % STORE_BUCKET_MS
                for reason, count in sorted(counts.items()):
                    if count > 0:
                        rows.append(SummaryRow(self.node, agent, minute_ms, reason, count))
        return rows

    def resend_all(self) -> None:
        """The last rows did not reach the store: the next ``summary_rows`` has them all."""
        self._everything = True

    def _new(self) -> DispatchWindow:
        return DispatchWindow(self._now_ms, window_ms=self._window_ms, bucket_ms=self._bucket_ms)


def summarize_rows(
    rows: Iterable[tuple[str, str, str, int]], *, window_s: int = WINDOW_MS // 1000
) -> dict[str, Any]:
    """The mesh-wide ``dispatch`` document from ``(node, agent, reason, count)`` rows
    (summed over the window by the store): the INTERFACE.md shape for the whole mesh,
    plus ``nodes`` and ``agents`` with the same shape each."""
    mesh: Counter[str] = Counter()
    nodes: dict[str, Counter[str]] = {}
    agents: dict[str, Counter[str]] = {}
    for node, agent, reason, count in rows:
        mesh[reason] += count
        nodes.setdefault(node, Counter())[reason] += count
        if agent != NODE_SCOPE:
            agents.setdefault(agent, Counter())[reason] += count

    def shape(counts: Counter[str]) -> dict[str, Any]:
        reasons = {r: n for r, n in counts.items() if r != OK and n > 0}
        return WindowStats(window_s, counts[OK], reasons).to_json()

    doc = shape(mesh)
    doc["nodes"] = {name: shape(c) for name, c in sorted(nodes.items())}
    doc["agents"] = {name: shape(c) for name, c in sorted(agents.items())}
    return doc
