"""``relaymesh archive show FILE`` and ``relaymesh store restore PATH``.

``archive show`` reads a retention archive file (``work/archive.py``) without a store;
``store restore`` (attached to the ``store`` group of ``cli/store.py``) opens the store
named by the global options and calls ``ops/restore.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from relaymesh.cli.common import CliContext, echo_json, echo_table, fail, pass_cli, run_async
from relaymesh.cli.render import format_ms
from relaymesh.cli.store import store as store_group
from relaymesh.ops.restore import restore as restore_path
from relaymesh.store import open_store
from relaymesh.work.archive import ArchiveReader

__all__ = ["register"]


def register(main: click.Group) -> None:
    main.add_command(archive)
    store_group.add_command(restore)


@click.group("archive")
def archive() -> None:
    """Retention archives ([retention] archive_dir)."""


@archive.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def show(file: str, as_json: bool) -> None:
    """The workflows in a retention archive file, in the order they were archived.
    --json: a list of {"id", "name", "status", "created_at", "finished_at", "steps":
    {status: n}} (times in epoch ms)."""
    reader = ArchiveReader(file)
    try:
        listed = [_summary(doc) for doc in reader.documents()]
    except OSError as exc:
        fail(f"cannot read {file!r}: {exc.strerror}")
        return
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"{file!r} is not a retention archive: {exc}")
        return
    if reader.damaged:
        click.echo(
            f"warning: {reader.damaged} damaged stretch(es) or line(s) of {file} skipped",
            err=True,
        )
    if as_json:
        echo_json(listed)
        return
    echo_table(
        ["id", "name", "status", "created", "finished", "steps"],
        [
            [
                w["id"],
                w["name"],
                w["status"],
                format_ms(w["created_at"]),
                format_ms(w["finished_at"]),
                " ".join(f"{s}={n}" for s, n in sorted(w["steps"].items())),
            ]
            for w in listed
        ],
    )


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    wf = doc["workflow"]
    return {
        "id": wf["id"],
        "name": wf["name"],
        "status": wf["status"],
        "created_at": wf["created_at_ms"],
        "finished_at": wf["updated_at_ms"],
        "steps": dict(Counter(str(s["status"]) for s in doc["steps"])),
    }


@click.command("restore")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def restore(cli: CliContext, path: str, as_json: bool) -> None:
    """Load a backup (from ``store backup``: SQLite file or JSON dump) into an empty
    store (a store that has workflows is refused), or re-import retention archives
    (a file or a directory of them; workflows already present are skipped)."""
    url = cli.store_url

    async def go() -> dict[str, Any]:
        opened = await open_store(url)
        try:
            return await restore_path(opened, path)
        finally:
            await opened.close()

    doc = run_async(go)
    if as_json:
        echo_json(doc)
    elif doc["kind"] == "archive":
        click.echo(
            f"imported {doc['imported']} workflows, skipped {doc['skipped']} already present"
            f" ({doc['files']} archive files) into {doc['store']}"
        )
        if doc["damaged"]:
            click.echo(f"warning: {doc['damaged']} damaged stretch(es) skipped", err=True)
    else:
        total = sum(doc["rows"].values())
        click.echo(f"restored {total} rows from {doc['path']} ({doc['kind']}) into {doc['store']}")
