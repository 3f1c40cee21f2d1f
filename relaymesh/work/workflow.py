"""Workflow files: parse and validate a DAG of steps into a ``WorkflowSpec``.

Pure: no store, no clock. Every problem is a ``WorkflowError`` whose message names
the step and field at fault, so ``relaymesh submit`` can print one clear line and
write nothing. The retry policy of each step is resolved here (step override >
agent's policy > global ``[retry]``), so the store keeps plain numbers.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from relaymesh.exceptions import WorkflowError
from relaymesh.model import Priority, StepSpec, WorkflowSpec, check_graph
from relaymesh.settings import Settings

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_LOCKS_PER_STEP",
    "MAX_NAME_CHARS",
    "MAX_STEPS",
    "MAX_WORKFLOW_BYTES",
    "WorkflowFormat",
    "load_workflow_file",
    "parse_workflow",
]

WorkflowFormat = Literal["json", "toml"]

MAX_WORKFLOW_BYTES = 8 * 1024 * 1024
MAX_STEPS = 10_000
MAX_INPUT_BYTES = 1024 * 1024
"""Per step, as compact JSON."""
MAX_NAME_CHARS = 200
MAX_LOCKS_PER_STEP = 64

_WORKFLOW_KEYS = frozenset({"name", "steps", "description"})
_STEP_KEYS = frozenset(
    {"name", "agent", "input", "depends_on", "priority", "locks", "retry", "description"}
)
_RETRY_KEYS = ("max_attempts", "base_backoff_ms", "max_backoff_ms")
_MAX_ATTEMPTS_CAP = 1000
_MAX_BACKOFF_CAP_MS = 7 * 24 * 3600 * 1000


def parse_workflow(
    text: str,
    *,
    fmt: WorkflowFormat | None = None,
    known_agents: Collection[str],
    settings: Settings,
    priority_override: str | None = None,
) -> WorkflowSpec:
    """Parse ``text`` (JSON or TOML; ``fmt=None`` guesses from the first character) and
    validate it. Raises ``WorkflowError`` naming the step and field at fault."""
    if len(text.encode("utf-8", errors="replace")) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"workflow is larger than {MAX_WORKFLOW_BYTES} bytes")
    override = None if priority_override is None else _priority(priority_override, "--priority")
    doc = _decode(text, fmt)
    if not isinstance(doc, dict):
        raise WorkflowError(f"workflow must be an object, not {_kind(doc)}")
    _no_unknown_keys(doc, _WORKFLOW_KEYS, "workflow")
    name = _name(doc.get("name"), "workflow: field 'name'")
    raw_steps = doc.get("steps")
    if raw_steps is None:
        raise WorkflowError("workflow: field 'steps' is missing")
    if not isinstance(raw_steps, list):
        raise WorkflowError(f"workflow: field 'steps' must be a list, not {_kind(raw_steps)}")
    if not raw_steps:
        raise WorkflowError("workflow: field 'steps' is empty")
    if len(raw_steps) > MAX_STEPS:
        raise WorkflowError(f"workflow has {len(raw_steps)} steps; at most {MAX_STEPS} allowed")

    known = frozenset(known_agents)
    steps: list[StepSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_steps):
        step = _step(raw, index, known, settings, override)
        if step.name in seen:
            raise WorkflowError(
                f"steps[{index}]: duplicate step name '{step.name}' (also steps[{seen[step.name]}])"
            )
        seen[step.name] = index
        steps.append(step)

    check_graph(steps)  # the rule the store applies again at submit
    return WorkflowSpec(name=name, steps=tuple(steps))


def load_workflow_file(
    path: str | Path,
    *,
    known_agents: Collection[str],
    settings: Settings,
    priority_override: str | None = None,
) -> WorkflowSpec:
    """Read a workflow file (``"-"``: standard input) and ``parse_workflow`` it. The
    format comes from the extension (``.toml``/``.json``), else from the content."""
    fmt: WorkflowFormat | None = None
    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_WORKFLOW_BYTES + 1)
        where = "standard input"
    else:
        p = Path(path)
        where = str(p)
        suffix = p.suffix.lower()
        fmt = "toml" if suffix == ".toml" else "json" if suffix == ".json" else None
        try:
            with p.open("rb") as fh:
                data = fh.read(MAX_WORKFLOW_BYTES + 1)
        except FileNotFoundError:
            raise WorkflowError(f"workflow file not found: {where}") from None
        except IsADirectoryError:
            raise WorkflowError(f"workflow file is a directory: {where}") from None
        except OSError as exc:
            raise WorkflowError(f"cannot read workflow file {where}: {exc.strerror}") from None
    if len(data) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"workflow {where} is larger than {MAX_WORKFLOW_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"workflow {where} is not UTF-8 (byte {exc.start})") from None
    return parse_workflow(
        text,
        fmt=fmt,
        known_agents=known_agents,
        settings=settings,
        priority_override=priority_override,
    )


# -- decoding -----------------------------------------------------------------------


def _decode(text: str, fmt: WorkflowFormat | None) -> Any:
    if fmt is None:
        fmt = "json" if text.lstrip().startswith(("{", "[")) or not text.strip() else "toml"
    if fmt == "json":
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise WorkflowError(
                f"workflow is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        except ValueError as exc:
            raise WorkflowError(f"workflow is not valid JSON: {exc}") from None
        except RecursionError:
            raise WorkflowError("workflow is not valid JSON: nested too deeply") from None
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib's message ends with "(at line L, column C)".
            raise WorkflowError(f"workflow is not valid TOML: {exc}") from None
        except RecursionError:
            raise WorkflowError("workflow is not valid TOML: nested too deeply") from None
    raise WorkflowError(f"unknown workflow format {fmt!r} (expected json or toml)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


# -- steps --------------------------------------------------------------------------


def _step(
    raw: Any,
    index: int,
    known: frozenset[str],
    settings: Settings,
    override: Priority | None,
) -> StepSpec:
    if not isinstance(raw, dict):
        raise WorkflowError(f"steps[{index}] must be an object, not {_kind(raw)}")
    if "name" not in raw:
        raise WorkflowError(f"steps[{index}]: field 'name' is missing")
    name = _name(raw["name"], f"steps[{index}]: field 'name'")
    where = f"step '{name}'"
    _no_unknown_keys(raw, _STEP_KEYS, where)

    agent_raw = raw.get("agent")
    if agent_raw is None:
        raise WorkflowError(f"{where}: field 'agent' is missing")
    agent = _name(agent_raw, f"{where}: field 'agent'")
    if agent not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise WorkflowError(f"{where}: unknown agent '{agent}' (known agents: {listed})")

    step_input = raw.get("input")
    try:
        encoded = json.dumps(step_input, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise WorkflowError(f"{where}: field 'input' is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise WorkflowError(f"{where}: field 'input' is nested too deeply") from None
    if len(encoded.encode("utf-8")) > MAX_INPUT_BYTES:
        raise WorkflowError(f"{where}: field 'input' is larger than {MAX_INPUT_BYTES} bytes")

    depends_on = _string_list(raw.get("depends_on", []), f"{where}: field 'depends_on'")
    if name in depends_on:
        raise WorkflowError(f"dependency cycle: {name} -> {name}")

    locks = _string_list(raw.get("locks", []), f"{where}: field 'locks'")
    if len(locks) > MAX_LOCKS_PER_STEP:
        raise WorkflowError(
            f"{where}: field 'locks' has {len(locks)} keys; at most {MAX_LOCKS_PER_STEP} allowed"
        )

    if override is not None:
        priority = override
    elif "priority" in raw:
        priority = _priority(raw["priority"], f"{where}: field 'priority'")
    else:
        priority = Priority.NORMAL

    max_attempts, base_ms, max_ms = _retry(raw.get("retry"), agent, settings, where)
    return StepSpec(
        name=name,
        agent=agent,
        input=step_input,
        depends_on=depends_on,
        priority=priority,
        locks=locks,
        max_attempts=max_attempts,
        base_backoff_ms=base_ms,
        max_backoff_ms=max_ms,
    )


def _retry(raw: Any, agent: str, settings: Settings, where: str) -> tuple[int, int, int]:
    policy = settings.retry_policy_for(agent)
    values = {
        "max_attempts": policy.max_attempts,
        "base_backoff_ms": policy.base_backoff_ms,
        "max_backoff_ms": policy.max_backoff_ms,
    }
    if raw is not None:
        if not isinstance(raw, dict):
            raise WorkflowError(f"{where}: field 'retry' must be an object, not {_kind(raw)}")
        _no_unknown_keys(raw, frozenset(_RETRY_KEYS), f"{where}: field 'retry'")
        for key in _RETRY_KEYS:
            if key not in raw:
                continue
            value = raw[key]
            field = f"{where}: field 'retry.{key}'"
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorkflowError(f"{field} must be an integer, not {_kind(value)}")
            if key == "max_attempts" and not 1 <= value <= _MAX_ATTEMPTS_CAP:
                raise WorkflowError(f"{field} must be between 1 and {_MAX_ATTEMPTS_CAP}")
            if key != "max_attempts" and not 0 <= value <= _MAX_BACKOFF_CAP_MS:
                raise WorkflowError(f"{field} must be between 0 and {_MAX_BACKOFF_CAP_MS}")
            values[key] = value
    if values["max_backoff_ms"] < values["base_backoff_ms"]:
        raise WorkflowError(
            f"{where}: retry max_backoff_ms ({values['max_backoff_ms']}) is below "
            f"base_backoff_ms ({values['base_backoff_ms']})"
        )
    return values["max_attempts"], values["base_backoff_ms"], values["max_backoff_ms"]


# -- small checks ---------------------------------------------------------------------


def _name(value: Any, field: str) -> str:
    if value is None:
        raise WorkflowError(f"{field} is missing")
    if not isinstance(value, str):
        raise WorkflowError(f"{field} must be a string, not {_kind(value)}")
    if not value.strip():
        raise WorkflowError(f"{field} is empty")
    if len(value) > MAX_NAME_CHARS:
        raise WorkflowError(f"{field} is longer than {MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise WorkflowError(f"{field} contains control characters")
    return value


def _string_list(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise WorkflowError(f"{field} must be a list of strings, not {_kind(value)}")
    out: list[str] = []
    for i, item in enumerate(value):
        item_name = _name(item, f"{field}[{i}]")
        if item_name in out:
            raise WorkflowError(f"{field} lists '{item_name}' twice")
        out.append(item_name)
    return tuple(out)


def _priority(value: Any, field: str) -> Priority:
    if isinstance(value, str):
        try:
            return Priority.parse(value)
        except KeyError:
            pass
    raise WorkflowError(f"{field} must be one of high, normal, low; got {value!r}")


def _no_unknown_keys(doc: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        raise WorkflowError(
            f"{where}: unknown field{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{k}'" for k in unknown)
            + f" (allowed: {', '.join(sorted(allowed))})"
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
