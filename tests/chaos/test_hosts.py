"""Chaos on real hosts: one ``relaymesh node run`` per network namespace, a PostgreSQL
primary with a synchronous replica on the bridge, faults from nftables and signals,
and at the end the history checker (``python -m relaymesh.chaos.check``) over the
store, the agents' journal, the harness's event log and the nodes' logs.

``test_hosts_short`` is the short version that ``make test`` runs (at most about three
minutes; skipped where network namespaces are not available, a failure then with
``RELAYMESH_REQUIRE_NETNS=1``). The rest are ``chaos``-marked (``make chaos``):
the long PostgreSQL run (``RELAYMESH_CHAOS_DURATION_S``, default 600), the PostgreSQL
failover run, the SQLite run on one host, and the soak (``RELAYMESH_SOAK_S``).
See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.conftest import REPORT, chaos_seed
from tests.chaos.hosts import HostCluster, ViewPoller, make_host_cluster
from tests.chaos.netns import Network, netns_unavailable_reason
from tests.chaos.schedule import HostChaos
from tests.chaos.soak import SoakSampler
from tests.pgcluster import PgCluster

pytestmark = [pytest.mark.slow]

LEASE_MS = 8_000
MAINTENANCE_MS = 500
SETTINGS: dict[str, dict[str, Any]] = {
    "worker": {"slots": 3, "lease_ms": LEASE_MS, "heartbeat_ms": 1000, "poll_ms": 100},
    "maintenance": {"interval_ms": MAINTENANCE_MS, "leader_lease_ms": 3000},
}
PG_PORTS = range(56432, 56440)


def _kinds(variable: str, default: str) -> tuple[str, ...]:
    """Fault kinds from ``variable`` (comma-separated), else ``default``."""
    return tuple(k.strip() for k in os.environ.get(variable, default).split(",") if k.strip())


def require_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("RELAYMESH_REQUIRE_NETNS") == "1":
        pytest.fail(f"{reason} (RELAYMESH_REQUIRE_NETNS=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture
def network() -> Iterator[Network]:
    require_netns()
    net = Network()
    try:
        net.create()
        yield net
    finally:
        net.close()


def _free_pg_ports(host: str) -> tuple[int, int]:
    import socket

    free: list[int] = []
    for port in PG_PORTS:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        free.append(port)
        if len(free) == 2:
            return free[0], free[1]
    raise RuntimeError("no two free PostgreSQL ports in 56432-56439")


@pytest.fixture
def pg_pair(network: Network) -> Iterator[PgCluster]:
    cluster = PgCluster(ports=_free_pg_ports(network.gateway), host=network.gateway)
    try:
        cluster.start()
        cluster.create_database("relay")
        yield cluster
    finally:
        cluster.teardown()


def dump_store(pg: PgCluster, path: Path) -> None:
    """``pg_dump`` of the run's database beside the other evidence, so the checker can be
    run again once the servers are gone (load it with ``psql -f`` into an empty one)."""
    server = ["-h", pg.host, "-p", str(pg.primary.port), "-U", "postgres", "-d", "relay"]
    subprocess.run(
        [str(pg.bindir / "pg_dump"), *server, "--no-owner", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_checker(c: HostCluster, store_url: str, *extra: str) -> dict[str, Any]:
    """The history checker as an operator runs it; its JSON verdict (asserted clean)."""
    logs = [str(n.log_path) for n in c.nodes.values()]
    cmd = [
        sys.executable,
        "-m",
        "relaymesh.chaos.check",
        "--store",
        store_url,
        "--journal",
        str(c.journal),
        "--events",
        str(c.events.path),
        "--settings",
        str(c.config),
        "--expect-success",
        *(a for log in logs for a in ("--node-log", log)),
        *extra,
    ]
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    print(table.stdout, table.stderr, sep="\n")
    done = subprocess.run(
        [*cmd, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    verdict: dict[str, Any] = json.loads(done.stdout)
    (c.root / "check.json").write_text(json.dumps(verdict, indent=1))
    (c.root / "check.txt").write_text(table.stdout + table.stderr)
    assert table.returncode == done.returncode
    assert done.returncode == 0, table.stdout + table.stderr
    return verdict


def run_hosts(
    tmp_path: Path,
    network: Network,
    store_url: str,
    pg: PgCluster | None,
    *,
    label: str,
    hosts: int,
    nodes_per_host: int,
    kinds: tuple[str, ...],
    duration_s: float,
    gap_s: tuple[float, float],
    settle_s: float = 240,
    soak: Path | None = None,
    steps_per_workflow: int = 60,
    unfinished_target: int = 80,
    checker_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    seed = chaos_seed()
    print(f"{label}: chaos seed {seed} (RELAYMESH_CHAOS_SEED={seed} replays the schedule)")
    for i in range(hosts):
        network.add_host(f"h{i + 1}")
    c = make_host_cluster(tmp_path / "cluster", store_url, network, SETTINGS)
    chaos = HostChaos(
        c,
        random.Random(seed),
        store_url,
        LEASE_MS,
        pg,
        steps_per_workflow=steps_per_workflow,
        unfinished_target=unfinished_target,
    )
    chaos.log(f"{label}: seed {seed}")
    poller = ViewPoller(c)
    sampler = SoakSampler(c, pg, soak) if soak is not None else None
    started = time.monotonic()
    try:
        c.cli("store", "migrate")
        names = []
        for h in range(hosts):
            for k in range(nodes_per_host):
                name = f"n{len(names) + 1}"
                c.add_host_node(name, f"h{h + 1}", slot=k)
                names.append(name)
        c.start(*names)
        for name in names:
            c.wait_members(name, len(names), timeout_s=60)
        poller.start()
        if sampler is not None:
            sampler.start()
        chaos.run(kinds, duration_s, gap_s)
        chaos.log("faults over; waiting for every step to finish")
        counts = chaos.wait_finished(settle_s)
        chaos.log(f"final counts {counts}")
        if sampler is not None:
            sampler.stop()
        poller.stop()
        if pg is not None:
            dump_store(pg, c.root / "relay.sql")
        verdict = run_checker(c, store_url, *checker_args)
    finally:
        poller.stop()
        if sampler is not None:
            sampler.stop()
        (tmp_path / "chaos-schedule.log").write_text("\n".join(chaos.log_lines) + "\n")
        c.close()
    summary = {
        "seed": seed,
        "wall_s": round(time.monotonic() - started, 1),
        "faults": dict(verdict["faults"]),
        "steps": verdict["steps"],
        "violations": len(verdict["violations"]),
    }
    REPORT.append(f"{label}: {json.dumps(summary)}")
    return verdict


@pytest.mark.timeout(400)  # a stop for a hang: about 1 min idle, under 3 at load 15
def test_hosts_short(tmp_path: Path, network: Network, pg_pair: PgCluster) -> None:
    """Three hosts on PostgreSQL: one kill, one freeze, one partition of each kind, one
    loss episode, then the checker finds every promise kept. In ``make test``: the load
    is half the long runs' (workflows of 30 steps, topped up below 40 unfinished), so
    the faults still hit running work but a loaded machine is not kept busy for long."""
    verdict = run_hosts(
        tmp_path,
        network,
        pg_pair.url("relay"),
        pg_pair,
        label="hosts short, PostgreSQL",
        hosts=3,
        nodes_per_host=1,
        kinds=("kill", "freeze", "partition", "partition_oneway", "loss"),
        duration_s=0,
        gap_s=(0.5, 2.0),
        settle_s=90,
        steps_per_workflow=30,
        unfinished_target=40,
        # make test runs on loaded machines: the kill's steps must be reclaimed before
        # their lease would have let them go anyway (lease + one maintenance round +
        # the checker's scheduling slack), not within the tighter DEAD-verdict bound
        # that the long runs check (docs/reliability.md).
        checker_args=("--reclaim-bound-ms", str(LEASE_MS + MAINTENANCE_MS + 1000)),
    )
    assert verdict["faults"].get("kill") == 1


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_hosts_pg_long(tmp_path: Path, network: Network, pg_pair: PgCluster) -> None:
    """Five hosts, every fault (RELAYMESH_CHAOS_FAULTS to choose), for
    RELAYMESH_CHAOS_DURATION_S (600): docs/reliability.md."""
    run_hosts(
        tmp_path,
        network,
        pg_pair.url("relay"),
        pg_pair,
        label="hosts long, PostgreSQL",
        hosts=5,
        nodes_per_host=1,
        kinds=_kinds(
            "RELAYMESH_CHAOS_FAULTS",
            "kill,freeze,partition,partition_oneway,loss,pg_restart,pg_failover",
        ),
        duration_s=float(os.environ.get("RELAYMESH_CHAOS_DURATION_S", "600")),
        gap_s=(1.0, 4.0),
    )


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_hosts_pg_failover(tmp_path: Path, network: Network, pg_pair: PgCluster) -> None:
    """Three hosts through a PostgreSQL failover (stop primary, promote replica, rebuild a
    replica from the new primary), then a second failover back, with kills between.
    Needs the failover ride-through of issue 7 (branch pg-failover)."""
    run_hosts(
        tmp_path,
        network,
        pg_pair.url("relay"),
        pg_pair,
        label="hosts failover, PostgreSQL",
        hosts=3,
        nodes_per_host=1,
        kinds=("pg_failover", "kill", "pg_failover", "freeze"),
        duration_s=0,
        gap_s=(2.0, 5.0),
        settle_s=180,
    )


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_hosts_sqlite_one_host(tmp_path: Path, network: Network) -> None:
    """Three nodes in one namespace sharing a SQLite file: kills and freezes."""
    run_hosts(
        tmp_path,
        network,
        f"sqlite:///{tmp_path / 'store.db'}",
        None,
        label="one host, SQLite",
        hosts=1,
        nodes_per_host=3,
        kinds=("kill", "freeze", "kill", "freeze"),
        duration_s=float(os.environ.get("RELAYMESH_CHAOS_SQLITE_S", "120")),
        gap_s=(1.0, 3.0),
    )


@pytest.mark.chaos
@pytest.mark.timeout(7200)
def test_soak(tmp_path: Path, network: Network, pg_pair: PgCluster) -> None:
    """Steady load with faults for RELAYMESH_SOAK_S (default 1800): node RSS, open fds and
    store connections sampled; none may grow beyond 10 % after the warm-up."""
    out = Path(os.environ.get("RELAYMESH_SOAK_OUT", str(tmp_path / "soak.jsonl")))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    kinds = _kinds("RELAYMESH_SOAK_FAULTS", "freeze,partition,partition_oneway,loss")
    run_hosts(
        tmp_path,
        network,
        pg_pair.url("relay"),
        pg_pair,
        label="soak, PostgreSQL",
        hosts=3,
        nodes_per_host=1,
        kinds=kinds,
        duration_s=float(os.environ.get("RELAYMESH_SOAK_S", "1800")),
        gap_s=(10.0, 30.0),
        soak=out,
    )
    from tests.chaos.soak import growth

    report = growth(out)
    REPORT.append(f"soak growth: {json.dumps(report)}")
    bad = {k: v for k, v in report.items() if not v["ok"]}
    assert not bad, bad
