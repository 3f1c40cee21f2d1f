"""Fuzzing the workflow parser: any text, JSON or TOML, is either a valid spec or one
``WorkflowError`` line; nothing else escapes. Short in ``make test``, long in
``make fuzz``."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from relaymesh.exceptions import WorkflowError
from relaymesh.settings import Settings
from relaymesh.work.agents import known_agents
from relaymesh.work.workflow import parse_workflow
from tests.fuzzing import fuzz_settings

SETTINGS = Settings()
KNOWN = known_agents(SETTINGS)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["echo", "a", "b", "high", "low", "normal", "sleep"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "name",
        "agent",
        "input",
        "depends_on",
        "priority",
        "locks",
        "max_attempts",
        "retry",
        "timeout_s",
        "steps",
        "x",
    ]
)
step = st.dictionaries(keys, values, max_size=6)
workflow = st.fixed_dictionaries(
    {"name": st.text(max_size=10) | values, "steps": st.lists(step, max_size=5) | values}
)


def parses_or_refuses(text: str, fmt: str | None = None) -> None:
    try:
        spec = parse_workflow(text, fmt=fmt, known_agents=KNOWN, settings=SETTINGS)  # type: ignore[arg-type]
    except WorkflowError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), message
    else:
        assert spec.steps


@fuzz_settings(200)
@given(st.text(max_size=400))
def test_any_text_parses_or_is_one_workflow_error(text: str) -> None:
    parses_or_refuses(text)
    parses_or_refuses(text, "toml")


@fuzz_settings(150)
@given(workflow)
def test_json_shaped_workflows_parse_or_are_one_workflow_error(doc: dict[str, object]) -> None:
    parses_or_refuses(json.dumps(doc, allow_nan=True))
