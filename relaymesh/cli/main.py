"""The ``relaymesh`` command group. Commands live in one module per area and are
attached here; this module holds only the global options."""

from __future__ import annotations

import importlib

import click

from relaymesh import __version__
from relaymesh.cli.common import CliContext

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
    "store": ("relaymesh.cli.store", "relaymesh.cli.retention"),
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


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (``COMMAND_MODULES``)."""

    _loaded: set[str]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load(cmd_name)
        return self.commands.get(cmd_name)

    def _load(self, name: str) -> None:
        loaded = self.__dict__.setdefault("_loaded", set())
        for module in COMMAND_MODULES.get(name, ()):
            if module not in loaded:
                loaded.add(module)
                importlib.import_module(module).register(self)

    def load_all(self) -> click.Group:
        """Import every command (the reference generator lists them all)."""
        for name in COMMAND_MODULES:
            self._load(name)
        return self


@click.group(
    cls=LazyGroup,
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
    ctx.obj = CliContext(config_path=config_path, store_url_option=store_url, log_level=log_level)
