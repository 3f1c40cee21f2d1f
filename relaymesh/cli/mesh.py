"""Mesh commands: mesh-summary, mesh-recover, mesh-prune, maintenance, gossip-sync.

They read and change the mesh through the store (``mesh_nodes``, as the nodes last
wrote it), so they work from any host that reaches the store without joining the
mesh (``gossip-sync`` asks a node through the store too, and waits for its answer).
``mesh-summary`` exits with its verdict (rules: ``docs/health.md``; code:
``relaymesh.ops.reports``): 0 healthy, 1 degraded, 2 unhealthy, 3 when the check
itself failed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from relaymesh.cli.common import CliContext, echo_json, echo_table, pass_cli, run_async
from relaymesh.cli.render import format_ms, store_session
from relaymesh.exceptions import RelayMeshError
from relaymesh.model import DeadOwnerReclaim, MeshNode
from relaymesh.ops import reports, services

__all__ = ["register"]

_LIMIT = click.IntRange(min=1)


@click.command("mesh-summary")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--node", "local_name", default=None, help="Judge this node as the local one.")
@pass_cli
def mesh_summary(cli: CliContext, as_json: bool, local_name: str | None) -> None:
    """Members by status, RUNNING steps by owner status, the mesh's dispatch
    statistics of the last hour (--json: "dispatch"), and the verdict with one line
    per reason.

    Exit 0 healthy, 1 degraded, 2 unhealthy, 3 unknown (the check failed)."""
    try:
        settings = cli.settings()
        name = local_name or settings.node.name

        async def go() -> tuple[reports.MeshSummary, list[MeshNode]]:
            async with store_session(settings.node.store_url) as store:
                summary = await reports.mesh_summary(store, settings, local_name=name)
                members = await services.list_members(store)
            return summary, members

        summary, members = asyncio.run(go())
    except (RelayMeshError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(reports.Health.UNKNOWN))
    if as_json:
        echo_json(summary.to_json())
    else:
        click.echo(f"mesh: {summary.health.name.lower()}")
        for reason in summary.reasons:
            click.echo(f"  - {reason}")
        counts = ", ".join(f"{k} {v}" for k, v in summary.members.items())
        click.echo(f"members: {counts}")
        running = ", ".join(f"{k} {v}" for k, v in summary.running_by_owner_status.items())
        click.echo(f"running steps by owner status: {running or 'none'}")
        for line in _dispatch_lines(summary.dispatch):
            click.echo(line)
        echo_table(
            ["name", "address", "status", "incarnation", "since", "reporter"],
            [
                (
                    m.name,
                    m.address,
                    m.status.value,
                    m.incarnation,
                    format_ms(m.status_changed_at_ms),
                    m.reporter,
                )
                for m in members
            ],
        )
    sys.exit(int(summary.health))


@click.command("mesh-recover")
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def mesh_recover(cli: CliContext, limit: int, as_json: bool) -> None:
    """Reclaim RUNNING steps owned by DEAD (or LEFT) nodes now.

    Only steps whose leases have not been heartbeated for two heartbeat intervals
    ([worker] heartbeat_ms) move: a node reported DEAD that still heartbeats keeps its
    work, and the count of such steps is shown."""
    stale_after_ms = cli.settings().worker.dead_owner_stale_after_ms

    async def go() -> DeadOwnerReclaim:
        async with store_session(cli.store_url) as store:
            return await services.mesh_recover(
                store, limit=limit, actor=services.cli_actor(), stale_after_ms=stale_after_ms
            )

    outcome = run_async(go)
    step_ids = list(outcome.step_ids)
    if as_json:
        echo_json(
            {
                "reclaimed": len(step_ids),
                "step_ids": step_ids,
                "still_heartbeating": outcome.still_heartbeating,
            }
        )
    else:
        click.echo(f"reclaimed {len(step_ids)} step(s)")
        for step_id in step_ids:
            click.echo(f"  {step_id}")
        if outcome.still_heartbeating:
            click.echo(
                f"left {outcome.still_heartbeating} step(s) alone: their owners are reported"
                " DEAD but still heartbeat their leases"
            )


@click.command("mesh-prune")
@click.option(
    "--older-than-ms",
    type=click.IntRange(min=0),
    default=None,
    help="Forget members DEAD or LEFT longer than this [maintenance.mesh_prune_older_than_ms].",
)
@click.option("--limit", type=_LIMIT, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def mesh_prune(cli: CliContext, older_than_ms: int | None, limit: int, as_json: bool) -> None:
    """Forget DEAD/LEFT members whose status changed more than MS ago (default: the
    settings' maintenance.mesh_prune_older_than_ms)."""

    async def go() -> int:
        settings = cli.settings()
        age_ms = settings.maintenance.mesh_prune_older_than_ms
        if older_than_ms is not None:
            age_ms = older_than_ms
        async with store_session(settings.node.store_url) as store:
            return await services.mesh_prune(
                store, older_than_ms=age_ms, limit=limit, actor=services.cli_actor()
            )

    count = run_async(go)
    if as_json:
        echo_json({"pruned": count})
    else:
        click.echo(f"pruned {count} member(s)")


@click.command("maintenance")
@click.option(
    "--node-id", "node_id", required=True, help="Run the pass as this node (one in the mesh)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def maintenance(cli: CliContext, node_id: str, as_json: bool) -> None:
    """Run one maintenance pass now: dead owners, expired leases, due retries, prune."""

    async def go() -> dict[str, Any]:
        settings = cli.settings()  # inside run_async: a bad file is one clean error line
        async with store_session(settings.node.store_url) as store:
            return await services.run_maintenance_pass(store, settings, node=node_id)

    result = run_async(go)
    if as_json:
        echo_json(result)
    else:
        for key, value in result.items():
            click.echo(f"{key}: {value}")


def _dispatch_lines(doc: dict[str, Any]) -> list[str]:
    """``dispatch (last 1 h): ...`` and one line per agent, for the human summary."""

    def one(d: dict[str, Any]) -> str:
        if not d.get("total"):
            return "no samples"
        reasons = ", ".join(f"{k} {v}" for k, v in d["failure_reasons"].items())
        text = f"{d['total']} total, {d['success']} ok, {d['failed']} failed, rate {d['rate']:.1%}"
        return f"{text} ({reasons})" if reasons else text

    hours = int(doc.get("window_s", 3600)) / 3600
    lines = [f"dispatch (last {hours:g} h): {one(doc)}"]
    for agent, d in doc.get("agents", {}).items():
        lines.append(f"  agent {agent}: {one(d)}")
    return lines


@click.command("gossip-sync")
@click.option("--node", required=True, help="The node that runs the exchange.")
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="How long to wait for the node's answer (it polls the store every 2 s).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def gossip_sync(cli: CliContext, node: str, timeout_s: float, as_json: bool) -> None:
    """Ask node N to run one anti-entropy (push/pull) exchange now; print what it merged.

    Exit 1 when the node could not exchange (no peer, peer unreachable) or did not
    answer in time."""

    async def go() -> dict[str, Any]:
        async with store_session(cli.store_url) as store:
            req = await services.request_gossip_sync(store, node=node, actor=services.cli_actor())
            return await services.wait_gossip_sync(store, req, timeout_ms=int(timeout_s * 1000))

    result = run_async(go)
    if as_json:
        echo_json(result)
    elif result.get("error") is None:
        click.echo(
            f"{node} exchanged with {result.get('peer')}: merged {result.get('merged_here')}"
            f" update(s) here, {result.get('merged_there')} there"
            + (" (views agreed)" if result.get("agreed") else "")
        )
    if result.get("error") is not None:
        click.echo(f"error: {node}: {result['error']}", err=True)
        sys.exit(1)


def register(main: click.Group) -> None:
    for command in (mesh_summary, mesh_recover, mesh_prune, maintenance, gossip_sync):
        main.add_command(command)
