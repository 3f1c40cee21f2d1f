from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from relaymesh.exceptions import WorkflowError
from relaymesh.model import Priority
from relaymesh.settings import AgentSettings, RetryPolicy, Settings
from relaymesh.work import workflow as wf
from relaymesh.work.agents import known_agents
from relaymesh.work.workflow import load_workflow_file, parse_workflow

SETTINGS = Settings(
    retry=RetryPolicy(max_attempts=4, base_backoff_ms=100, max_backoff_ms=5000),
    agents={
        "summarize": AgentSettings(
            command=["true"],
            retry=RetryPolicy(max_attempts=5, base_backoff_ms=500, max_backoff_ms=30_000),
        ),
        "plain": AgentSettings(command=["true"]),
    },
)
KNOWN = known_agents(SETTINGS)


def parse(doc: Any, **kwargs: Any) -> Any:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return parse_workflow(
        text, fmt=kwargs.pop("fmt", None), known_agents=KNOWN, settings=SETTINGS, **kwargs
    )


def error_of(doc: Any, **kwargs: Any) -> str:
    with pytest.raises(WorkflowError) as info:
        parse(doc, **kwargs)
    return str(info.value)


def test_interface_example_parses() -> None:
    spec = parse(
        {
            "name": "nightly-report",
            "steps": [
                {"name": "fetch", "agent": "echo", "input": {"url": "..."}, "priority": "high"},
                {
                    "name": "summarize",
                    "agent": "summarize",
                    "depends_on": ["fetch"],
                    "locks": ["repo:reports"],
                    "retry": {"max_attempts": 7},
                },
            ],
        }
    )
    assert spec.name == "nightly-report"
    fetch, summarize = spec.steps
    assert fetch.priority is Priority.HIGH
    assert fetch.input == {"url": "..."}
    assert (fetch.max_attempts, fetch.base_backoff_ms, fetch.max_backoff_ms) == (4, 100, 5000)
    assert summarize.depends_on == ("fetch",)
    assert summarize.locks == ("repo:reports",)
    assert summarize.priority is Priority.NORMAL
    # Step override wins field by field; the rest comes from the agent's policy.
    assert (summarize.max_attempts, summarize.base_backoff_ms, summarize.max_backoff_ms) == (
        7,
        500,
        30_000,
    )


def test_agent_without_retry_uses_global_policy() -> None:
    spec = parse({"name": "w", "steps": [{"name": "a", "agent": "plain"}]})
    assert spec.steps[0].max_attempts == 4


def test_toml_workflow() -> None:
    text = """
name = "t"
[[steps]]
name = "a"
agent = "echo"
input = {x = 1}
[[steps]]
name = "b"
agent = "sleep"
depends_on = ["a"]
priority = "LOW"
"""
    spec = parse(text)
    assert [s.name for s in spec.steps] == ["a", "b"]
    assert spec.steps[0].input == {"x": 1}
    assert spec.steps[1].priority is Priority.LOW
    assert parse(text, fmt="toml") == spec


def test_priority_override_applies_to_every_step() -> None:
    spec = parse(
        {
            "name": "w",
            "steps": [
                {"name": "a", "agent": "echo", "priority": "high"},
                {"name": "b", "agent": "echo"},
            ],
        },
        priority_override="low",
    )
    assert {s.priority for s in spec.steps} == {Priority.LOW}


def test_bad_priority_override() -> None:
    assert "--priority" in error_of(
        {"name": "w", "steps": [{"name": "a", "agent": "echo"}]}, priority_override="urgent"
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ('{"name": "w", "steps": [}', "not valid JSON: line 1 column"),
        ('{"name": "w",\n "steps": [1,]}', "line 2"),
        ('{"name": "w", "steps": [{"name": "a", "agent": "echo", "input": NaN}]}', "NaN"),
        ("name = 'w'\nsteps = [", "not valid TOML"),
        ("[1, 2]", "workflow must be an object, not a list"),
        ({"steps": [{"name": "a", "agent": "echo"}]}, "field 'name' is missing"),
        ({"name": "", "steps": [{"name": "a", "agent": "echo"}]}, "field 'name' is empty"),
        ({"name": 3, "steps": [{"name": "a", "agent": "echo"}]}, "must be a string"),
        ({"name": "w"}, "field 'steps' is missing"),
        ({"name": "w", "steps": []}, "field 'steps' is empty"),
        ({"name": "w", "steps": {"a": 1}}, "must be a list"),
        (
            {"name": "w", "stpes": [], "steps": [{"name": "a", "agent": "echo"}]},
            "unknown field 'stpes'",
        ),
        ({"name": "w", "steps": ["a"]}, "steps[0] must be an object"),
        ({"name": "w", "steps": [{"agent": "echo"}]}, "steps[0]: field 'name' is missing"),
        ({"name": "w", "steps": [{"name": "a"}]}, "step 'a': field 'agent' is missing"),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "nope"}]},
            "step 'a': unknown agent 'nope' (known agents: echo, fail, plain, sleep, summarize)",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "colour": 1}]},
            "step 'a': unknown field 'colour'",
        ),
        (
            {
                "name": "w",
                "steps": [{"name": "a", "agent": "echo"}, {"name": "a", "agent": "echo"}],
            },
            "steps[1]: duplicate step name 'a' (also steps[0])",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "depends_on": ["z"]}]},
            "step 'a': field 'depends_on' names unknown step 'z'",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "depends_on": "b"}]},
            "field 'depends_on' must be a list",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "depends_on": ["a"]}]},
            "dependency cycle: a -> a",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "priority": "urgent"}]},
            "step 'a': field 'priority' must be one of high, normal, low; got 'urgent'",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "priority": 1}]},
            "field 'priority'",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "locks": "k"}]},
            "step 'a': field 'locks' must be a list",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "locks": ["k", ""]}]},
            "field 'locks'[1] is empty",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "locks": ["k", 2]}]},
            "field 'locks'[1] must be a string",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "locks": ["k", "k"]}]},
            "lists 'k' twice",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "retry": 3}]},
            "field 'retry' must be an object",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "retry": {"max_attempts": 0}}]},
            "field 'retry.max_attempts' must be between 1",
        ),
        (
            {
                "name": "w",
                "steps": [{"name": "a", "agent": "echo", "retry": {"max_attempts": "3"}}],
            },
            "field 'retry.max_attempts' must be an integer",
        ),
        (
            {
                "name": "w",
                "steps": [{"name": "a", "agent": "echo", "retry": {"max_attempts": True}}],
            },
            "must be an integer, not a boolean",
        ),
        (
            {
                "name": "w",
                "steps": [{"name": "a", "agent": "echo", "retry": {"base_backoff_ms": -1}}],
            },
            "field 'retry.base_backoff_ms' must be between 0",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "agent": "echo", "retry": {"tries": 2}}]},
            "field 'retry': unknown field 'tries'",
        ),
        (
            {
                "name": "w",
                "steps": [
                    {
                        "name": "a",
                        "agent": "echo",
                        "retry": {"base_backoff_ms": 9000, "max_backoff_ms": 10},
                    }
                ],
            },
            "max_backoff_ms (10) is below base_backoff_ms (9000)",
        ),
        ({"name": "w", "steps": [{"name": "a\nb", "agent": "echo"}]}, "control characters"),
        ({"name": "w", "steps": [{"name": "x" * 201, "agent": "echo"}]}, "longer than 200"),
    ],
)
def test_bad_workflows(doc: Any, expected: str) -> None:
    assert expected in error_of(doc)


def test_json_scalar_is_not_a_workflow() -> None:
    assert "workflow must be an object, not a string" in error_of('"hello"', fmt="json")
    assert "workflow is not valid TOML" in error_of("hello")


def test_cycle_is_named() -> None:
    message = error_of(
        {
            "name": "w",
            "steps": [
                {"name": "start", "agent": "echo"},
                {"name": "a", "agent": "echo", "depends_on": ["start", "c"]},
                {"name": "b", "agent": "echo", "depends_on": ["a"]},
                {"name": "c", "agent": "echo", "depends_on": ["b"]},
            ],
        }
    )
    assert message.startswith("dependency cycle: ")
    cycle = message.removeprefix("dependency cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_long_chain_is_not_a_recursion_problem() -> None:
    steps = [{"name": "s0", "agent": "echo"}] + [
        {"name": f"s{i}", "agent": "echo", "depends_on": [f"s{i - 1}"]} for i in range(1, 5000)
    ]
    assert len(parse({"name": "w", "steps": steps}).steps) == 5000


def test_input_not_json_serialisable_from_toml() -> None:
    text = 'name = "w"\n[[steps]]\nname = "a"\nagent = "echo"\ninput = {when = 1979-05-27}\n'
    assert "step 'a': field 'input' is not JSON-serialisable" in error_of(text)


def test_size_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    big = {
        "name": "w",
        "steps": [{"name": "a", "agent": "echo", "input": "x" * (wf.MAX_INPUT_BYTES + 1)}],
    }
    assert "field 'input' is larger than" in error_of(big)
    monkeypatch.setattr(wf, "MAX_STEPS", 2)
    many = {"name": "w", "steps": [{"name": f"s{i}", "agent": "echo"} for i in range(3)]}
    assert "3 steps; at most 2" in error_of(many)
    monkeypatch.setattr(wf, "MAX_WORKFLOW_BYTES", 10)
    assert "larger than 10 bytes" in error_of({"name": "w", "steps": []})
    monkeypatch.setattr(wf, "MAX_LOCKS_PER_STEP", 1)


def test_too_many_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wf, "MAX_LOCKS_PER_STEP", 1)
    doc = {"name": "w", "steps": [{"name": "a", "agent": "echo", "locks": ["x", "y"]}]}
    assert "'locks' has 2 keys; at most 1" in error_of(doc)


def test_load_workflow_file_json_and_toml(tmp_path: Path) -> None:
    j = tmp_path / "w.json"
    j.write_text(json.dumps({"name": "w", "steps": [{"name": "a", "agent": "echo"}]}))
    t = tmp_path / "w.toml"
    t.write_text('name = "w"\n[[steps]]\nname = "a"\nagent = "echo"\n')
    for path in (j, t, str(j)):
        spec = load_workflow_file(path, known_agents=KNOWN, settings=SETTINGS)
        assert spec.steps[0].name == "a"


def test_load_workflow_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="workflow file not found"):
        load_workflow_file(tmp_path / "missing.json", known_agents=KNOWN, settings=SETTINGS)
    with pytest.raises(WorkflowError, match="is a directory"):
        load_workflow_file(tmp_path, known_agents=KNOWN, settings=SETTINGS)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(WorkflowError, match="not UTF-8"):
        load_workflow_file(bad, known_agents=KNOWN, settings=SETTINGS)
    # A .json file is parsed as JSON even if it looks like TOML.
    toml_in_json = tmp_path / "x.json"
    toml_in_json.write_text('name = "w"\n')
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow_file(toml_in_json, known_agents=KNOWN, settings=SETTINGS)


def test_load_workflow_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.dumps({"name": "w", "steps": [{"name": "a", "agent": "echo"}]}).encode()

    class FakeStdin:
        buffer = io.BytesIO(data)

    monkeypatch.setattr("sys.stdin", FakeStdin())
    spec = load_workflow_file("-", known_agents=KNOWN, settings=SETTINGS)
    assert spec.name == "w"
