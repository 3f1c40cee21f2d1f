"""What every command shares: the global options' context, store opening, output.

Rules for commands (INTERFACE.md): every read command takes ``--json`` and then
prints exactly one JSON document on stdout; errors are one line on stderr and a
non-zero exit (1), nothing half-done.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from relaymesh.exceptions import RelayMeshError
from relaymesh.settings import Settings, load_settings

__all__ = [
    "CliContext",
    "echo_json",
    "echo_table",
    "fail",
    "pass_cli",
    "run_async",
]

T = TypeVar("T")


@dataclass
class CliContext:
    config_path: str | None
    store_url_option: str | None
    log_level: str
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, **overrides: dict[str, Any]) -> Settings:
        """Settings from file and environment; ``--store`` wins over ``node.store_url``."""
        if self._settings is None or overrides:
            node_over = dict(overrides.pop("node", {}))
            if self.store_url_option:
                node_over["store_url"] = self.store_url_option
            settings = load_settings(self.config_path, {"node": node_over, **overrides})
            if overrides:
                return settings
            self._settings = settings
        return self._settings

    @property
    def store_url(self) -> str:
        return self.settings().node.store_url


pass_cli = click.make_pass_decorator(CliContext)


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine to completion; ``RelayMeshError`` becomes a clean exit 1."""
    try:
        return asyncio.run(_awaited(make))
    except RelayMeshError as exc:
        fail(str(exc))
        raise AssertionError("unreachable") from exc


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table; ``-`` for None."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    click.echo("  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip())
