"""Retry schedule and error classification: pure functions, randomness injected.

``max_attempts`` counts the first run. Backoff is "full jitter" (AWS architecture
blog): uniform over ``[0, min(max, base * 2**(attempt-1))]``, so retries of many
steps that failed together spread out instead of stampeding the store.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from enum import StrEnum
from typing import Any

__all__ = [
    "ErrorKind",
    "backoff_cap_ms",
    "backoff_ms",
    "classify",
    "explicit_error_kind",
    "next_action",
]


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    """Worth retrying: timeout, killed, a transient exit code, an explicit transient error."""
    PERMANENT = "permanent"
    """Retrying will not help: straight to DEAD_LETTER."""


def backoff_cap_ms(attempt: int, base_ms: int, max_ms: int) -> int:
    """``min(max_ms, base_ms * 2**(attempt-1))`` without building huge integers."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base_ms <= 0 or max_ms <= 0:
        return 0
    # 2**62 already exceeds any sane max_ms; cap the exponent before multiplying.
    exponent = min(attempt - 1, 62)
    return min(max_ms, base_ms << exponent)


def backoff_ms(attempt: int, base_ms: int, max_ms: int, rng: random.Random) -> int:
    """Delay before the retry that follows failed run number ``attempt`` (full jitter)."""
    return rng.randint(0, backoff_cap_ms(attempt, base_ms, max_ms))


def explicit_error_kind(output: Any) -> ErrorKind | None:
    """The kind of an explicit ``{"error": {"kind": "transient"|"permanent"}}`` output."""
    if isinstance(output, dict):
        error = output.get("error")
        if isinstance(error, dict):
            kind = error.get("kind")
            if kind == ErrorKind.TRANSIENT.value:
                return ErrorKind.TRANSIENT
            if kind == ErrorKind.PERMANENT.value:
                return ErrorKind.PERMANENT
    return None


def classify(
    *,
    timed_out: bool = False,
    killed: bool = False,
    exit_code: int | None = None,
    transient_exit_codes: Collection[int] = (75,),
    output: Any = None,
) -> ErrorKind:
    """Classify a failed run. An explicit error kind in the output wins; then timeout and
    kill (by a signal, ``exit_code < 0``) are transient; then the agent's transient exit
    codes; anything else is permanent."""
    explicit = explicit_error_kind(output)
    if explicit is not None:
        return explicit
    if timed_out or killed or (exit_code is not None and exit_code < 0):
        return ErrorKind.TRANSIENT
    if exit_code is not None and exit_code in transient_exit_codes:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def next_action(
    attempt: int,
    max_attempts: int,
    transient: bool,
    *,
    base_ms: int,
    max_ms: int,
    rng: random.Random,
) -> int | None:
    """After failed run number ``attempt``: the retry delay in ms, or None for DEAD_LETTER
    (permanent error, or ``max_attempts`` runs used up)."""
    if not transient or attempt >= max_attempts:
        return None
    return backoff_ms(attempt, base_ms, max_ms, rng)
