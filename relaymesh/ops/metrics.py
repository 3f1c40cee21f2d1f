"""Prometheus metrics, one ``Metrics`` object per node process.

Names are part of the operator contract (INTERFACE.md): add, never rename. Each
``Metrics`` has its own registry, so tests can build several in one process. The
membership core stays pure: its driver copies the core's counters in here.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)
_RTT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "relaymesh_"
        # -- membership
        self.members = Gauge(
            f"{p}members", "Members in this node's view, by status", ["status"], registry=r
        )
        self.probe_rtt_seconds = Histogram(
            f"{p}probe_rtt_seconds",
            "Round trip of direct probes",
            buckets=_RTT_BUCKETS_S,
            registry=r,
        )
        self.packets_dropped = Counter(
            f"{p}packets_dropped", "Gossip packets dropped, by reason", ["reason"], registry=r
        )
        self.gossip_convergence_seconds = Gauge(
            f"{p}gossip_convergence_seconds",
            "Seconds from a membership change being first seen here to an anti-entropy "
            "exchange finding the peer's view in agreement",
            registry=r,
        )
        self.anti_entropy_merge = Counter(
            f"{p}anti_entropy_merge", "Member updates applied from push/pull snapshots", registry=r
        )
        self.membership_recovery_suppressed = Counter(
            f"{p}membership_recovery_suppressed",
            "ALIVE updates held back by the SUSPECT/DEAD minimum dwell",
            registry=r,
        )
        self.gossip_packets_sent = Counter(
            f"{p}gossip_packets_sent", "UDP packets sent", registry=r
        )
        self.gossip_bytes_sent = Counter(f"{p}gossip_bytes_sent", "UDP bytes sent", registry=r)
        self.gossip_packets_received = Counter(
            f"{p}gossip_packets_received", "UDP packets received", registry=r
        )
        self.local_health = Gauge(
            f"{p}local_health_score", "Lifeguard awareness score (0 = healthy)", registry=r
        )
        # -- work
        self.worker_paused = Counter(
            f"{p}worker_paused", "Claim rounds skipped, by reason", ["reason"], registry=r
        )
        self.steps = Gauge(f"{p}steps", "Steps in the store, by status", ["status"], registry=r)
        self.queue_lag_seconds = Gauge(
            f"{p}queue_lag_seconds", "Age of the oldest claimable step", registry=r
        )
        self.step_latency_seconds = Histogram(
            f"{p}step_latency_seconds",
            "Agent run time",
            ["agent"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.step_start_latency_seconds = Histogram(
            f"{p}step_start_latency_seconds",
            "From claimable to claimed",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.dead_letter = Counter(
            f"{p}dead_letter", "Steps this node sent to DEAD_LETTER", registry=r
        )
        self.dead_letter_growth = Gauge(
            f"{p}dead_letter_steps", "Steps in DEAD_LETTER in the store", registry=r
        )
        self.claims = Counter(f"{p}claims", "Steps claimed by this node", registry=r)
        self.lease_conflicts = Counter(
            f"{p}lease_conflicts", "Fenced writes rejected, by event", ["event"], registry=r
        )
        self.dead_owner_reclaimed = Counter(
            f"{p}dead_owner_reclaimed", "Steps reclaimed from DEAD owners", registry=r
        )
        self.dead_verdict_refused = Counter(
            f"{p}dead_verdict_refused",
            "Steps of a node reported DEAD left alone because their leases were still"
            " heartbeated (a forged or mistaken verdict)",
            registry=r,
        )
        self.lease_expired_reclaimed = Counter(
            f"{p}lease_expired_reclaimed", "Steps reclaimed at lease expiry", registry=r
        )
        self.mesh_nodes_pruned = Counter(
            f"{p}mesh_nodes_pruned", "DEAD/LEFT members forgotten", registry=r
        )
        self.low_starvation_count = Gauge(
            f"{p}low_starvation_count",
            "LOW-priority claims forced by the anti-starvation guard (running count)",
            registry=r,
        )
        self.breaker_state = Gauge(
            f"{p}breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            ["agent"],
            registry=r,
        )
        self.store_errors = Counter(
            f"{p}store_errors", "Store calls that failed, by operation", ["op"], registry=r
        )
        self.running_steps = Gauge(f"{p}running_steps", "Agents running on this node", registry=r)
        self.is_leader = Gauge(
            f"{p}maintenance_leader", "1 while this node runs maintenance", registry=r
        )
        # -- retention (work/retention.py)
        self.retention_deleted = Counter(
            f"{p}retention_deleted",
            "Rows removed by retention, by table",
            ["table"],
            registry=r,
        )
        self.retention_archive_errors = Counter(
            f"{p}retention_archive_errors",
            "Retention batches not deleted because their archive could not be written",
            registry=r,
        )
        # -- schedules
        self.schedule_fires = Counter(
            f"{p}schedule_fires",
            "Schedule ticks by result: fired (a new workflow), duplicate (already fired, "
            "by this or another node), skipped (missed ticks not fired), invalid, error",
            ["schedule", "result"],
            registry=r,
        )

        # -- dispatch statistics (work/dispatch.py) and the mesh as the store has it
        self.dispatch = Counter(
            f"{p}dispatch",
            "Claim decisions and step outcomes, by result (success, failed) and reason",
            ["result", "reason"],
            registry=r,
        )
        self.dispatch_success_rate = Gauge(
            f"{p}dispatch_success_rate",
            "This node's success rate over the last hour (NaN without samples)",
            registry=r,
        )
        self.dispatch_agent_success_rate = Gauge(
            f"{p}dispatch_agent_success_rate",
            "An agent's success rate on this node over the last hour (NaN without samples)",
            ["agent"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            f"{p}breaker_transitions",
            "Circuit breaker transitions, by agent, new state and why it opened",
            ["agent", "to", "reason"],
            registry=r,
        )
        self.mesh_nodes_total = Gauge(
            f"{p}mesh_nodes_total",
            "Members in the store's mesh table (what every node reported), by status",
            ["status"],
            registry=r,
        )
        self.running_steps_by_owner_status = Gauge(
            f"{p}running_steps_by_owner_status",
            "RUNNING steps in the store by their owner's member status (UNKNOWN: pruned)",
            ["status"],
            registry=r,
        )
        self.oldest_dead_node_age_ms = Gauge(
            f"{p}oldest_dead_node_age_ms",
            "How long the longest-DEAD member in the store has been DEAD (0: none)",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return bytes(generate_latest(self.registry))
