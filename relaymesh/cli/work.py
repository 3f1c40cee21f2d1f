"""Workflow commands: submit, status, tasks, dead, cancel, replay, replay-batch.

Each command parses its arguments, calls one function of ``relaymesh.ops.services``
and renders the answer; state changes are audited there as ``cli:<user>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from relaymesh.cli.common import CliContext, echo_json, echo_table, pass_cli, run_async
from relaymesh.cli.render import format_ms, render_steps, store_session
from relaymesh.model import StepStatus
from relaymesh.ops import paging, services

__all__ = ["register"]

_STATUSES = click.Choice([s.value for s in StepStatus], case_sensitive=False)
_LIMIT = click.IntRange(min=1)


@click.command("submit")
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"], case_sensitive=False),
    default=None,
    help="Priority of the steps that do not name their own.",
)
@click.option(
    "--idempotency-key",
    default=None,
    help="Submit only once per key: a repeat prints the first workflow's id, writes nothing.",
)
@pass_cli
def submit(cli: CliContext, file: str, priority: str | None, idempotency_key: str | None) -> None:
    """Submit a workflow (JSON or TOML; - reads stdin); prints its id.

    --priority sets the priority of every step, over what the file says."""
    from relaymesh.ops.submits import submit_workflow_once
    from relaymesh.work.workflow import load_workflow_file

    async def go() -> str:
        # Inside run_async: a bad settings file is one clean error line, not a traceback.
        settings = cli.settings()
        # Validate before opening the store: a malformed file writes nothing.
        spec = load_workflow_file(
            file,
            known_agents=services.known_agents(settings),
            settings=settings,
            priority_override=priority,
        )
        # A submit may create the store: nodes started on it later run the workflow.
        async with store_session(settings.node.store_url, create=True) as store:
            outcome = await submit_workflow_once(store, spec, services.cli_actor(), idempotency_key)
        if not outcome.created:
            click.echo(f"already submitted with idempotency key {idempotency_key!r}", err=True)
        return outcome.workflow_id

    click.echo(run_async(go))


@click.command("status")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def status(cli: CliContext, workflow_id: str, as_json: bool) -> None:
    """The workflow and its steps."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            workflow, steps = await services.workflow_status(store, workflow_id)
        if as_json:
            echo_json({"workflow": workflow.to_json(), "steps": [s.to_json() for s in steps]})
            return
        click.echo(
            f"workflow {workflow.id}  {workflow.name}  {workflow.status.value}  "
            f"created {format_ms(workflow.created_at_ms)}"
        )
        echo_table(
            [
                "step",
                "id",
                "agent",
                "status",
                "attempt",
                "epoch",
                "owner",
                "depends_on",
                "replayed",
                "error",
            ],
            [
                (
                    s.name,
                    s.id,
                    s.agent,
                    s.status.value,
                    f"{s.attempt}/{s.max_attempts}",
                    s.lease_epoch,
                    s.owner_node,
                    ",".join(s.depends_on) or None,
                    _replayed(s.replays),
                    _short_error(s.error),
                )
                for s in steps
            ],
        )

    run_async(go)


def _replayed(replays: Sequence[dict[str, Any]]) -> str | None:
    """``2x, last from DEAD_LETTER at attempt 3/3``: how often, and from where."""
    if not replays:
        return None
    last = replays[-1]
    where = f"{last.get('from_attempt')}/{last.get('max_attempts')}"
    return f"{len(replays)}x, last from {last.get('from_status')} at attempt {where}"


def _short_error(error: object) -> str | None:
    if not error:
        return None
    if isinstance(error, dict):
        kind = error.get("kind", "")
        message = str(error.get("message", ""))[:60]
        return f"{kind}: {message}".strip(": ")
    return str(error)[:60]


_CURSOR_HELP = "Next page: the cursor the previous page printed on stderr."


def _next_page(cursor: str | None) -> None:
    if cursor:
        # stderr, so stdout stays the list INTERFACE.md promises (as `workflows`).
        click.echo(f"next page: --cursor {cursor}", err=True)


@click.command("tasks")
@click.option("--status", "status_", type=_STATUSES, default=None)
@click.option("--workflow", "workflow_id", default=None)
@click.option("--agent", default=None)
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--cursor", default=None, help=_CURSOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def tasks(
    cli: CliContext,
    *,
    status_: str | None,
    workflow_id: str | None,
    agent: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List steps, newest first (keyset paging with --cursor)."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            steps, following = await paging.page_tasks(
                store,
                status=StepStatus(status_.upper()) if status_ else None,
                workflow_id=workflow_id,
                agent=agent,
                cursor=cursor,
                limit=limit,
            )
        _next_page(following)
        render_steps(steps, as_json)

    run_async(go)


@click.command("dead")
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--cursor", default=None, help=_CURSOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def dead(cli: CliContext, limit: int, cursor: str | None, as_json: bool) -> None:
    """Dead letters, newest first (keyset paging with --cursor)."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            steps, following = await paging.page_dead(store, cursor=cursor, limit=limit)
        _next_page(following)
        render_steps(steps, as_json)

    run_async(go)


@click.command("cancel")
@click.argument("workflow_id")
@click.option("--mode", type=click.Choice(["hard", "soft"]), required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def cancel(cli: CliContext, workflow_id: str, mode: str, as_json: bool) -> None:
    """Cancel a workflow. hard: every unfinished step (running agents are killed);
    soft: only the steps not started yet."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            result = await services.cancel_workflow(store, workflow_id, mode, services.cli_actor())
        if as_json:
            echo_json(
                {
                    "workflow_id": workflow_id,
                    "mode": mode,
                    "cancelled": result.cancelled,
                    "fenced_running": list(result.fenced_running),
                }
            )
        else:
            click.echo(
                f"cancelled {result.cancelled} step(s) of {workflow_id} ({mode}); "
                f"{len(result.fenced_running)} running step(s) fenced"
            )

    run_async(go)


@click.command("replay")
@click.argument("step_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def replay(cli: CliContext, step_id: str, as_json: bool) -> None:
    """Put one dead letter back to READY."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            step = await services.replay_step(store, step_id, services.cli_actor())
        if as_json:
            echo_json(step.to_json())
        else:
            last = step.replays[-1] if step.replays else {}
            click.echo(
                f"replayed {step.id} ({step.name}): {step.status.value}, attempt "
                f"{step.attempt}/{step.max_attempts} (was {last.get('from_status')} at "
                f"attempt {last.get('from_attempt')}; earlier attempts kept)"
            )

    run_async(go)


@click.command("replay-batch")
@click.option("--status", "status_", type=_STATUSES, required=True)
@click.option("--limit", type=_LIMIT, required=True)
@click.option("--agent", default=None)
@click.option("--workflow", "workflow_id", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def replay_batch(
    cli: CliContext,
    *,
    status_: str,
    limit: int,
    agent: str | None,
    workflow_id: str | None,
    as_json: bool,
) -> None:
    """Replay many steps at once (idempotent); prints how many."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            count = await services.replay_batch(
                store,
                status=StepStatus(status_.upper()),
                limit=limit,
                actor=services.cli_actor(),
                agent=agent,
                workflow_id=workflow_id,
            )
        if as_json:
            echo_json({"replayed": count})
        else:
            click.echo(count)

    run_async(go)


def register(main: click.Group) -> None:
    for command in (submit, status, tasks, dead, cancel, replay, replay_batch):
        main.add_command(command)
