"""A bad settings file is one clean error line from every command, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from relaymesh.cli.main import main

COMMANDS = [
    ["submit", "WORKFLOW"],
    ["maintenance", "--node-id", "ops"],
    ["tasks"],
    ["store", "backup", "BACKUP"],
    ["store", "migrate"],
    ["store", "stats"],
    ["mesh-prune"],
    ["schedules"],
    ["serve-web"],
    ["reload-settings"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_bad_settings_file_is_one_error_line(tmp_path: Path, args: list[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[worker]\nslots = "many"\n')
    workflow = tmp_path / "wf.json"
    workflow.write_text('{"name": "w", "steps": [{"name": "a", "agent": "echo"}]}')
    argv = [
        a.replace("WORKFLOW", str(workflow)).replace("BACKUP", str(tmp_path / "b.db"))
        for a in args
    ]
    store = f"sqlite:///{tmp_path}/s.db"
    result = CliRunner().invoke(main, ["--config", str(config), "--store", store, *argv])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output == (
        "error: invalid setting worker.slots: "
        "Input should be a valid integer, unable to parse string as an integer\n"
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_the_config_option_after_the_command(tmp_path: Path, args: list[str]) -> None:
    """The same through ``relaymesh COMMAND ... --config FILE`` (global options late)."""
    config = tmp_path / "bad.toml"
    config.write_text('[worker]\nslots = "many"\n')
    argv = [a.replace("WORKFLOW", "-").replace("BACKUP", str(tmp_path / "b.db")) for a in args]
    result = CliRunner().invoke(main, [*argv, "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: invalid setting worker.slots"), result.output
    assert result.output.count("\n") == 1


def test_hoisting_keeps_everything_else_in_place() -> None:
    from relaymesh.cli.main import hoist_global_options

    assert hoist_global_options(["tasks", "--store", "U", "--json"]) == [
        "--store",
        "U",
        "tasks",
        "--json",
    ]
    assert hoist_global_options(["--config", "c", "store", "backup", "p", "--store=U"]) == [
        "--config",
        "c",
        "--store=U",
        "store",
        "backup",
        "p",
    ]
    # After "--" nothing is an option; "-" (stdin) is an argument.
    assert hoist_global_options(["submit", "-", "--", "--store", "x"]) == [
        "submit",
        "-",
        "--",
        "--store",
        "x",
    ]
