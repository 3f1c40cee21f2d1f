"""A RelayMesh cluster on "real hosts": one ``relaymesh node run`` per network namespace.

``HostCluster`` is the end-to-end ``Cluster`` (tests/e2e/harness.py: settings file,
CLI calls, journal, log tails, cleanup of agent process groups) with its nodes started
inside the namespaces of a ``Network`` (``ip netns exec``), gossip and HTTP bound to
the host's bridge address. Several nodes may share one host (the SQLite scenario).

Besides the nodes it keeps the evidence the history checker reads
(``python -m relaymesh.chaos.check``):

* ``events.jsonl``: every fault the harness injected (kill, restart, stop, cont,
  partition, heal, loss, pg_failover, pg_rebuild, pg_restart), every workflow it
  submitted, and the nodes' own view of themselves, sampled from ``/healthz``
  (``local_alive``) every ``VIEW_POLL_S`` by ``ViewPoller``;
* the script agents' journal (``journal.jsonl``, examples/agents/record.py);
* each node's JSON log (``<name>.log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaymesh.membership.keyring import generate_key
from relaymesh.model import StepStatus
from relaymesh.store import open_store
from tests.chaos.netns import Network
from tests.conftest import wait_until
from tests.e2e.harness import RELAYMESH, Cluster, NodeProc, now_ms

VIEW_POLL_S = 0.2
GOSSIP_PORT = 7946
HTTP_PORT = 8080


class EventLog:
    """Append-only JSON lines, one per event, each stamped with wall-clock ``at_ms``
    (the same clock as the store's on this machine). Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        line = {"kind": kind, "at_ms": now_ms(), **fields}
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        return line

    def lines(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(x) for x in text.splitlines() if x.strip()]


@dataclass
class HostNode(NodeProc):
    host: str = ""
    """The host label in the Network."""
    address: str = "127.0.0.1"
    frozen: bool = False

    def healthy(self) -> bool:
        try:
            url = f"http://{self.address}:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (OSError, http.client.HTTPException):
            return False


class HostCluster(Cluster):
    """``Cluster`` whose nodes run in network namespaces; ``make_host_cluster`` builds one."""

    network: Network

    def setup(self, network: Network) -> None:
        self.network = network
        self.events = EventLog(self.root / "events.jsonl")

    def add_host_node(self, name: str, host: str, slot: int = 0) -> HostNode:
        address = self.network.hosts[host].address
        node = HostNode(
            name,
            GOSSIP_PORT + slot,
            HTTP_PORT + slot,
            self.root / f"{name}.log",
            host=host,
            address=address,
        )
        self.nodes[name] = node
        self.seeds.write_text(
            "".join(
                f"{n.address}:{n.gossip_port}\n"
                for n in self.nodes.values()
                if isinstance(n, HostNode)
            )
        )
        return node

    def host_node(self, name: str) -> HostNode:
        node = self.nodes[name]
        assert isinstance(node, HostNode)
        return node

    def start(self, *names: str, wait: bool = True) -> None:
        for name in names:
            node = self.host_node(name)
            log = node.log_path.open("ab")
            node.proc = subprocess.Popen(
                [
                    *self.network.hosts[node.host].exec_prefix(),
                    RELAYMESH,
                    "--log-level",
                    "debug",
                    "node",
                    "run",
                    "--name",
                    name,
                    "--bind",
                    f"{node.address}:{node.gossip_port}",
                    "--seeds-file",
                    str(self.seeds),
                    "--http",
                    f"{node.address}:{node.http_port}",
                    "--create-store",
                ],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            node.frozen = False
            self.events.record("start", node=name, pid=node.proc.pid)
        if wait:
            for name in names:
                node = self.host_node(name)
                wait_until(
                    lambda n=node: n.healthy() or not n.running(),  # type: ignore[misc]
                    90,
                    what=f"{name} healthy",
                )
                assert node.running(), f"{name} exited:\n{self.log_tail(name)}"

    def http_json(self, name: str, path: str) -> Any:
        node = self.host_node(name)
        url = f"http://{node.address}:{node.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    # -- faults on processes ----------------------------------------------------------------

    def up(self) -> list[str]:
        return [
            n for n, node in self.nodes.items() if node.running() and not self.host_node(n).frozen
        ]

    def kill(self, name: str) -> None:
        # Logged first: the checker measures the reclaim from the moment of the signal.
        self.events.record("kill", node=name)
        self.signal(name, signal.SIGKILL)
        self.wait_exit(name, 10)

    def stop(self, name: str, freeze: Callable[[int], None] | None = None) -> None:
        """SIGSTOP ``name`` (through ``freeze(pid)`` when given: it stops the process at a
        moment it holds no store lock)."""
        node = self.host_node(name)
        if freeze is not None:
            freeze(node.pid)
        else:
            self.freeze(name)
        node.frozen = True
        self.events.record("stop", node=name)

    def cont(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)
        self.host_node(name).frozen = False
        self.events.record("cont", node=name)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGCONT)
        super().close()


class ViewPoller(threading.Thread):
    """Samples every running, unfrozen node's ``/healthz`` into the event log:
    ``{"kind": "view", "node", "local_alive", "members": {...}}``. A frozen or
    partitioned-off node simply yields no sample (the harness is never partitioned)."""

    def __init__(self, cluster: HostCluster, interval_s: float = VIEW_POLL_S) -> None:
        super().__init__(daemon=True, name="view-poller")
        self.cluster = cluster
        self.interval_s = interval_s
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval_s):
            for name in self.cluster.up():
                node = self.cluster.host_node(name)
                try:
                    url = f"http://{node.address}:{node.http_port}/healthz"
                    with urllib.request.urlopen(url, timeout=0.5) as resp:
                        doc = json.loads(resp.read())
                except (OSError, ValueError, http.client.HTTPException):
                    continue
                self.cluster.events.record(
                    "view",
                    node=name,
                    local_alive=bool(doc.get("local_alive")),
                    members=doc.get("members"),
                    paused=doc.get("worker_paused"),
                )

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)


def store_read(url: str, read: Callable[[Any], Any], timeout_s: float = 60) -> Any:
    """Run ``read(store)`` (a coroutine function) against a fresh connection; retried with
    a deadline while the store is unavailable (a failover in progress)."""

    async def once() -> Any:
        store = await open_store(url, migrate=False)
        try:
            return await asyncio.wait_for(read(store), 20)
        finally:
            await store.close()

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return asyncio.run(once())
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def running_by_owner(url: str) -> dict[str, dict[str, int]]:
    async def read(store: Any) -> dict[str, dict[str, int]]:
        held: dict[str, dict[str, int]] = {}
        for s in await store.list_steps(status=StepStatus.RUNNING, limit=100_000):
            held.setdefault(str(s.owner_node), {})[s.id] = int(s.lease_epoch)
        return held

    result: dict[str, dict[str, int]] = store_read(url, read)
    return result


def step_counts(url: str) -> dict[str, int]:
    async def read(store: Any) -> dict[str, int]:
        return {str(k.value): int(v) for k, v in (await store.step_counts()).items()}

    result: dict[str, int] = store_read(url, read)
    return result


def make_host_cluster(
    root: Path, store_url: str, network: Network, settings: dict[str, dict[str, Any]]
) -> HostCluster:
    """A cluster in ``root`` whose gossip is sealed with one fresh key (a node refuses
    plaintext gossip on a non-loopback address)."""
    merged = {k: dict(v) for k, v in settings.items()}
    merged.setdefault("gossip", {})["keys"] = [generate_key()]
    cluster = HostCluster(root, store_url, merged)
    cluster.setup(network)
    return cluster
