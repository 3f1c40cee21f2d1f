"""``relaymesh node run``: the daemon (gossip + anti-entropy + worker + HTTP).

Each option also comes from the environment (``RELAYMESH_NODE__NAME``,
``RELAYMESH_NODE__BIND``, ``RELAYMESH_NODE__SEEDS_FILE``, ``RELAYMESH_NODE__HTTP``)
and from the settings file's ``[node]`` section; the command line wins. The
lifecycle is ``relaymesh.node.Node``'s.
"""

from __future__ import annotations

from typing import Any

import click
import uvloop

from relaymesh.cli.common import CliContext, fail, pass_cli
from relaymesh.exceptions import RelayMeshError
from relaymesh.logging import configure_logging
from relaymesh.ops.systemd import daemon_signals

__all__ = ["register"]


@click.group("node")
def node() -> None:
    """The node daemon."""


@node.command("run")
@click.option("--name", default=None, help="Node name, stable across restarts [node.name].")
@click.option("--bind", default=None, help="Gossip UDP+TCP address [node.bind].")
@click.option("--seeds-file", default=None, help="One HOST:PORT per line [node.seeds_file].")
@click.option("--http", "http_bind", default=None, help="HTTP address for metrics and API.")
@click.option(
    "--create-store",
    is_flag=True,
    help="Create the SQLite store file when it does not exist (refused otherwise).",
)
@pass_cli
def run(
    cli: CliContext,
    *,
    name: str | None,
    bind: str | None,
    seeds_file: str | None,
    http_bind: str | None,
    create_store: bool,
) -> None:
    """Run a node: membership, worker, maintenance and (with --http) the API."""
    # SIGTERM before the node's handlers exist is held for them, and after its shutdown
    # ignored, so it never kills the process (see ``daemon_signals``).
    with daemon_signals():
        from relaymesh.node import run_node

        overrides: dict[str, Any] = {
            "name": name,
            "bind": bind,
            "seeds_file": seeds_file,
            "http": http_bind,
        }
        try:
            settings = cli.settings(node=dict(overrides))
        except RelayMeshError as exc:
            fail(str(exc))
            return
        configure_logging(cli.log_level, node=settings.node.name)
        try:
            uvloop.run(
                run_node(
                    settings,
                    reload=lambda: cli.settings(node=dict(overrides)),
                    create_store=create_store,
                )
            )
        except RelayMeshError as exc:
            fail(str(exc))


def register(main: click.Group) -> None:
    main.add_command(node)
