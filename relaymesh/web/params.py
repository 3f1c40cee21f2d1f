"""Checks for every value a request carries (query, path, JSON body).

Each function returns the parsed value or raises ``ValueError`` with one line naming
the parameter; the API turns that into 400 ``{"error": ...}``. Nothing unchecked
reaches the store: a value of the wrong type, out of range, too long, with control
characters or lone surrogates (which neither SQLite nor PostgreSQL can bind) stops here.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from enum import Enum
from typing import Any, TypeVar

from aiohttp import web

from relaymesh.model import StepStatus, WorkflowStatus
from relaymesh.ops import services

__all__ = [
    "MAX_LIMIT",
    "MAX_TEXT_CHARS",
    "flag",
    "json_body",
    "limit",
    "only_fields",
    "status",
    "text",
    "time_ms",
    "workflow_status",
]

_E = TypeVar("_E", bound=Enum)

MAX_LIMIT = 10_000
MAX_TEXT_CHARS = 200
"""Ids, names and filters are short; anything longer is not one of ours."""
_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")


def text(value: Any, name: str, *, required: bool = False) -> str | None:
    """A short printable string; ``None`` (or ``""``) when absent and not required."""
    if value is None or value == "":
        if required:
            raise ValueError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is longer than {MAX_TEXT_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid UTF-8 text") from None
    return value


def limit(value: Any, default: int, name: str = "limit") -> int:
    """An integer in 1..MAX_LIMIT (a JSON number or a decimal string)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    digits = isinstance(value, int) or (value.isascii() and value.isdigit() and len(value) <= 6)
    if not digits:
        raise ValueError(f"{name} must be an integer between 1 and {MAX_LIMIT}")
    n = int(value)
    if not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"{name} must be between 1 and {MAX_LIMIT}")
    return n


def status(value: Any, name: str = "status") -> StepStatus | None:
    """A step status, any case."""
    return _member(StepStatus, value, name)


def workflow_status(value: Any, name: str = "status") -> WorkflowStatus | None:
    """A workflow status, any case."""
    return _member(WorkflowStatus, value, name)


def _member(kind: type[_E], value: Any, name: str) -> _E | None:
    raw = text(value, name)
    if raw is None:
        return None
    try:
        return kind(raw.upper())
    except ValueError:
        allowed = ", ".join(str(s.value) for s in kind)
        raise ValueError(f"unknown {name} {raw!r} (expected one of {allowed})") from None


def time_ms(value: Any, name: str) -> int | None:
    """ISO-8601 or epoch milliseconds, within the range ``parse_time_ms`` accepts."""
    raw = text(value, name)
    if raw is None:
        return None
    try:
        return services.parse_time_ms(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def flag(value: Any, name: str) -> bool:
    """``1/true/yes`` or ``0/false/no`` (absent: false)."""
    raw = (text(value, name) or "").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1, true, yes, 0, false, no")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object."""
    try:
        doc = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError("request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("request body must be a JSON object")
    return doc


def only_fields(body: dict[str, Any], allowed: Collection[str]) -> dict[str, Any]:
    """Refuse fields the route does not know, so a typo is not silently ignored."""
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (expected {', '.join(sorted(allowed))})")
    return body
