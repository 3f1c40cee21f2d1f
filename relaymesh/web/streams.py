"""How many ``/api/events`` streams may be open at once, overall and per token.

Each open stream polls the store every couple of seconds, so streams are a resource a
client could exhaust; the API refuses one beyond either cap with 429. Pure bookkeeping:
no I/O, no clock; the caller opens a slot before it streams and closes it in a
``finally``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["StreamSlots"]


class StreamSlots:
    """``limits()`` returns ``(max_streams, max_streams_per_token)``; called on every open
    so a settings reload applies to the next stream."""

    def __init__(self, limits: Callable[[], tuple[int, int]]) -> None:
        self._limits = limits
        self._by_token: dict[str, int] = {}

    @property
    def open_total(self) -> int:
        return sum(self._by_token.values())

    def open_for(self, token_name: str) -> int:
        return self._by_token.get(token_name, 0)

    def try_open(self, token_name: str) -> str | None:
        """Take a slot for ``token_name``; ``None`` when taken, else why not."""
        max_total, max_per_token = self._limits()
        if self.open_total >= max_total:
            return f"too many event streams open on this node (max_streams = {max_total})"
        if self.open_for(token_name) >= max_per_token:
            return (
                f"too many event streams open for token {token_name!r} "
                f"(max_streams_per_token = {max_per_token})"
            )
        self._by_token[token_name] = self.open_for(token_name) + 1
        return None

    def close(self, token_name: str) -> None:
        left = self.open_for(token_name) - 1
        if left > 0:
            self._by_token[token_name] = left
        else:
            self._by_token.pop(token_name, None)
