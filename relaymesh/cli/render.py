"""Parsing and rendering helpers shared by the operator commands (no logic).

``TimeParam`` accepts ISO-8601 (``2026-01-02T03:04:05Z``; no zone means UTC) or epoch
milliseconds; ``store_session`` opens the store named by the global options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from relaymesh.cli.common import echo_json, echo_table
from relaymesh.model import StepRecord
from relaymesh.ops.services import parse_time_ms
from relaymesh.store import store_session

__all__ = [
    "TIME",
    "TimeParam",
    "format_ms",
    "parse_time_ms",
    "render_list",
    "render_steps",
    "store_session",
]


class TimeParam(click.ParamType):  # type: ignore[type-arg]
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time_ms(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeParam()


def format_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as a UTC timestamp for tables."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def render_steps(steps: Sequence[StepRecord], as_json: bool) -> None:
    if as_json:
        echo_json([s.to_json() for s in steps])
        return
    echo_table(
        ["id", "workflow", "name", "agent", "status", "attempt", "epoch", "owner", "updated"],
        [
            (
                s.id,
                s.workflow_id,
                s.name,
                s.agent,
                s.status.value,
                f"{s.attempt}/{s.max_attempts}",
                s.lease_epoch,
                s.owner_node,
                format_ms(s.updated_at_ms),
            )
            for s in steps
        ],
    )


def render_list(
    items: Sequence[Any],
    as_json: bool,
    headers: Sequence[str],
    row: Callable[[Any], Sequence[Any]],
) -> None:
    """``items`` (each with ``to_json()``) as a JSON list or a table."""
    if as_json:
        echo_json([i.to_json() for i in items])
    else:
        echo_table(headers, [row(i) for i in items])
