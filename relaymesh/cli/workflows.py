"""``relaymesh workflows`` (newest first, with step counts) and ``relaymesh schedules``."""

from __future__ import annotations

import click

from relaymesh.cli.common import CliContext, echo_json, echo_table, pass_cli, run_async
from relaymesh.cli.render import TIME, format_ms, store_session
from relaymesh.model import WorkflowStatus

__all__ = ["register"]

_WORKFLOW_STATUSES = click.Choice([s.value for s in WorkflowStatus], case_sensitive=False)


@click.command("workflows")
@click.option("--status", "status_", type=_WORKFLOW_STATUSES, default=None)
@click.option("--name", default=None, help="Only workflows with this name.")
@click.option("--since", "since_ms", type=TIME, default=None, help="Created at or after.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=100, show_default=True)
@click.option("--cursor", default=None, help="Next page: the cursor a previous page printed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def workflows(
    cli: CliContext,
    *,
    status_: str | None,
    name: str | None,
    since_ms: int | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List workflows, newest first (keyset paging with --cursor)."""
    from relaymesh.ops.submits import list_workflows

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            page, following = await list_workflows(
                store,
                status=WorkflowStatus(status_.upper()) if status_ else None,
                name=name,
                since_ms=since_ms,
                cursor=cursor,
                limit=limit,
            )
        if following:
            # stderr, so stdout stays the list INTERFACE.md promises.
            click.echo(f"next page: --cursor {following}", err=True)
        if as_json:
            echo_json([w.to_json() for w in page])
            return
        echo_table(
            ["id", "name", "status", "created", "finished", "key", "schedule", "steps"],
            [
                (
                    w.id,
                    w.name,
                    w.status.value,
                    format_ms(w.created_at_ms),
                    format_ms(w.finished_at_ms),
                    w.idempotency_key,
                    w.schedule,
                    ",".join(f"{k}={v}" for k, v in sorted(w.steps.items())) or None,
                )
                for w in page
            ],
        )

    run_async(go)


@click.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def schedules(cli: CliContext, as_json: bool) -> None:
    """Configured schedules: expression, next fire, last fire and its workflow id."""
    from relaymesh.ops.schedules import list_schedules

    settings = cli.settings()

    async def go() -> None:
        async with store_session(settings.node.store_url) as store:
            rows = await list_schedules(store, settings)
        if as_json:
            echo_json(rows)
            return
        echo_table(
            ["name", "expression", "timezone", "enabled", "next fire", "last fire", "workflow"],
            [
                (
                    r["name"],
                    r["expression"],
                    r["timezone"],
                    "yes" if r["enabled"] else "no",
                    format_ms(r["next_fire_at"]),
                    format_ms(r["last_fire_at"]),
                    r["last_workflow_id"],
                )
                for r in rows
            ],
        )

    run_async(go)


def register(main: click.Group) -> None:
    main.add_command(workflows)
    main.add_command(schedules)
