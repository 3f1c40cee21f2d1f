"""Operations commands: audit-query, ownership-events, conflicts, reload-settings,
settings-history, serve-web.

Times (``--from``, ``--to``, ``--since``) take ISO-8601 or epoch milliseconds.
``reload-settings`` records a reload request in the audit trail that every node polls
(see ``relaymesh.ops.services``); SIGHUP to a node does the same locally.
"""

from __future__ import annotations

import json

import click

from relaymesh.cli.common import CliContext, echo_json, echo_table, pass_cli, run_async
from relaymesh.cli.render import TIME, format_ms, render_list, store_session
from relaymesh.ops import paging, services

__all__ = ["register"]

_LIMIT = click.IntRange(min=1)
_CURSOR_HELP = "Next page: the cursor the previous page printed on stderr."


def _next_page(cursor: str | None) -> None:
    if cursor:
        # stderr, so stdout stays the list INTERFACE.md promises (as `workflows`).
        click.echo(f"next page: --cursor {cursor}", err=True)


@click.command("audit-query")
@click.option("--task-id", default=None, help="A step or workflow id.")
@click.option("--action", default=None)
@click.option("--from", "from_ms", type=TIME, default=None)
@click.option("--to", "to_ms", type=TIME, default=None)
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--cursor", default=None, help=_CURSOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def audit_query(
    cli: CliContext,
    *,
    task_id: str | None,
    action: str | None,
    from_ms: int | None,
    to_ms: int | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """The audit trail, newest first (keyset paging with --cursor)."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            rows, following = await paging.page_audit(
                store,
                task_id=task_id,
                action=action,
                from_ms=from_ms,
                to_ms=to_ms,
                cursor=cursor,
                limit=limit,
            )
        _next_page(following)
        render_list(
            rows,
            as_json,
            ["id", "at", "actor", "action", "target", "details"],
            lambda r: (
                r.id,
                format_ms(r.at_ms),
                r.actor,
                r.action,
                r.target,
                json.dumps(r.details, sort_keys=True) if r.details else None,
            ),
        )

    run_async(go)


@click.command("ownership-events")
@click.option("--since", "since_ms", type=TIME, default=None)
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--cursor", default=None, help=_CURSOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def ownership_events(
    cli: CliContext, since_ms: int | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """Claims, releases, reclaims and expiries, with lease epochs, newest first (keyset
    paging with --cursor)."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            rows, following = await paging.page_ownership_events(
                store, since_ms=since_ms, cursor=cursor, limit=limit
            )
        _next_page(following)
        render_list(
            rows,
            as_json,
            ["id", "at", "step", "node", "event", "epoch"],
            lambda e: (e.id, format_ms(e.at_ms), e.step_id, e.node, e.event, e.lease_epoch),
        )

    run_async(go)


@click.command("conflicts")
@click.option("--since", "since_ms", type=TIME, default=None)
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--report", is_flag=True, help="Aggregate: top steps, workers and events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def conflicts(
    cli: CliContext, since_ms: int | None, limit: int, report: bool, as_json: bool
) -> None:
    """Lease CAS conflicts: fenced writes that were rejected."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            if report:
                rep = await services.conflict_report(store, since_ms=since_ms, top=limit)
                rows = None
            else:
                rows = await services.list_conflicts(store, since_ms=since_ms, limit=limit)
        if rows is not None:
            render_list(
                rows,
                as_json,
                ["id", "at", "step", "node", "event", "expected", "actual", "status"],
                lambda c: (
                    c.id,
                    format_ms(c.at_ms),
                    c.step_id,
                    c.node,
                    c.event,
                    c.expected_epoch,
                    c.actual_epoch,
                    c.actual_status,
                ),
            )
            return
        doc = {
            "total": rep.total,
            "by_step": [{"step_id": k, "count": n} for k, n in rep.by_step],
            "by_node": [{"node": k, "count": n} for k, n in rep.by_node],
            "by_event": [{"event": k, "count": n} for k, n in rep.by_event],
        }
        if as_json:
            echo_json(doc)
            return
        click.echo(f"lease conflicts: {rep.total}")
        for title, pairs in (("step", rep.by_step), ("node", rep.by_node), ("event", rep.by_event)):
            click.echo("")
            echo_table([f"top {title}", "count"], pairs)

    run_async(go)


@click.command("reload-settings")
@click.option("--node", default=None, help="Only this node (default: every node).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def reload_settings(cli: CliContext, node: str | None, as_json: bool) -> None:
    """Ask node(s) to reload their settings (they poll the store for the request)."""

    async def go() -> services.ReloadRequest:
        async with store_session(cli.store_url) as store:
            return await services.request_reload(store, node=node, actor=services.cli_actor())

    req = run_async(go)
    if as_json:
        echo_json({"request_id": req.id, "node": req.target, "at": req.at_ms})
    else:
        who = "every node" if req.target == services.RELOAD_ALL else f"node {req.target}"
        click.echo(f"reload requested for {who} (request {req.id})")


@click.command("settings-history")
@click.option("--limit", type=_LIMIT, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def settings_history(cli: CliContext, limit: int, as_json: bool) -> None:
    """Recent settings reloads: time, node, changed field names applied and refused
    (those need a restart)."""

    async def go() -> None:
        async with store_session(cli.store_url) as store:
            rows = await services.settings_history(store, limit=limit)
        render_list(
            rows,
            as_json,
            ["id", "at", "node", "fields", "refused (need a restart)"],
            lambda r: (
                r.id,
                format_ms(r.at_ms),
                r.node,
                ", ".join(r.fields) or "(none)",
                ", ".join(r.refused) or None,
            ),
        )

    run_async(go)


@click.command("serve-web")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, envvar="RELAYMESH_WEB_BIND")
@pass_cli
def serve_web(cli: CliContext, bind: str) -> None:
    """The console and JSON API over the store, without a worker or gossip."""
    from relaymesh.node import serve_web as run_serve_web

    run_async(lambda: run_serve_web(cli.config_path, cli.settings(), bind, cli.log_level))


def register(main: click.Group) -> None:
    for command in (
        audit_query,
        ownership_events,
        conflicts,
        reload_settings,
        settings_history,
        serve_web,
    ):
        main.add_command(command)
