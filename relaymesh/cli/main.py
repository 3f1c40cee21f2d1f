"""The ``relaymesh`` command group. Commands live in one module per area and are
attached here; this module holds only the global options.

The global options (``--config``, ``--store``, ``--log-level``) work before or after
the command (``relaymesh tasks --store URL``), and any ``RelayMeshError`` a command
lets through (bad settings read outside its store session, say) is one ``error:``
line and exit 1, never a traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from relaymesh import __version__
from relaymesh.cli.common import CliContext, fail
from relaymesh.exceptions import RelayMeshError
from relaymesh.logging import configure_logging

GLOBAL_VALUE_OPTIONS = ("--config", "--store", "--log-level")
"""Options of the group that take a value; moved to the front wherever they appear."""


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the global options found after the command name moved before it,
    so click parses them as the group's. Stops at ``--`` (what follows is positional)."""
    i = 0
    while i < len(args):  # skip what is already in front of the command
        arg = args[i]
        if arg in GLOBAL_VALUE_OPTIONS:
            i += 2
        elif arg.startswith("-") and arg != "-":
            i += 1
        else:
            break
    front, tail, hoisted = args[:i], args[i:], []
    kept: list[str] = []
    j = 0
    while j < len(tail):
        arg = tail[j]
        if arg == "--":
            kept += tail[j:]
            break
        if arg in GLOBAL_VALUE_OPTIONS and j + 1 < len(tail):
            hoisted += tail[j : j + 2]
            j += 2
            continue
        if arg.partition("=")[0] in GLOBAL_VALUE_OPTIONS and "=" in arg:
            hoisted.append(arg)
        else:
            kept.append(arg)
        j += 1
    return front + hoisted + kept


# Which modules attach each top-level command (each module defines ``register(main)``).
# Imported only when the command runs: a read command or a health check loads what it
# needs, not the node, the simulator and the web server (tests/unit/ops/test_cli_lazy.py
# checks this table against what the modules register).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "gossip": ("relaymesh.cli.membership",),
    "keygen": ("relaymesh.cli.membership",),
    "node": ("relaymesh.cli.node",),
    **{
        name: ("relaymesh.cli.work",)
        for name in ("cancel", "dead", "replay", "replay-batch", "status", "submit", "tasks")
    },
    **{
        name: ("relaymesh.cli.mesh",)
        for name in ("gossip-sync", "maintenance", "mesh-prune", "mesh-recover", "mesh-summary")
    },
    "store": ("relaymesh.cli.store", "relaymesh.cli.retention", "relaymesh.cli.archive"),
    "archive": ("relaymesh.cli.archive",),
    **{
        name: ("relaymesh.cli.ops",)
        for name in (
            "audit-query",
            "conflicts",
            "ownership-events",
            "reload-settings",
            "serve-web",
            "settings-history",
        )
    },
    "demo": ("relaymesh.cli.demo",),
    "sim": ("relaymesh.cli.sim",),
    "schedules": ("relaymesh.cli.workflows",),
    "workflows": ("relaymesh.cli.workflows",),
}


class RelayMeshGroup(click.Group):
    """Global options anywhere, one-line errors, and commands imported on first use
    (``COMMAND_MODULES``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RelayMeshError as exc:
            fail(str(exc))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load(cmd_name)
        return self.commands.get(cmd_name)

    def _load(self, name: str) -> None:
        loaded: set[str] = self.__dict__.setdefault("_loaded", set())
        for module in COMMAND_MODULES.get(name, ()):
            if module not in loaded:
                loaded.add(module)
                importlib.import_module(module).register(self)

    def load_all(self) -> click.Group:
        """Import every command (the reference generator lists them all)."""
        for name in COMMAND_MODULES:
            self._load(name)
        return self


LazyGroup = RelayMeshGroup
"""The name tools/gen_reference.py asks for."""


@click.group(
    cls=RelayMeshGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
