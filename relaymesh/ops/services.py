"""Operator services: one function per operator action or read, over the ``Store`` protocol.

The CLI (``cli/``) and the web API (``web/api.py``) call exactly one of these per
request and only render the answer. Every state change goes through one function
here that passes the ``actor`` (``cli:<user>``, ``web:<token name>@<address>``,
``node:<name>``) to the store, which writes the audit row in the same transaction as
the change. Nothing here opens sockets, reads the clock or knows a backend.

Reload requests. Nodes cannot be reached without joining the mesh, so
``request_reload`` records an audit row with action ``reload_request`` (target: a
node name, or ``*`` for every node). Each node polls the audit trail for such rows
newer than the last one it saw (``pending_reload_requests``) and reloads its settings
as on SIGHUP; the changed field names land in ``settings_history``. This needs only
the store, survives a node being down (it picks the request up if it was asked
while it runs; a restarted node reads its settings anyway), and is audited.

Gossip-sync requests ride the same mechanism: ``request_gossip_sync`` records a
``gossip_sync_request`` row naming the node, the node runs one anti-entropy exchange
and answers with a ``gossip_sync`` audit row carrying the request's id and the
merges, which ``wait_gossip_sync`` polls for.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relaymesh.exceptions import InvalidStateError, NotFoundError
from relaymesh.model import (
    Actor,
    AuditRecord,
    CancelResult,
    DeadOwnerReclaim,
    LeaseConflict,
    MemberStatus,
    MeshNode,
    OwnershipEvent,
    SettingsChange,
    StepRecord,
    StepStatus,
    WorkflowRecord,
    WorkflowSpec,
)
from relaymesh.settings import Settings
from relaymesh.store import rules
from relaymesh.store.base import ConflictReport, Store

__all__ = [
    "GOSSIP_SYNC_ACTION",
    "GOSSIP_SYNC_REQUEST_ACTION",
    "RELOAD_ALL",
    "RELOAD_REQUEST_ACTION",
    "ReloadRequest",
    "Stats",
    "cancel_workflow",
    "cli_actor",
    "conflict_report",
    "dispatch_summary",
    "known_agents",
    "latest_audit_id",
    "list_conflicts",
    "list_dead",
    "list_members",
    "list_ownership_events",
    "list_tasks",
    "members_by_status",
    "mesh_prune",
    "mesh_recover",
    "node_actor",
    "parse_time_ms",
    "pending_gossip_syncs",
    "pending_reload_requests",
    "query_audit",
    "record_gossip_sync",
    "record_settings_change",
    "replay_batch",
    "replay_step",
    "request_gossip_sync",
    "request_reload",
    "require_mesh_node",
    "run_maintenance_pass",
    "settings_history",
    "stats",
    "submit_workflow",
    "wait_gossip_sync",
    "web_actor",
    "workflow_status",
]

MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest time an operator may name."""
RELOAD_REQUEST_ACTION = "reload_request"
RELOAD_ALL = "*"
GOSSIP_SYNC_REQUEST_ACTION = "gossip_sync_request"
GOSSIP_SYNC_ACTION = "gossip_sync"
GOSSIP_SYNC_POLL_S = 0.2


# -- actors ---------------------------------------------------------------------------


def cli_actor() -> str:
    """``cli:<user>`` for the user running the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


USER_AGENT_MAX_CHARS = 256


def web_actor(token_name: str, address: str, user_agent: str | None = None) -> Actor:
    """``web:<token name>@<address>``; the client's user agent (cut to
    ``USER_AGENT_MAX_CHARS``, control characters dropped) goes into every audit row the
    write produces, as ``details.user_agent``."""
    details: dict[str, Any] = {}
    if user_agent is not None:
        clean = "".join(c for c in user_agent if c.isprintable())[:USER_AGENT_MAX_CHARS]
        details["user_agent"] = clean
    return Actor(f"web:{token_name}@{address}", details)


def node_actor(node: str) -> str:
    return f"node:{node}"


# -- workflows and steps ------------------------------------------------------------------


def known_agents(settings: Settings) -> frozenset[str]:
    """Agents a workflow may name: the built-ins and the script agents configured."""
    from relaymesh.work.agents import known_agents as agents_known

    return agents_known(settings)


async def submit_workflow(store: Store, spec: WorkflowSpec, actor: str) -> str:
    """Insert a validated workflow; return its id. Audited (``submit``)."""
    return await store.submit_workflow(spec, actor)


async def workflow_status(
    store: Store, workflow_id: str
) -> tuple[WorkflowRecord, list[StepRecord]]:
    """The workflow and its steps; ``NotFoundError`` when unknown."""
    return await store.get_workflow(workflow_id)


async def list_tasks(
    store: Store,
    *,
    status: StepStatus | None = None,
    workflow_id: str | None = None,
    agent: str | None = None,
    limit: int = 100,
) -> list[StepRecord]:
    return await store.list_steps(
        status=status, workflow_id=workflow_id, agent=agent, limit=_positive(limit, "limit")
    )


async def list_dead(store: Store, *, limit: int = 100) -> list[StepRecord]:
    return await store.list_steps(status=StepStatus.DEAD_LETTER, limit=_positive(limit, "limit"))


async def cancel_workflow(store: Store, workflow_id: str, mode: str, actor: str) -> CancelResult:
    """``soft``: steps not started; ``hard``: every unfinished step, running ones fenced
    (their owners see the lost lease and kill the agent). Audited (``cancel``)."""
    rules.check_cancel_mode(mode)
    return await store.cancel_workflow(workflow_id, mode, actor)


async def replay_step(store: Store, step_id: str, actor: str) -> StepRecord:
    """One dead letter (or cancelled step) back to READY. Audited (``replay``)."""
    return await store.replay_step(step_id, actor)


async def replay_batch(
    store: Store,
    *,
    status: StepStatus,
    limit: int,
    actor: str,
    agent: str | None = None,
    workflow_id: str | None = None,
) -> int:
    """Replay up to ``limit`` steps in ``status``; idempotent. Audited (``replay_batch``)."""
    status = rules.check_replayable(status)
    return await store.replay_batch(
        status=status,
        limit=_positive(limit, "limit"),
        actor=actor,
        agent=agent,
        workflow_id=workflow_id,
    )


# -- mesh --------------------------------------------------------------------------------


async def list_members(store: Store) -> list[MeshNode]:
    """The mesh as the nodes last reported it, by name."""
    return sorted(await store.list_mesh_nodes(), key=lambda n: n.name)


async def mesh_recover(
    store: Store, *, limit: int, actor: str, stale_after_ms: int
) -> DeadOwnerReclaim:
    """Reclaim RUNNING steps owned by DEAD/LEFT nodes now, those whose leases have not
    been heartbeated for ``stale_after_ms``. Audited (``recover``)."""
    return await store.reclaim_dead_owners(
        limit=_positive(limit, "limit"), actor=actor, stale_after_ms=stale_after_ms
    )


async def mesh_prune(store: Store, *, older_than_ms: int, limit: int, actor: str) -> int:
    """Forget DEAD/LEFT members older than ``older_than_ms``. Audited (``prune``)."""
    if older_than_ms < 0:
        raise InvalidStateError("--older-than-ms must not be negative")
    return await store.prune_mesh_nodes(
        older_than_ms=older_than_ms, limit=_positive(limit, "limit"), actor=actor
    )


# -- operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    steps: dict[str, int]
    queue_lag_ms: int
    members: dict[str, int]
    running_by_owner_status: dict[str, int]
    at_ms: int
    dispatch: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "queue_lag_ms": self.queue_lag_ms,
            "members": self.members,
            "running_by_owner_status": self.running_by_owner_status,
            "dispatch": self.dispatch,
            "at": self.at_ms,
        }


async def stats(store: Store) -> Stats:
    """Step counts by status, queue lag, members by status, the mesh's dispatch window:
    the console's cards."""
    counts = await store.step_counts()
    nodes = await store.list_mesh_nodes()
    return Stats(
        steps={s.value: int(counts.get(s, 0)) for s in StepStatus},
        queue_lag_ms=await store.queue_lag_ms(),
        members=members_by_status(nodes),
        running_by_owner_status=await store.running_by_owner_status(),
        at_ms=await store.now_ms(),
        dispatch=await dispatch_summary(store),
    )


async def dispatch_summary(store: Store) -> dict[str, Any]:
    """The mesh's one-hour dispatch window as the nodes last wrote it
    (``{"window_s", "total", "success", "failed", "rate", "failure_reasons", "nodes",
    "agents"}``, INTERFACE.md)."""
    from relaymesh.work.dispatch import WINDOW_MS, summarize_rows

    return summarize_rows(await store.dispatch_totals(WINDOW_MS))


def members_by_status(nodes: Sequence[MeshNode]) -> dict[str, int]:
    """``{"alive": n, "suspect": n, "dead": n, "left": n}`` (every key present)."""
    out = {s.value.lower(): 0 for s in MemberStatus}
    for node in nodes:
        out[node.status.value.lower()] += 1
    return out


async def list_ownership_events(
    store: Store, *, since_ms: int | None = None, limit: int = 100
) -> list[OwnershipEvent]:
    return await store.list_ownership_events(since_ms=since_ms, limit=_positive(limit, "limit"))


async def list_conflicts(
    store: Store, *, since_ms: int | None = None, limit: int = 100
) -> list[LeaseConflict]:
    return await store.list_conflicts(since_ms=since_ms, limit=_positive(limit, "limit"))


async def conflict_report(
    store: Store, *, since_ms: int | None = None, top: int = 10
) -> ConflictReport:
    return await store.conflict_report(since_ms=since_ms, top=_positive(top, "limit"))


async def query_audit(
    store: Store,
    *,
    task_id: str | None = None,
    action: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise InvalidStateError("--from is after --to")
    return await store.query_audit(
        task_id=task_id,
        action=action,
        from_ms=from_ms,
        to_ms=to_ms,
        limit=_positive(limit, "limit"),
    )


async def settings_history(store: Store, *, limit: int = 20) -> list[SettingsChange]:
    return await store.list_settings_history(_positive(limit, "limit"))


# -- settings reloads ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    id: int
    at_ms: int
    actor: str
    target: str


async def require_mesh_node(store: Store, node: str) -> None:
    """``NotFoundError`` with one line when ``node`` is not in the mesh table (any status):
    an operator's typo must not become a request nobody will ever act on."""
    names = sorted(m.name for m in await store.list_mesh_nodes())
    if node not in names:
        known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "none"
        raise NotFoundError(f"node {node!r} is not in the mesh (known: {known})")


async def request_reload(store: Store, *, node: str | None, actor: str) -> ReloadRequest:
    """Ask ``node`` (or every node) to reload its settings. The nodes poll for it (see the
    module docstring); the audit row is the request. A ``node`` not in the mesh is
    refused (``NotFoundError``)."""
    if node is not None and node != RELOAD_ALL:
        await require_mesh_node(store, node)
    target = node or RELOAD_ALL
    await store.record_audit(actor, RELOAD_REQUEST_ACTION, target, {"node": target})
    rows = await store.query_audit(action=RELOAD_REQUEST_ACTION, limit=20)
    # Newest first; another operator may have asked at the same moment.
    row = next((r for r in rows if r.actor == actor and r.target == target), None)
    return ReloadRequest(
        id=row.id if row else 0,
        at_ms=row.at_ms if row else await store.now_ms(),
        actor=actor,
        target=target,
    )


async def pending_reload_requests(
    store: Store, *, node: str, after_id: int, since_ms: int, limit: int = 50
) -> list[ReloadRequest]:
    """Reload requests for ``node`` (or for every node) with an id above ``after_id``,
    oldest first. A node remembers the highest id it has acted on."""
    rows = await store.query_audit(action=RELOAD_REQUEST_ACTION, from_ms=since_ms, limit=limit)
    out = [
        ReloadRequest(id=r.id, at_ms=r.at_ms, actor=r.actor, target=r.target or RELOAD_ALL)
        for r in rows
        if r.id > after_id and (r.target in (None, RELOAD_ALL, node))
    ]
    return sorted(out, key=lambda r: r.id)


async def latest_audit_id(store: Store, action: str = RELOAD_REQUEST_ACTION) -> int:
    """The id of the newest ``action`` audit row (0 when none): where a starting node's
    request cursor begins, so old requests are not replayed at start."""
    rows = await store.query_audit(action=action, limit=1)
    return rows[0].id if rows else 0


# -- gossip-sync requests ------------------------------------------------------------------


async def request_gossip_sync(store: Store, *, node: str, actor: str) -> ReloadRequest:
    """Ask ``node`` to run one anti-entropy exchange now (see the module docstring).
    ``NotFoundError`` when the mesh does not know ``node``; ``InvalidStateError`` when it
    is DEAD or LEFT (nobody would answer)."""
    member = next((n for n in await store.list_mesh_nodes() if n.name == node), None)
    if member is None:
        raise NotFoundError(f"no member named {node!r} in the mesh table")
    if member.status in (MemberStatus.DEAD, MemberStatus.LEFT):
        raise InvalidStateError(f"node {node!r} is {member.status.value}: it cannot sync")
    await store.record_audit(actor, GOSSIP_SYNC_REQUEST_ACTION, node, {"node": node})
    rows = await store.query_audit(action=GOSSIP_SYNC_REQUEST_ACTION, limit=20)
    row = next((r for r in rows if r.actor == actor and r.target == node), None)
    if row is None:
        raise InvalidStateError("the gossip-sync request was not recorded")
    return ReloadRequest(id=row.id, at_ms=row.at_ms, actor=actor, target=node)


async def pending_gossip_syncs(
    store: Store, *, node: str, after_id: int, since_ms: int, limit: int = 50
) -> list[ReloadRequest]:
    """Gossip-sync requests for ``node`` with an id above ``after_id``, oldest first."""
    rows = await store.query_audit(action=GOSSIP_SYNC_REQUEST_ACTION, from_ms=since_ms, limit=limit)
    out = [
        ReloadRequest(id=r.id, at_ms=r.at_ms, actor=r.actor, target=node)
        for r in rows
        if r.id > after_id and r.target == node
    ]
    return sorted(out, key=lambda r: r.id)


async def record_gossip_sync(
    store: Store, *, node: str, request_id: int | None, result: dict[str, Any]
) -> None:
    """A node ran a requested exchange: its answer, audited as the node."""
    details = {**result, "node": node, "request_id": request_id}
    await store.record_audit(node_actor(node), GOSSIP_SYNC_ACTION, node, details)


async def wait_gossip_sync(
    store: Store, request: ReloadRequest, *, timeout_ms: int
) -> dict[str, Any]:
    """Poll the audit trail for the node's answer to ``request``; ``InvalidStateError``
    when none came within ``timeout_ms`` (store clock)."""
    import asyncio

    deadline_ms = await store.now_ms() + timeout_ms
    while True:
        rows = await store.query_audit(action=GOSSIP_SYNC_ACTION, from_ms=request.at_ms, limit=100)
        for row in rows:
            if row.details.get("request_id") == request.id:
                return dict(row.details)
        if await store.now_ms() >= deadline_ms:
            raise InvalidStateError(
                f"node {request.target!r} did not answer within {timeout_ms / 1000:g} s"
                " (is it running with a store connection?)"
            )
        await asyncio.sleep(GOSSIP_SYNC_POLL_S)


async def record_settings_change(
    store: Store, *, node: str, fields: Sequence[str], refused: Sequence[str] = ()
) -> None:
    """A node reloaded its settings: the changed field names (never values), applied and
    ``refused`` (they need a restart). Audited."""
    await store.record_settings_change(node, list(fields), list(refused))


def parse_time_ms(value: str) -> int:
    """An operator's time (``T``): ISO-8601 (no zone means UTC) or epoch milliseconds.
    Raises ``ValueError`` with a clear text."""
    text = value.strip()
    if text.lstrip("-").isascii() and text.lstrip("-").isdigit():
        if len(text) > len(str(MAX_TIME_MS)) + 1:
            raise ValueError(f"time out of range: {value[:40]!r}")
        ms = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ms = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):
            shown = value[:40] + ("..." if len(value) > 40 else "")
            raise ValueError(f"expected ISO-8601 or epoch milliseconds, got {shown!r}") from None
    # Stores keep times as 64-bit integers; a value beyond year 9999 is a typo or an attack.
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"time out of range (0 to {MAX_TIME_MS} ms): {value[:40]!r}")
    return ms


async def run_maintenance_pass(store: Store, settings: Settings, *, node: str) -> dict[str, Any]:
    """One maintenance pass now, as ``node``, leader or not: expired leases, dead owners'
    steps, due retries, mesh prune. Audited as the operator (``cli:<user>``), who
    asked for it, not as the node it runs as. ``node`` must be in the mesh
    (``NotFoundError`` otherwise)."""
    await require_mesh_node(store, node)
    from relaymesh.clock import SystemClock
    from relaymesh.ops.metrics import Metrics
    from relaymesh.work.maintenance import Maintenance

    maintenance = Maintenance(
        store=store,
        node=node,
        settings=lambda: settings,
        metrics=Metrics(),
        clock=SystemClock(),
        actor=cli_actor(),
    )
    return await maintenance.run_once()


def _positive(value: int, name: str) -> int:
    if value <= 0:
        raise InvalidStateError(f"--{name} must be a positive number")
    return value
