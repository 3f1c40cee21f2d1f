"""Hosts on one machine: network namespaces joined to a Linux bridge by veth pairs.

Each "host" is a namespace ``rmc<run>h<i>`` with one interface (``eth0``, address
``10.213.<x>.<10+i>``) whose peer is enslaved to the run's bridge ``rmb<run>``. The
bridge carries ``10.213.<x>.1`` in the root namespace, so the harness reaches every
host (HTTP, PostgreSQL) and nothing leaves the machine: the subnet exists only on
this bridge. ``<run>`` is random and ``<x>`` is chosen free of every route of the
root namespace, so parallel runs never collide.

Faults between hosts are nftables rules in the receiving host's own namespace (table
``inet rmchaos``, one input chain): a partition drops every packet from the other
side's addresses (symmetric: both sides get the rule; one-way: only one side), packet
loss drops ``numgen random mod 100 < N`` of them. Traffic from the bridge address (the
harness) is never filtered, so the harness can still watch a partitioned host.

``Network.close()`` kills every process left in the namespaces (by pid, from
``ip netns pids``), deletes them and the bridge; a run that died without closing is
reaped by the next one (``reap_stale``), found through its owner-pid file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path("/run/relaymesh-chaos")
PREFIX = "rmc"


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no ``ip``/``nft``)."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (.ci/run installs iproute2 and nftables)"
    probe = f"{PREFIX}probe{secrets.token_hex(2)}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        nft = _run("ip", "netns", "exec", probe, "nft", "list", "ruleset", check=False)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace: {nft.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _used_third_octets() -> set[int]:
    out = _run("ip", "-4", "route", "show").stdout + _run("ip", "-4", "addr", "show").stdout
    used: set[int] = set()
    for word in out.split():
        if word.startswith("10.213."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2].split("/")[0]))
    return used


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_pids(ns: str) -> None:
    pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)


def reap_stale() -> list[str]:
    """Remove namespaces and bridges of earlier runs whose owner process is gone."""
    reaped: list[str] = []
    if not STATE_DIR.is_dir():
        return reaped
    for owner_file in STATE_DIR.glob("*.owner"):
        run_id = owner_file.stem
        try:
            pid = int(owner_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and _owner_alive(pid):
            continue
        listed = _run("ip", "netns", "list", check=False).stdout.split()
        for ns in listed:
            if ns.startswith(f"{PREFIX}{run_id}h"):
                _kill_netns_pids(ns)
                _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", f"rmb{run_id}", check=False)
        owner_file.unlink(missing_ok=True)
        reaped.append(run_id)
    return reaped


@dataclass
class Host:
    name: str
    """Namespace name."""
    index: int
    address: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


@dataclass
class Network:
    """A bridge and its hosts; every fault is an nftables rule in a host's namespace."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)
    octet: int = 0

    @property
    def bridge(self) -> str:
        return f"rmb{self.run_id}"

    @property
    def gateway(self) -> str:
        """The bridge's own address, in the root namespace: where the harness is."""
        return f"10.213.{self.octet}.1"

    def create(self) -> None:
        reap_stale()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / f"{self.run_id}.owner").write_text(str(os.getpid()))
        used = _used_third_octets()
        free = [x for x in range(2, 254) if x not in used]
        if not free:
            raise RuntimeError("no free 10.213.x.0/24 subnet for the chaos bridge")
        self.octet = free[secrets.randbelow(len(free))]
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add_host(self, label: str) -> Host:
        index = len(self.hosts) + 1
        ns = f"{PREFIX}{self.run_id}h{index}"
        outside, inside = f"rmv{self.run_id}{index}", f"rmp{self.run_id}{index}"
        address = f"10.213.{self.octet}.{10 + index}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", ns)
        _run("ip", "-n", ns, "link", "set", inside, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "set", outside, "master", self.bridge, "up")
        _nft(ns, "add table inet rmchaos")
        _nft(ns, "add chain inet rmchaos input { type filter hook input priority 0 ; }")
        host = Host(ns, index, address)
        self.hosts[label] = host
        return host

    # -- faults ---------------------------------------------------------------------------

    def _drop_from(self, to: Host, sources: Iterable[Host], loss_pct: int | None = None) -> None:
        addrs = ", ".join(h.address for h in sources)
        if not addrs:
            return
        rule = f"add rule inet rmchaos input ip saddr {{ {addrs} }}"
        if loss_pct is not None:
            rule += f" numgen random mod 100 < {int(loss_pct)}"
        _nft(to.name, rule + " drop")

    def partition(self, a: Sequence[str], b: Sequence[str], *, one_way: bool = False) -> None:
        """Drop traffic between groups ``a`` and ``b``; ``one_way``: only ``a`` → ``b``
        (``b`` still reaches ``a``)."""
        for name in b:
            self._drop_from(self.hosts[name], (self.hosts[n] for n in a))
        if not one_way:
            for name in a:
                self._drop_from(self.hosts[name], (self.hosts[n] for n in b))

    def loss(self, names: Sequence[str], pct: int) -> None:
        """Drop ``pct`` % of the packets between every pair of ``names``."""
        for name in names:
            others = [self.hosts[n] for n in names if n != name]
            self._drop_from(self.hosts[name], others, loss_pct=pct)

    def heal(self) -> None:
        """Remove every partition and loss rule."""
        for host in self.hosts.values():
            _nft(host.name, "flush chain inet rmchaos input")

    def rules(self) -> dict[str, str]:
        return {
            label: _run(
                "ip", "netns", "exec", h.name, "nft", "list", "table", "inet", "rmchaos"
            ).stdout
            for label, h in self.hosts.items()
        }

    # -- cleanup ----------------------------------------------------------------------------

    def close(self) -> None:
        for host in self.hosts.values():
            _kill_netns_pids(host.name)
            _run("ip", "netns", "del", host.name, check=False)
        self.hosts.clear()
        if self.octet:
            _run("ip", "link", "del", self.bridge, check=False)
        (STATE_DIR / f"{self.run_id}.owner").unlink(missing_ok=True)


def _nft(ns: str, rule: str) -> None:
    _run("ip", "netns", "exec", ns, "nft", rule)
