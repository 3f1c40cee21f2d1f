"""Reports: the mesh health verdict behind ``relaymesh mesh-summary``.

``mesh-summary`` is meant to be run by health checks (Nagios/Icinga style), so its
exit code is the verdict. The rules are the operator contract (INTERFACE.md,
``docs/health.md``); ``evaluate_mesh`` is the one place they are written down in code:

====  =========  ================================================================
exit  verdict    when
====  =========  ================================================================
0     healthy    every member that is not LEFT is ALIVE, no agent's breaker is open
                 on a live node, and no RUNNING step waits on a gone owner
1     degraded   any member is SUSPECT, or DEAD and not yet pruned (it stays
                 degraded until the member returns, leaves or is pruned); or an
                 agent's breaker is OPEN on an ALIVE/SUSPECT node; or RUNNING steps
                 are owned by a DEAD/LEFT/unknown node within the reclaim window
2     unhealthy  no member is ALIVE; or RUNNING steps are still owned by a DEAD,
                 LEFT or unknown (pruned) node past the reclaim window: the
                 suspicion timeout plus one maintenance interval, counted from the
                 owner's DEAD/LEFT verdict (from the claim for an unknown owner)
3     unknown    the check itself failed (store unreachable, bad settings)
====  =========  ================================================================

The verdict is computed from the store only (``mesh_nodes`` as the nodes last wrote
it, the RUNNING steps and the audited breaker transitions), so it works from any
host that can reach the store without joining the mesh. ``evaluate_mesh`` is pure;
``mesh_summary`` gathers its inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from relaymesh.membership.suspicion import suspicion_timeout_ms
from relaymesh.model import AuditRecord, MemberStatus, MeshNode, StepRecord, StepStatus
from relaymesh.ops.services import dispatch_summary, members_by_status
from relaymesh.settings import Settings
from relaymesh.store.base import Store

__all__ = [
    "Health",
    "MeshSummary",
    "evaluate_mesh",
    "mesh_summary",
    "open_breakers",
    "reclaim_window_ms",
]

RUNNING_SCAN_LIMIT = 10_000
"""RUNNING steps examined per summary; far above what slots x nodes can hold."""
BREAKER_SCAN_LIMIT = 1_000
"""Recent breaker transitions read to find each (node, agent)'s current state."""
BREAKER_OPEN = "OPEN"


class Health(IntEnum):
    """The verdict; its value is the exit code of ``mesh-summary``."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class MeshSummary:
    local: dict[str, Any]
    members: dict[str, int]
    running_by_owner_status: dict[str, int]
    health: Health
    reasons: tuple[str, ...] = field(default=())
    dispatch: dict[str, Any] = field(default_factory=dict)
    """The mesh's one-hour dispatch window (``services.dispatch_summary``)."""

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY

    def to_json(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "members": self.members,
            "running_by_owner_status": self.running_by_owner_status,
            "dispatch": self.dispatch,
            "healthy": self.healthy,
            "status": self.health.name.lower(),
            "reasons": list(self.reasons),
        }


def reclaim_window_ms(settings: Settings, members: int) -> int:
    """How long a gone owner's RUNNING steps may wait before the mesh is unhealthy:
    the longest suspicion timeout the gossip settings allow for ``members`` nodes
    (Lifeguard starts a suspicion at its maximum) plus one maintenance interval."""
    g = settings.gossip
    min_ms = suspicion_timeout_ms(g.suspicion_mult, members, g.probe_interval_ms)
    max_ms = g.suspicion_max_timeout_mult * min_ms if g.lifeguard else min_ms
    return max_ms + settings.maintenance.interval_ms


def open_breakers(
    transitions: Sequence[AuditRecord], *, now_ms: int, open_ms: int
) -> set[tuple[str, str]]:
    """The (node, agent) pairs whose breaker is OPEN now, from ``breaker_transition``
    audit records newest first (``query_audit`` order). A breaker is OPEN when its
    latest transition went to OPEN less than ``open_ms`` ago: after the cool-down it
    is HALF_OPEN by definition (``CircuitBreaker.state``), whether or not its node
    has looked at it and audited that yet. Pure."""
    latest: dict[tuple[str, str], AuditRecord] = {}
    for record in transitions:
        node = str(record.details.get("node") or "?")
        agent = str(record.details.get("agent") or record.target or "?")
        latest.setdefault((node, agent), record)
    return {
        key
        for key, record in latest.items()
        if record.details.get("to") == BREAKER_OPEN and now_ms - record.at_ms < open_ms
    }


def evaluate_mesh(
    nodes: Sequence[MeshNode],
    running: Sequence[StepRecord],
    *,
    now_ms: int,
    reclaim_window_ms: int,
    breakers_open: Collection[tuple[str, str]] = (),
) -> tuple[Health, list[str]]:
    """The verdict and its reasons, one line each (see the module docstring). Pure.

    ``breakers_open``: the (node, agent) pairs whose breaker is OPEN (``open_breakers``)."""
    by_name = {n.name: n for n in nodes}
    unhealthy: list[str] = []
    degraded: list[str] = []

    if not any(n.status is MemberStatus.ALIVE for n in nodes):
        unhealthy.append("no ALIVE member")
    for status in (MemberStatus.SUSPECT, MemberStatus.DEAD):
        names = sorted(n.name for n in nodes if n.status is status)
        if names:
            degraded.append(f"{status.value}: {', '.join(names)}")

    live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
    for node_name, agent in sorted(breakers_open):
        member = by_name.get(node_name)
        if member is not None and member.status in live:
            degraded.append(f"breaker OPEN: agent {agent} on {node_name}")

    stuck: dict[str, int] = {}
    pending: dict[str, int] = {}
    for step in running:
        if step.status is not StepStatus.RUNNING:
            continue
        owner_name = step.owner_node or "?"
        owner = by_name.get(owner_name)
        if owner is not None and owner.status in live:
            continue
        if owner is not None:
            since_ms = max(owner.status_changed_at_ms, step.started_at_ms or 0)
            label = f"{owner_name} ({owner.status.value})"
        else:
            since_ms = step.started_at_ms or step.updated_at_ms
            label = f"{owner_name} (UNKNOWN)"
        target = stuck if now_ms - since_ms > reclaim_window_ms else pending
        target[label] = target.get(label, 0) + 1
    for label, count in sorted(stuck.items()):
        unhealthy.append(
            f"{count} RUNNING step(s) owned by {label} past the reclaim window"
            f" ({reclaim_window_ms} ms)"
        )
    for label, count in sorted(pending.items()):
        degraded.append(f"{count} RUNNING step(s) owned by {label}, reclaim pending")

    if unhealthy:
        return Health.UNHEALTHY, unhealthy + degraded
    if degraded:
        return Health.DEGRADED, degraded
    return Health.HEALTHY, []


async def mesh_summary(
    store: Store, settings: Settings, *, local_name: str | None = None
) -> MeshSummary:
    """Members by status, RUNNING steps by owner status, and the verdict."""
    nodes = await store.list_mesh_nodes()
    running = await store.list_steps(status=StepStatus.RUNNING, limit=RUNNING_SCAN_LIMIT)
    by_owner = await store.running_by_owner_status()
    transitions = await store.query_audit(action="breaker_transition", limit=BREAKER_SCAN_LIMIT)
    now_ms = await store.now_ms()
    members = sum(1 for n in nodes if n.status is not MemberStatus.LEFT)
    health, reasons = evaluate_mesh(
        nodes,
        running,
        now_ms=now_ms,
        reclaim_window_ms=reclaim_window_ms(settings, members),
        breakers_open=open_breakers(transitions, now_ms=now_ms, open_ms=settings.breaker.open_ms),
    )
    local_node = next((n for n in nodes if n.name == local_name), None)
    local: dict[str, Any] = {
        "node": local_name,
        "status": local_node.status.value if local_node else None,
        "store": store.url,
        "at": now_ms,
        "health": health.name.lower(),
        "reasons": reasons,
    }
    return MeshSummary(
        local=local,
        members=members_by_status(nodes),
        running_by_owner_status=dict(sorted(by_owner.items())),
        health=health,
        reasons=tuple(reasons),
        dispatch=await dispatch_summary(store),
    )
