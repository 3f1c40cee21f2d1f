"""Run a ``Scenario``: N real protocol cores on the in-memory network, faults on a timeline.

Owns the timeline (joins, kills, freezes, partitions) and the observation of every
membership event into a ``SimResult``. The protocol is ``membership.protocol.Swim`` and
the network ``membership.memory.MemoryNetwork``, unchanged: this module only decides
what happens when and counts what the cores say. Imports ``membership/`` only (and the
leaf ``clock``/``exceptions``), never the driver, the store or the CLI.

Determinism: every random choice (victims, slow nodes, partitions, each core's rng, the
network's loss and delay) comes from ``random.Random`` seeded from ``scenario.seed``, and
the clock is virtual, so a scenario gives the same result on any machine and any load.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import asdict, replace
from typing import Any

from relaymesh.clock import FakeClock
from relaymesh.membership.memory import MemoryNetwork
from relaymesh.membership.protocol import MemberChanged, Swim, SwimConfig
from relaymesh.membership.state import Address
from relaymesh.model import MemberStatus
from relaymesh.sim.report import Detection, SimResult
from relaymesh.sim.scenario import Scenario

__all__ = ["node_name", "run_scenario"]

_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD

_STEP_MS = 1000
"""The timeline advances at least this often, to check convergence between actions."""
_KILL_AFTER_CONVERGED_MS = 10_000
_STEADY_AFTER_CONVERGED_MS = 10_000
"""Traffic counts as steady once the join gossip has had this long to die down."""


def node_name(i: int) -> str:
    return f"node-{i:04d}"


def node_address(i: int) -> Address:
    return (f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 7946)


class _Observer:
    """Folds the cores' events into counts, as they happen (no per-pair table kept)."""

    def __init__(self, scenario: Scenario, clock: FakeClock, index: dict[str, int]) -> None:
        n = scenario.nodes
        self.clock = clock
        self.index = index
        self.alive_seen = [0] * n
        """How many members (itself included) each node holds ALIVE or SUSPECT."""
        self.full_views = 0
        self.started = [False] * n
        self.killed_at_ms: list[int | None] = [None] * n
        self.frozen: list[tuple[int, int]] = []
        """(node, until_ms) of every freeze."""
        self.cut: list[int] | None = None
        """Partition group of each node while a partition is active."""
        self.first_dead_ms: dict[int, dict[int, int]] = {}
        """victim -> observer -> first DEAD mark."""
        self.first_suspect_ms: dict[int, int] = {}
        self.false_suspect = 0
        self.false_suspect_nodes: set[int] = set()
        self.false_dead = 0
        self.false_dead_nodes: set[int] = set()
        self.frozen_dead = 0
        self.partition_dead = 0
        self.events = 0
        self.converged_at_ms: int | None = None

    def __call__(self, observer: str, event: MemberChanged) -> None:
        self.events += 1
        o = self.index[observer]
        s = self.index.get(event.name)
        if s is None:
            return
        status = event.status
        previous = event.previous
        # "Sees" a member: holds it ALIVE or SUSPECT (a member still, not DEAD or unknown).
        is_up = status is _ALIVE or status is _SUSPECT
        if is_up != (previous is _ALIVE or previous is _SUSPECT):
            if is_up:
                self.alive_seen[o] += 1
                if self.alive_seen[o] == len(self.alive_seen):
                    self.full_views += 1
                    if self.full_views == len(self.alive_seen) and self.converged_at_ms is None:
                        self.converged_at_ms = self.clock.monotonic_ms()
            else:
                if self.alive_seen[o] == len(self.alive_seen):
                    self.full_views -= 1
                self.alive_seen[o] -= 1
        if (status is not _SUSPECT and status is not _DEAD) or o == s:
            return
        now = self.clock.monotonic_ms()
        killed_at = self.killed_at_ms[s]
        if killed_at is not None and killed_at <= now:
            if status is _DEAD:
                marks = self.first_dead_ms.setdefault(s, {})
                if o not in marks:
                    marks[o] = now
            elif s not in self.first_suspect_ms:
                self.first_suspect_ms[s] = now
            return
        if self.cut is not None and self.cut[o] != self.cut[s]:
            if status is _DEAD:
                self.partition_dead += 1
            return
        if status is _SUSPECT:
            self.false_suspect += 1
            self.false_suspect_nodes.add(s)
            return
        self.false_dead += 1
        self.false_dead_nodes.add(s)
        if any(node == s for node, _ in self.frozen):
            self.frozen_dead += 1


def run_scenario(scenario: Scenario) -> SimResult:
    """Run ``scenario`` to its end and measure it. Deterministic for a given scenario."""
    # A run allocates millions of long-lived objects (N x N member records) and makes
    # no reference cycles (5 cyclic objects left after a 1,000-node run), so the cyclic
    # collector only rescans them: 10-20 % of a run at N=1000. Off for the run only.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_scenario(scenario)
    finally:
        if gc_was_enabled:
            gc.enable()


def _run_scenario(scenario: Scenario) -> SimResult:
    started = time.perf_counter()
    n = scenario.nodes
    plan_rng = random.Random(f"plan-{scenario.seed}")
    clock = FakeClock()
    index = {node_name(i): i for i in range(n)}
    observer = _Observer(scenario, clock, index)
    network = MemoryNetwork(
        clock,
        random.Random(f"net-{scenario.seed}"),
        scenario.loss,
        scenario.delay_ms,
        event_sink=observer,
    )
    config = replace(SwimConfig(lifeguard=scenario.lifeguard), **scenario.overrides)
    addresses = [node_address(i) for i in range(n)]
    seeds = addresses[: max(1, min(scenario.seeds, n))]

    non_seeds = list(range(max(1, min(scenario.seeds, n)), n)) or list(range(1, n))
    victims = sorted(plan_rng.sample(non_seeds, min(scenario.kill, len(non_seeds))))
    slow_count = round(scenario.slow_frac * n)
    candidates = [i for i in range(1, n) if i not in victims]
    slow = sorted(plan_rng.sample(candidates, min(slow_count, len(candidates))))

    # The timeline: (at_ms, order, action, arg). Joins first, then faults.
    timeline: list[tuple[int, int, str, Any]] = []
    spread_ms = int(scenario.join_spread_s * 1000)
    for i in range(n):
        at = 0 if i == 0 or spread_ms <= 0 else plan_rng.randrange(spread_ms)
        timeline.append((at, 0, "start", i))
    for freeze in scenario.freezes:
        timeline.append((int(freeze.at_s * 1000), 2, "freeze", freeze))
    for part in scenario.partitions:
        members = list(range(1, n))
        cut = set(plan_rng.sample(members, max(1, round(part.fraction * n))))
        timeline.append((int(part.at_s * 1000), 3, "partition", cut))
        timeline.append((int((part.at_s + part.for_s) * 1000), 4, "heal", None))
    timeline.sort(key=lambda item: (item[0], item[1]))

    end_ms = int(scenario.duration_s * 1000)
    kill_at_ms = None if scenario.kill_at_s is None else int(scenario.kill_at_s * 1000)
    fallback_kill_ms = end_ms // 3
    steady_from: tuple[int, int, int] | None = None  # (at_ms, packets, bytes)
    cursor = 0
    killed = False

    bootstrap = scenario.bootstrap
    if bootstrap:
        _bootstrap(
            scenario,
            network=network,
            config=config,
            clock=clock,
            addresses=addresses,
            slow=slow,
            observer=observer,
        )
        timeline = [item for item in timeline if item[2] != "start"]

    def start_node(i: int) -> None:
        swim = Swim(
            node_name(i),
            addresses[i],
            config,
            clock,
            random.Random(f"node-{scenario.seed}-{i}"),
        )
        network.add(swim)
        if i in slow:
            network.slow(addresses[i], scenario.slow_delay_ms)
        observer.started[i] = True
        if i != 0:
            network.join(addresses[i], [a for a in seeds if a != addresses[i]])

    def do_kill() -> None:
        now = clock.monotonic_ms()
        for v in victims:
            observer.killed_at_ms[v] = now
            network.kill(addresses[v])

    while True:
        now = clock.monotonic_ms()
        while cursor < len(timeline) and timeline[cursor][0] <= now:
            _, _, action, arg = timeline[cursor]
            cursor += 1
            if action == "start":
                start_node(arg)
            elif action == "freeze":
                observer.frozen.append((arg.node, now + int(arg.for_s * 1000)))
                network.freeze(addresses[arg.node], int(arg.for_s * 1000))
            elif action == "partition":
                groups = [0] * n
                for i in arg:
                    groups[i] = 1
                observer.cut = groups
                network.partition([[addresses[i] for i in arg]])
            elif action == "heal":
                observer.cut = None
                network.heal()
        if (
            steady_from is None
            and observer.converged_at_ms is not None
            and now >= observer.converged_at_ms + _STEADY_AFTER_CONVERGED_MS
        ):
            steady_from = (now, network.packets_sent, _bytes(network))
        if not killed and victims:
            due = kill_at_ms
            if due is None and observer.converged_at_ms is not None:
                due = observer.converged_at_ms + _KILL_AFTER_CONVERGED_MS
            if due is None:
                due = fallback_kill_ms
            if now >= due:
                do_kill()
                killed = True
        if now >= end_ms:
            break
        # Next stop: the next action, the kill, a check step, or the end.
        stops = [end_ms, now + _STEP_MS]
        if cursor < len(timeline):
            stops.append(timeline[cursor][0])
        if not killed and victims and kill_at_ms is not None:
            stops.append(kill_at_ms)
        network.run_until(max(now, min(stops)))

    return _result(
        scenario,
        observer=observer,
        network=network,
        victims=victims,
        steady_from=steady_from,
        started=started,
        bootstrapped=bootstrap,
    )


def _bootstrap(
    scenario: Scenario,
    *,
    network: MemoryNetwork,
    config: SwimConfig,
    clock: FakeClock,
    addresses: list[Address],
    slow: list[int],
    observer: _Observer,
) -> None:
    """Start every node with the full, converged view (``Swim.preload``): no join storm."""
    n = scenario.nodes
    swims = [
        Swim(node_name(i), addresses[i], config, clock, random.Random(f"node-{scenario.seed}-{i}"))
        for i in range(n)
    ]
    records = [swim.local for swim in swims]
    for i, swim in enumerate(swims):
        swim.preload(records)  # copies them; skips its own
        network.add(swim)
        if i in slow:
            network.slow(addresses[i], scenario.slow_delay_ms)
        observer.started[i] = True
        observer.alive_seen[i] = n
    observer.full_views = n
    observer.converged_at_ms = clock.monotonic_ms()


def _result(
    scenario: Scenario,
    *,
    observer: _Observer,
    network: MemoryNetwork,
    victims: list[int],
    steady_from: tuple[int, int, int] | None,
    started: float,
    bootstrapped: bool,
) -> SimResult:
    n = scenario.nodes
    end_ms = network.now_ms
    survivors = n - len(victims)
    detections = []
    for v in victims:
        killed_at = observer.killed_at_ms[v]
        det = Detection(
            node=node_name(v),
            killed_at_s=(killed_at or 0) / 1000,
            observers=survivors if killed_at is not None else 0,
        )
        marks = observer.first_dead_ms.get(v, {})
        if killed_at is not None and marks:
            det.marked_by = len(marks)
            det.first_s = (min(marks.values()) - killed_at) / 1000
            det.last_s = (max(marks.values()) - killed_at) / 1000
        if killed_at is not None and v in observer.first_suspect_ms:
            det.first_suspect_s = (observer.first_suspect_ms[v] - killed_at) / 1000
        detections.append(det)
    duration_s = max(end_ms, 1) / 1000
    if steady_from is not None and end_ms > steady_from[0]:
        span_s = (end_ms - steady_from[0]) / 1000
        steady_packets = network.packets_sent - steady_from[1]
        steady_bytes = _bytes(network) - steady_from[2]
    else:
        span_s, steady_packets, steady_bytes = duration_s, network.packets_sent, _bytes(network)
    core: dict[str, int] = {}
    for swim in network.swims():
        stats = swim.stats
        core["recoveries_suppressed"] = (
            core.get("recoveries_suppressed", 0) + stats.recoveries_suppressed
        )
        core["anti_entropy_merges"] = core.get("anti_entropy_merges", 0) + stats.anti_entropy_merges
        for reason, count in stats.dropped.items():
            core[f"dropped_{reason}"] = core.get(f"dropped_{reason}", 0) + count
    scenario_doc = asdict(scenario)
    return SimResult(
        scenario=scenario_doc,
        simulated_s=end_ms / 1000,
        wall_s=time.perf_counter() - started,
        converged_at_s=(
            None if observer.converged_at_ms is None else observer.converged_at_ms / 1000
        ),
        detections=detections,
        false_suspect=observer.false_suspect,
        false_suspect_nodes=len(observer.false_suspect_nodes),
        false_dead=observer.false_dead,
        false_dead_nodes=len(observer.false_dead_nodes),
        frozen_dead=observer.frozen_dead,
        partition_dead=observer.partition_dead,
        messages_per_node_s=steady_packets / n / span_s,
        bytes_per_node_s=steady_bytes / n / span_s,
        messages_per_node_s_total=network.packets_sent / n / duration_s,
        bytes_per_node_s_total=_bytes(network) / n / duration_s,
        pushpull_counted=hasattr(network, "pushpull_bytes"),
        bootstrapped=bootstrapped,
        packets_dropped=network.packets_lost,
        events=observer.events,
        core_stats=core,
    )


def _bytes(network: MemoryNetwork) -> int:
    """Datagram bytes, plus push/pull stream bytes where the network counts them."""
    return network.bytes_sent + int(getattr(network, "pushpull_bytes", 0))
