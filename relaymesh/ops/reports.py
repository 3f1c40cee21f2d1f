"""Reports: the mesh health verdict behind ``relaymesh mesh-summary``.

``mesh-summary`` is meant to be run by health checks (Nagios/Icinga style), so its
exit code is the verdict:

====  =========  ================================================================
exit  verdict    when
====  =========  ================================================================
0     healthy    none of the conditions below
1     degraded   any member is SUSPECT; or a RUNNING step is owned by a DEAD, LEFT
                 or unknown node (recovery is pending but still within one lease);
                 or the local node (``node.name`` in the settings) is known and
                 not ALIVE
2     unhealthy  no member is ALIVE; or a RUNNING step has been owned by a DEAD,
                 LEFT or unknown node for longer than one lease (``worker.lease_ms``,
                 counted from the owner's DEAD/LEFT verdict, or from the claim for an
                 owner the mesh table does not know); or a RUNNING step's lease
                 expired more than one lease ago (nothing reclaimed it: no
                 maintenance leader is running)
3     unknown    the check itself failed (store unreachable, bad settings)
====  =========  ================================================================

The verdict is computed from the store only (``mesh_nodes`` as the nodes last wrote
it, and the RUNNING steps), so it works from any host that can reach the store
without joining the mesh. ``evaluate_mesh`` is pure; ``mesh_summary`` gathers its
inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from relaymesh.model import MemberStatus, MeshNode, StepRecord, StepStatus
from relaymesh.ops.services import members_by_status
from relaymesh.store.base import Store

__all__ = ["Health", "MeshSummary", "evaluate_mesh", "mesh_summary"]

RUNNING_SCAN_LIMIT = 10_000
"""RUNNING steps examined per summary; far above what slots x nodes can hold."""


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

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY

    def to_json(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "members": self.members,
            "running_by_owner_status": self.running_by_owner_status,
            "healthy": self.healthy,
        }


def evaluate_mesh(
    nodes: Sequence[MeshNode],
    running: Sequence[StepRecord],
    *,
    now_ms: int,
    lease_ms: int,
    local_name: str | None = None,
) -> tuple[Health, list[str]]:
    """The verdict and its reasons (see the module docstring). Pure."""
    by_name = {n.name: n for n in nodes}
    unhealthy: list[str] = []
    degraded: list[str] = []

    if not any(n.status is MemberStatus.ALIVE for n in nodes):
        unhealthy.append("no ALIVE member")
    suspects = sorted(n.name for n in nodes if n.status is MemberStatus.SUSPECT)
    if suspects:
        degraded.append(f"SUSPECT: {', '.join(suspects)}")
    if local_name is not None and local_name in by_name:
        local = by_name[local_name]
        if local.status is not MemberStatus.ALIVE:
            degraded.append(f"local node {local_name} is {local.status.value}")

    stuck: dict[str, int] = {}
    pending: dict[str, int] = {}
    expired = 0
    for step in running:
        if step.status is not StepStatus.RUNNING:
            continue
        if step.lease_expires_at_ms is not None and now_ms - step.lease_expires_at_ms > lease_ms:
            expired += 1
        owner_name = step.owner_node or "?"
        owner = by_name.get(owner_name)
        if owner is not None and owner.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
            continue
        if owner is not None:
            since_ms = max(owner.status_changed_at_ms, step.started_at_ms or 0)
            label = f"{owner_name} ({owner.status.value})"
        else:
            since_ms = step.started_at_ms or step.updated_at_ms
            label = f"{owner_name} (UNKNOWN)"
        target = stuck if now_ms - since_ms > lease_ms else pending
        target[label] = target.get(label, 0) + 1
    for label, count in sorted(stuck.items()):
        unhealthy.append(f"{count} RUNNING step(s) owned by {label} for more than one lease")
    for label, count in sorted(pending.items()):
        degraded.append(f"{count} RUNNING step(s) owned by {label}, recovery pending")
    if expired:
        unhealthy.append(f"{expired} RUNNING step(s) with a lease expired and not reclaimed")

    if unhealthy:
        return Health.UNHEALTHY, unhealthy + degraded
    if degraded:
        return Health.DEGRADED, degraded
    return Health.HEALTHY, []


async def mesh_summary(
    store: Store, *, lease_ms: int, local_name: str | None = None
) -> MeshSummary:
    """Members by status, RUNNING steps by owner status, and the verdict."""
    nodes = await store.list_mesh_nodes()
    running = await store.list_steps(status=StepStatus.RUNNING, limit=RUNNING_SCAN_LIMIT)
    by_owner = await store.running_by_owner_status()
    now_ms = await store.now_ms()
    health, reasons = evaluate_mesh(
        nodes, running, now_ms=now_ms, lease_ms=lease_ms, local_name=local_name
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
    )
