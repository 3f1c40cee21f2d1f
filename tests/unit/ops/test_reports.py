"""The mesh health verdict (pure): exit 0 healthy, 1 degraded, 2 unhealthy."""

from __future__ import annotations

from relaymesh.model import MemberStatus, MeshNode, Priority, StepRecord, StepStatus
from relaymesh.ops.reports import Health, MeshSummary, evaluate_mesh

NOW = 1_000_000
LEASE = 30_000


def node(name: str, status: MemberStatus, since_ms: int = NOW - 5_000) -> MeshNode:
    return MeshNode(
        name=name,
        address="127.0.0.1:1",
        status=status,
        incarnation=1,
        metadata={},
        status_changed_at_ms=since_ms,
    )


def running(owner: str | None, started_ms: int = NOW - 1_000, expires_ms: int | None = None):
    return StepRecord(
        id=f"s-{owner}-{started_ms}",
        workflow_id="w",
        name="s",
        agent="echo",
        status=StepStatus.RUNNING,
        priority=Priority.NORMAL,
        attempt=1,
        max_attempts=3,
        lease_epoch=1,
        owner_node=owner,
        lease_expires_at_ms=expires_ms if expires_ms is not None else NOW + LEASE,
        not_before_ms=None,
        depends_on=(),
        locks=(),
        input=None,
        result=None,
        error=None,
        created_at_ms=started_ms,
        updated_at_ms=started_ms,
        started_at_ms=started_ms,
    )


def verdict(nodes, steps=(), local=None):
    return evaluate_mesh(nodes, list(steps), now_ms=NOW, lease_ms=LEASE, local_name=local)


def test_all_alive_is_healthy() -> None:
    health, reasons = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.ALIVE)])
    assert health is Health.HEALTHY
    assert reasons == []


def test_dead_member_owning_nothing_is_still_healthy() -> None:
    health, _ = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD)])
    assert health is Health.HEALTHY


def test_suspect_member_is_degraded() -> None:
    health, reasons = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.SUSPECT)])
    assert health is Health.DEGRADED
    assert any("SUSPECT: b" in r for r in reasons)


def test_no_alive_member_is_unhealthy() -> None:
    assert verdict([])[0] is Health.UNHEALTHY
    assert verdict([node("a", MemberStatus.LEFT)])[0] is Health.UNHEALTHY


def test_dead_owner_within_a_lease_is_degraded_then_unhealthy() -> None:
    nodes = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD, since_ms=NOW - 1_000)]
    assert verdict(nodes, [running("b", started_ms=NOW - 2_000)])[0] is Health.DEGRADED
    old = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD, since_ms=NOW - LEASE - 1)]
    health, reasons = verdict(old, [running("b", started_ms=NOW - LEASE - 5_000)])
    assert health is Health.UNHEALTHY
    assert any("b (DEAD)" in r for r in reasons)


def test_unknown_owner_counts_from_the_claim() -> None:
    nodes = [node("a", MemberStatus.ALIVE)]
    assert verdict(nodes, [running("ghost", started_ms=NOW - 100)])[0] is Health.DEGRADED
    assert verdict(nodes, [running("ghost", started_ms=NOW - LEASE - 1)])[0] is Health.UNHEALTHY


def test_lease_expired_long_ago_and_not_reclaimed_is_unhealthy() -> None:
    nodes = [node("a", MemberStatus.ALIVE)]
    step = running("a", expires_ms=NOW - LEASE - 1)
    health, reasons = verdict(nodes, [step])
    assert health is Health.UNHEALTHY
    assert any("not reclaimed" in r for r in reasons)


def test_running_on_alive_owner_is_healthy() -> None:
    nodes = [node("a", MemberStatus.ALIVE)]
    assert verdict(nodes, [running("a", started_ms=NOW - 10 * LEASE)])[0] is Health.HEALTHY


def test_local_node_not_alive_is_degraded() -> None:
    nodes = [node("a", MemberStatus.ALIVE), node("me", MemberStatus.SUSPECT)]
    health, reasons = verdict(nodes, local="me")
    assert health is Health.DEGRADED
    assert any("local node me" in r for r in reasons)


def test_summary_json_has_exactly_the_promised_keys() -> None:
    summary = MeshSummary(
        local={"node": None},
        members={"alive": 1, "suspect": 0, "dead": 0, "left": 0},
        running_by_owner_status={},
        health=Health.DEGRADED,
    )
    doc = summary.to_json()
    assert set(doc) == {"local", "members", "running_by_owner_status", "healthy"}
    assert doc["healthy"] is False
