"""``relaymesh store stats``: how big the store is and what retention will remove.

Attached to the ``store`` group of ``cli/store.py``; opens the store named by the
global options, calls one service function, renders.
"""

from __future__ import annotations

from typing import Any

import click

from relaymesh.cli.common import CliContext, echo_json, echo_table, pass_cli, run_async
from relaymesh.cli.render import format_ms
from relaymesh.cli.store import store as store_group
from relaymesh.store import open_store
from relaymesh.work.retention import stats_document

__all__ = ["register"]


def register(main: click.Group) -> None:
    store_group.add_command(stats)


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def stats(cli: CliContext, as_json: bool) -> None:
    """Rows, bytes and oldest row per table, and what the next retention pass removes
    (with the ``[retention]`` settings of --config)."""
    url = cli.store_url
    retention = cli.settings().retention

    async def go() -> dict[str, Any]:
        opened = await open_store(url, create=False)
        try:
            return await stats_document(opened, retention)
        finally:
            await opened.close()

    doc = run_async(go)
    if as_json:
        echo_json(doc)
        return
    echo_table(
        ["table", "rows", "bytes", "oldest"],
        [
            [name, t["rows"], t["bytes"], None if t["oldest"] is None else format_ms(t["oldest"])]
            for name, t in doc["tables"].items()
        ],
    )
    click.echo("")
    click.echo("next retention pass removes:")
    if not doc["next_pass"]:
        click.echo("  nothing (retention is off for every kind)")
    for what, n in doc["next_pass"].items():
        click.echo(f"  {what}: {n}")
