"""What a script agent's environment is made of, and which names settings refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymesh.exceptions import ConfigError
from relaymesh.settings import AgentSettings, load_settings
from relaymesh.work.agents import AgentRequest, script_environment

REQUEST = AgentRequest(
    step_id="s1",
    workflow_id="w1",
    name="a",
    attempt=2,
    lease_epoch=7,
    input=None,
    upstream={},
    node="n1",
)
NODE_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/relay",
    "LANG": "C.UTF-8",
    "RELAYMESH_GOSSIP__KEYS": '["secret"]',
    "RELAYMESH_STORE_URL": "postgresql://u:pw@db/relay",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "TZ": "Europe/Paris",
}


def test_only_the_minimal_environment() -> None:
    spec = AgentSettings(command=["true"], env={"GREETING": "hi"}, pass_env=["TZ", "MISSING"])
    assert script_environment(spec, REQUEST, NODE_ENV) == {
        "PATH": "/usr/bin",
        "HOME": "/home/relay",
        "LANG": "C.UTF-8",
        "TZ": "Europe/Paris",
        "GREETING": "hi",
        "RELAYMESH_STEP_ID": "s1",
        "RELAYMESH_WORKFLOW_ID": "w1",
        "RELAYMESH_ATTEMPT": "2",
        "RELAYMESH_LEASE_EPOCH": "7",
        "RELAYMESH_NODE": "n1",
    }
    bare = script_environment(AgentSettings(command=["true"]), REQUEST, {})
    assert bare["PATH"]  # a default search path, so "python3" is still found


@pytest.mark.parametrize(
    "line", ['pass_env = ["RELAYMESH_GOSSIP__KEYS"]', 'env = { RELAYMESH_X = "1" }']
)
def test_relaymesh_names_are_reserved(tmp_path: Path, line: str) -> None:
    config = tmp_path / "relaymesh.toml"
    config.write_text(f'[agents.a]\ncommand = ["true"]\n{line}\n')
    with pytest.raises(ConfigError, match="reserved"):
        load_settings(config)
