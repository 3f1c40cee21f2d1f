"""The CLI imports only the module of the command it runs (issue 9: read commands and
health checks pay for what they use, not for the node, the simulator or the web server)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click

from relaymesh.cli.main import COMMAND_MODULES


def test_the_command_table_matches_what_the_modules_register() -> None:
    registered: dict[str, set[str]] = {}
    for modules in COMMAND_MODULES.values():
        for module in modules:
            group = click.Group()
            importlib.import_module(module).register(group)
            for name in group.commands:
                registered.setdefault(name, set()).add(module)
    assert set(registered) == set(COMMAND_MODULES)
    for name, modules in registered.items():
        assert modules <= set(COMMAND_MODULES[name]), name


def test_a_read_command_does_not_import_the_node_or_rich() -> None:
    code = (
        "import sys, json\n"
        "from relaymesh.cli.main import main\n"
        "try:\n"
        "    main(['tasks', '--help'], standalone_mode=False)\n"
        "finally:\n"
        "    prefixes = ('relaymesh', 'rich', 'cryptography')\n"
        "    print(json.dumps(sorted(m for m in sys.modules if m.startswith(prefixes))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert "relaymesh.cli.work" in loaded
    for heavy in (
        "relaymesh.node",
        "relaymesh.sim",
        "relaymesh.web.server",
        "rich",
        "cryptography",
    ):
        assert heavy not in loaded, heavy
