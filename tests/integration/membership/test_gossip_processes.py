"""Real ``relaymesh gossip`` processes on loopback: join, failure, leave, restart, keys, notify."""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.integration.membership.conftest import (
    FAST_GOSSIP_TOML,
    GossipFactory,
    GossipProc,
    free_port,
    metric_value,
    wait_for,
    write_seeds,
)

pytestmark = pytest.mark.slow

# A loaded 2-core machine starts a Python process in ~1 s; 5 of them at once take longer.
START_TIMEOUT_S = 30.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def changed_at_ms(row: dict[str, object]) -> int:
    value = row["status_changed_at_ms"]
    assert isinstance(value, int), row
    return value


def sees(observer: GossipProc, expected: dict[str, str]) -> bool:
    view = observer.members()
    return view is not None and all(view.get(n) == s for n, s in expected.items())


def all_see(observers: list[GossipProc], expected: dict[str, str]) -> bool:
    return all(sees(o, expected) for o in observers)


def test_five_nodes_converge_detect_kill_and_rejoin_after_restart(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(5)]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    spawned_ms = wall_ms()
    procs = [gossip_procs(f"n{i}", seeds, port=p) for i, p in enumerate(ports)]
    everyone = {p.name: "ALIVE" for p in procs}

    wait_for(lambda: all_see(procs, everyone), START_TIMEOUT_S, "5 nodes to converge", procs)
    assert 'relaymesh_members{status="alive"} 5.0' in procs[0].metrics()
    # When each node saw each member appear: wall-clock ms, after the processes started.
    for p in procs:
        rows = p.members_full()
        assert {r["name"] for r in rows} == set(everyone)
        for row in rows:
            assert spawned_ms <= changed_at_ms(row) <= wall_ms(), (p.name, row)

    victim, survivors = procs[4], procs[:4]
    before = {m["name"]: m["incarnation"] for m in survivors[0].members_full()}
    killed_ms = wall_ms()
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    wait_for(
        lambda: all_see(survivors, {victim.name: "DEAD"}),
        20,
        "every survivor to mark the killed node DEAD",
        survivors,
    )
    # The change time is the node's own moment of the verdict, not the time of the read:
    # after the kill, and one DEAD row keeps its stamp however often it is read.
    for p in survivors:
        row = next(r for r in p.members_full() if r["name"] == victim.name)
        assert killed_ms <= changed_at_ms(row) <= wall_ms(), (p.name, row)
        again = next(r for r in p.members_full() if r["name"] == victim.name)
        assert again["status_changed_at_ms"] == row["status_changed_at_ms"]

    # Same name, same port, same state dir: it must come back ALIVE everywhere.
    victim.start()
    wait_for(
        lambda: all_see(procs, everyone),
        START_TIMEOUT_S,
        "the restarted node to be ALIVE everywhere",
        procs,
    )
    after = {m["name"]: m["incarnation"] for m in survivors[0].members_full()}
    assert int(after[victim.name]) > int(before[victim.name])  # type: ignore[call-overload]


def test_sigterm_leaves_gracefully_and_notifies_systemd(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = NotifyCollector(notify_path)
    try:
        ports = [free_port() for _ in range(3)]
        seeds = write_seeds(tmp_path / "seeds.txt", ports)
        leaver = gossip_procs(
            "leaver",
            seeds,
            port=ports[0],
            env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"},
        )
        stayers = [gossip_procs(f"s{i}", seeds, port=p) for i, p in enumerate(ports[1:])]
        procs = [leaver, *stayers]

        wait_for(lambda: bool(notify.messages()), START_TIMEOUT_S, "READY=1", procs)
        assert notify.messages()[0].splitlines()[0] == "READY=1", notify.messages()
        # The loop pings the watchdog every WATCHDOG_USEC / 2 once it is ready.
        wait_for(lambda: any("WATCHDOG=1" in m for m in notify.messages()), 10, "WATCHDOG=1", procs)

        everyone = {p.name: "ALIVE" for p in procs}
        wait_for(lambda: all_see(procs, everyone), START_TIMEOUT_S, "3 nodes to converge", procs)

        # SIGHUP re-reads the file and names the changed fields (never their values).
        config = tmp_path / "leaver.toml"
        config.write_text(FAST_GOSSIP_TOML + "label = 'secret-label'\n[worker]\nslots = 9\n")
        leaver.signal(signal.SIGHUP)
        wait_for(
            lambda: '"settings_reloaded"' in leaver.log_text(), 10, "the reload to be logged", procs
        )
        reload_line = next(
            line for line in leaver.log_text().splitlines() if '"settings_reloaded"' in line
        )
        assert "gossip.label" in reload_line and "worker.slots" in reload_line
        assert "secret-label" not in reload_line

        leaver.signal(signal.SIGTERM)
        assert leaver.wait(10) == 0, leaver.log_text()[-2000:]
        # LEFT comes from the LEAVE broadcast, long before failure detection could say DEAD.
        wait_for(lambda: all_see(stayers, {"leaver": "LEFT"}), 5, "LEFT everywhere", stayers)

        wait_for(
            lambda: any(m.startswith("STOPPING=1") for m in notify.messages()),
            5,
            "STOPPING=1",
            procs,
        )
        statuses = [m for m in notify.messages() if m.startswith("STATUS=")]
        assert any("3 alive" in m for m in statuses), statuses
        assert '"event": "gossip_stopped"' in leaver.log_text()
    finally:
        notify.close()


class NotifyCollector:
    """A NOTIFY_SOCKET that a thread drains at once: a unix datagram queue holds only a
    few messages (net.unix.max_dgram_qlen), so reading late would lose some."""

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(data.decode())

    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def test_different_keys_cannot_talk_and_a_secondary_key_can(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))

    def config(*keys: str) -> str:
        quoted = ", ".join(f'"{k}"' for k in keys)
        return FAST_GOSSIP_TOML + f"keys = [{quoted}]\n"

    # a and b: one key each, different -> strangers. c and d: each other's primary
    # as secondary, the middle step of a key rotation -> they talk both ways.
    ab_ports = [free_port(), free_port()]
    ab_seeds = write_seeds(tmp_path / "ab.txt", ab_ports)
    a = gossip_procs("a", ab_seeds, config(k1), port=ab_ports[0])
    b = gossip_procs("b", ab_seeds, config(k2), port=ab_ports[1])
    cd_ports = [free_port(), free_port()]
    cd_seeds = write_seeds(tmp_path / "cd.txt", cd_ports)
    c = gossip_procs("c", cd_seeds, config(k1, k2), port=cd_ports[0])
    d = gossip_procs("d", cd_seeds, config(k2, k1), port=cd_ports[1])
    procs = [a, b, c, d]

    wait_for(
        lambda: all_see([c, d], {"c": "ALIVE", "d": "ALIVE"}),
        START_TIMEOUT_S,
        "c and d (rotating keys) to see each other",
        procs,
    )

    def auth_drops(p: GossipProc) -> float:
        return metric_value(p.metrics(), "relaymesh_packets_dropped_total", 'reason="auth"')

    wait_for(
        lambda: a.members() is not None and b.members() is not None,
        START_TIMEOUT_S,
        "a and b to serve HTTP",
        procs,
    )
    wait_for(
        lambda: auth_drops(a) > 0 and auth_drops(b) > 0,
        START_TIMEOUT_S,
        "a and b to drop each other's packets as auth",
        procs,
    )
    assert a.members() == {"a": "ALIVE"}
    assert b.members() == {"b": "ALIVE"}


def test_default_timings_detect_a_killed_node(gossip_procs: GossipFactory, tmp_path: Path) -> None:
    # The LAN profile as shipped (probe 1 s, timeout 500 ms, suspicion mult 4), so the
    # fast timings above are not hiding a problem that only real timings show.
    ports = [free_port() for _ in range(3)]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    procs = [gossip_procs(f"d{i}", seeds, config_toml="", port=p) for i, p in enumerate(ports)]
    everyone = {p.name: "ALIVE" for p in procs}
    wait_for(lambda: all_see(procs, everyone), START_TIMEOUT_S, "3 nodes to converge", procs)

    victim, survivors = procs[0], procs[1:]
    victim.signal(signal.SIGKILL)
    # ~6 s on loopback: a probe round, then Lifeguard's suspicion timeout for 3 nodes.
    wait_for(lambda: all_see(survivors, {"d0": "DEAD"}), 40, "DEAD at default timings", survivors)
