"""``relaymesh store migrate`` and ``relaymesh store backup PATH``.

Both open the store named by the global options (``--store`` / RELAYMESH_STORE_URL /
``node.store_url``) and call one store method; errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import os

import click

from relaymesh.cli.common import CliContext, echo_json, fail, pass_cli, run_async
from relaymesh.store import open_store

__all__ = ["register"]


def register(main: click.Group) -> None:
    main.add_command(store)


@click.group("store")
def store() -> None:
    """Schema migration and consistent backups of the store."""


@store.command("migrate")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def migrate(cli: CliContext, as_json: bool) -> None:
    """Apply pending schema migrations; print the schema version."""
    url = cli.store_url

    async def go() -> tuple[str, int]:
        opened = await open_store(url, migrate=False)
        try:
            return opened.url, await opened.migrate()
        finally:
            await opened.close()

    shown, version = run_async(go)
    if as_json:
        echo_json({"store": shown, "schema_version": version})
    else:
        click.echo(f"schema version {version} ({shown})")


@store.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def backup(cli: CliContext, path: str, as_json: bool) -> None:
    """Write a consistent copy of the store to PATH while nodes keep running
    (SQLite: a database file; PostgreSQL: a JSON dump of RelayMesh's tables, not the
    other tables that share its schema)."""
    url = cli.store_url
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        fail(f"cannot write backup {path}: directory {directory} does not exist")

    async def go() -> str:
        opened = await open_store(url, migrate=False, create=False)
        try:
            await opened.backup(path)
            return opened.url
        finally:
            await opened.close()

    shown = run_async(go)
    kind = "sqlite database" if shown.startswith("sqlite") else "json dump"
    size = os.path.getsize(path)
    if as_json:
        echo_json({"store": shown, "path": os.path.abspath(path), "kind": kind, "bytes": size})
    else:
        click.echo(f"wrote {os.path.abspath(path)} ({kind}, {size} bytes) from {shown}")
