"""The mesh health verdict (pure): exit 0 healthy, 1 degraded, 2 unhealthy.

The rules are INTERFACE.md's (docs/health.md): every member not LEFT ALIVE for 0;
SUSPECT, DEAD-not-pruned or an OPEN breaker for 1; no ALIVE member or RUNNING steps
on a gone owner past the reclaim window for 2."""

from __future__ import annotations

from relaymesh.model import AuditRecord, MemberStatus, MeshNode, Priority, StepRecord, StepStatus
from relaymesh.ops.reports import (
    Health,
    MeshSummary,
    evaluate_mesh,
    open_breakers,
    reclaim_window_ms,
)
from relaymesh.settings import Settings

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


WINDOW = 9_000
"""The reclaim window passed to the rule (suspicion timeout + maintenance interval)."""


def verdict(nodes, steps=(), breakers_open=()):
    return evaluate_mesh(
        nodes, list(steps), now_ms=NOW, reclaim_window_ms=WINDOW, breakers_open=breakers_open
    )


def transition(node_name: str, agent: str, to: str, at_ms: int) -> AuditRecord:
    return AuditRecord(
        id=at_ms,
        at_ms=at_ms,
        actor=f"node:{node_name}",
        action="breaker_transition",
        target=agent,
        details={"agent": agent, "from": "CLOSED", "to": to, "node": node_name},
    )


def test_all_alive_is_healthy() -> None:
    health, reasons = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.ALIVE)])
    assert health is Health.HEALTHY
    assert reasons == []


def test_left_members_do_not_count_against_health() -> None:
    health, reasons = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.LEFT)])
    assert (health, reasons) == (Health.HEALTHY, [])


def test_dead_member_is_degraded_until_pruned_even_owning_nothing() -> None:
    # The crashed node stays a reason for as long as its row is there: however old.
    old = NOW - 100 * WINDOW
    health, reasons = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD, old)])
    assert health is Health.DEGRADED
    assert reasons == ["DEAD: b"]
    # Pruned (the row is gone): healthy again.
    assert verdict([node("a", MemberStatus.ALIVE)]) == (Health.HEALTHY, [])


def test_suspect_member_is_degraded() -> None:
    health, reasons = verdict([node("a", MemberStatus.ALIVE), node("b", MemberStatus.SUSPECT)])
    assert health is Health.DEGRADED
    assert reasons == ["SUSPECT: b"]


def test_every_suspect_and_dead_member_is_named_one_line_per_status() -> None:
    nodes = [
        node("a", MemberStatus.ALIVE),
        node("d2", MemberStatus.DEAD),
        node("s1", MemberStatus.SUSPECT),
        node("d1", MemberStatus.DEAD),
    ]
    assert verdict(nodes) == (Health.DEGRADED, ["SUSPECT: s1", "DEAD: d1, d2"])


def test_no_alive_member_is_unhealthy() -> None:
    assert verdict([]) == (Health.UNHEALTHY, ["no ALIVE member"])
    assert verdict([node("a", MemberStatus.LEFT)]) == (Health.UNHEALTHY, ["no ALIVE member"])
    health, reasons = verdict([node("a", MemberStatus.SUSPECT)])
    assert health is Health.UNHEALTHY
    assert reasons == ["no ALIVE member", "SUSPECT: a"]


def test_dead_owner_within_the_window_is_degraded_then_unhealthy() -> None:
    fresh = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD, since_ms=NOW - 1_000)]
    health, reasons = verdict(fresh, [running("b", started_ms=NOW - 2_000)])
    assert health is Health.DEGRADED
    assert reasons == ["DEAD: b", "1 RUNNING step(s) owned by b (DEAD), reclaim pending"]
    # Exactly at the window it is still pending; one ms past it, unhealthy.
    edge = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD, since_ms=NOW - WINDOW)]
    assert verdict(edge, [running("b", started_ms=NOW - WINDOW - 5)])[0] is Health.DEGRADED
    old = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.DEAD, since_ms=NOW - WINDOW - 1)]
    health, reasons = verdict(old, [running("b", started_ms=NOW - WINDOW - 5_000)])
    assert health is Health.UNHEALTHY
    assert reasons == [
        f"1 RUNNING step(s) owned by b (DEAD) past the reclaim window ({WINDOW} ms)",
        "DEAD: b",
    ]


def test_left_owner_still_holding_steps_past_the_window_is_unhealthy() -> None:
    nodes = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.LEFT, NOW - WINDOW - 1)]
    steps = [running("b", started_ms=NOW - 2 * WINDOW), running("b", started_ms=NOW - 3 * WINDOW)]
    health, reasons = verdict(nodes, steps)
    assert health is Health.UNHEALTHY
    assert reasons == [f"2 RUNNING step(s) owned by b (LEFT) past the reclaim window ({WINDOW} ms)"]


def test_unknown_owner_counts_from_the_claim() -> None:
    nodes = [node("a", MemberStatus.ALIVE)]
    assert verdict(nodes, [running("ghost", started_ms=NOW - 100)]) == (
        Health.DEGRADED,
        ["1 RUNNING step(s) owned by ghost (UNKNOWN), reclaim pending"],
    )
    assert verdict(nodes, [running("ghost", started_ms=NOW - WINDOW - 1)])[0] is Health.UNHEALTHY


def test_running_on_alive_owner_is_healthy_however_long() -> None:
    nodes = [node("a", MemberStatus.ALIVE)]
    assert verdict(nodes, [running("a", started_ms=NOW - 10 * LEASE)]) == (Health.HEALTHY, [])


def test_an_open_breaker_on_a_live_node_is_degraded() -> None:
    nodes = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.ALIVE)]
    assert verdict(nodes, breakers_open={("b", "fetch")}) == (
        Health.DEGRADED,
        ["breaker OPEN: agent fetch on b"],
    )
    # A breaker of a node that left or was pruned is that node's past, not the mesh's.
    gone = [node("a", MemberStatus.ALIVE), node("b", MemberStatus.LEFT)]
    assert verdict(gone, breakers_open={("b", "fetch"), ("c", "x")}) == (Health.HEALTHY, [])


def test_open_breakers_takes_each_latest_transition_within_the_cool_down() -> None:
    open_ms = 10_000
    newest_first = [
        transition("a", "fetch", "OPEN", NOW - 1_000),
        transition("b", "fetch", "CLOSED", NOW - 2_000),
        transition("b", "fetch", "OPEN", NOW - 3_000),  # closed since
        transition("a", "old", "OPEN", NOW - open_ms),  # cool-down over: HALF_OPEN now
        transition("c", "fetch", "HALF_OPEN", NOW - 500),
    ]
    assert open_breakers(newest_first, now_ms=NOW, open_ms=open_ms) == {("a", "fetch")}


def test_reclaim_window_is_the_longest_suspicion_plus_one_maintenance_interval() -> None:
    settings = Settings.model_validate(
        {
            "gossip": {
                "probe_interval_ms": 200,
                "suspicion_mult": 2,
                "suspicion_max_timeout_mult": 3,
            },
            "maintenance": {"interval_ms": 300},
        }
    )
    # 2 x max(1, log10(2)) x 200 = 400 ms minimum, x3 under Lifeguard, + 300.
    assert reclaim_window_ms(settings, 2) == 3 * 400 + 300
    # 100 members: log10(100) = 2.
    assert reclaim_window_ms(settings, 100) == 3 * 800 + 300
    plain = settings.model_copy(
        update={"gossip": settings.gossip.model_copy(update={"lifeguard": False})}
    )
    assert reclaim_window_ms(plain, 2) == 400 + 300


def test_summary_json_has_exactly_the_promised_keys() -> None:
    summary = MeshSummary(
        local={"node": None},
        members={"alive": 1, "suspect": 0, "dead": 1, "left": 0},
        running_by_owner_status={},
        health=Health.DEGRADED,
        reasons=("DEAD: b",),
    )
    doc = summary.to_json()
    assert set(doc) == {
        "local",
        "members",
        "running_by_owner_status",
        "dispatch",
        "healthy",
        "status",
        "reasons",
    }
    assert doc["healthy"] is False
    assert doc["status"] == "degraded"
    assert doc["reasons"] == ["DEAD: b"]
