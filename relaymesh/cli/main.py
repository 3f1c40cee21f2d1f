"""The ``relaymesh`` command group. Commands live in one module per area and are
attached here; this module holds only the global options."""

from __future__ import annotations

import importlib

import click

from relaymesh import __version__
from relaymesh.cli.common import CliContext
from relaymesh.logging import configure_logging

# Modules that attach commands to ``main`` when imported (each defines ``register(main)``).
_COMMAND_MODULES = (
    "relaymesh.cli.membership",
    "relaymesh.cli.node",
    "relaymesh.cli.work",
    "relaymesh.cli.mesh",
    "relaymesh.cli.store",
    "relaymesh.cli.retention",
    "relaymesh.cli.archive",
    "relaymesh.cli.ops",
    "relaymesh.cli.demo",
    "relaymesh.cli.sim",
    "relaymesh.cli.workflows",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="relaymesh")
@click.option(
    "--config",
    "config_path",
    envvar="RELAYMESH_CONFIG",
    default=None,
    type=click.Path(dir_okay=False),
    help="Settings file (TOML).",
)
@click.option(
    "--store",
    "store_url",
    envvar="RELAYMESH_STORE_URL",
    default=None,
    help="Store URL [default: sqlite:///./relaymesh.db].",
)
@click.option(
    "--log-level",
    envvar="RELAYMESH_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_default=True,
)
@click.pass_context
def main(
    ctx: click.Context, config_path: str | None, store_url: str | None, log_level: str
) -> None:
    """RelayMesh: workflows of agent steps on a self-healing mesh of node daemons."""
    # Every command logs to stderr: unconfigured, structlog prints to stdout, which
    # would break the one JSON document of --json. ``node run`` and ``gossip``
    # configure again with their node name bound.
    configure_logging(log_level)
    ctx.obj = CliContext(config_path=config_path, store_url_option=store_url, log_level=log_level)


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(main)
