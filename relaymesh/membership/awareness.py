"""Lifeguard local health awareness: a node that misses acks slows itself down.

Owns one integer, the health score, in ``0 .. max_multiplier - 1`` (0 is healthy).
Failed probes without the expected nacks and refutations raise it; successful
probes lower it. Probe timeouts and intervals are multiplied by ``score + 1`` so a
node whose own CPU or network is struggling waits longer before accusing others,
instead of spreading false suspicions (memberlist ``awareness.go``).
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """The local health score. Disabled (``enabled=False``) it stays 0."""

    __slots__ = ("_enabled", "_max_multiplier", "score")

    def __init__(self, max_multiplier: int, *, enabled: bool = True) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be at least 1")
        self._max_multiplier = max_multiplier
        self._enabled = enabled
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        """Add ``delta`` to the score, clamped to ``0 .. max_multiplier - 1``."""
        if not self._enabled:
            return
        self.score = min(self._max_multiplier - 1, max(0, self.score + delta))

    def scale_ms(self, timeout_ms: int) -> int:
        """``timeout_ms`` stretched by the current health: ``timeout_ms * (score + 1)``."""
        return timeout_ms * (self.score + 1)
