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
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_bad_settings_file_is_one_error_line(tmp_path: Path, args: list[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[worker]\nslots = "many"\n')
    workflow = tmp_path / "wf.json"
    workflow.write_text('{"name": "w", "steps": [{"name": "a", "agent": "echo"}]}')
    argv = [a.replace("WORKFLOW", str(workflow)) for a in args]
    store = f"sqlite:///{tmp_path}/s.db"
    result = CliRunner().invoke(main, ["--config", str(config), "--store", store, *argv])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output == (
        "error: invalid setting worker.slots: "
        "Input should be a valid integer, unable to parse string as an integer\n"
    )
