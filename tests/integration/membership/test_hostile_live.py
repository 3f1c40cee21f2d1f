"""Attacks from issue 8 replayed against live ``relaymesh gossip`` processes on loopback.

Each test crafts datagrams or TCP frames by hand (the wire module's own encoders, so
only the field under attack is wrong) and sends them from a socket of its own, then
checks that every live node is ALIVE everywhere again within 20 s and that the node
counted what it refused. The packet helpers are in ``attacks.py`` (shared with the
e2e replay of every attack at once, ``tests/e2e/test_replayed_attacks.py``).
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest

from relaymesh.membership.incarnation import INCARNATION_MAX, incarnation_ceiling
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.wire import Alive, Dead, Ping, PingReq, Suspect
from tests.integration.membership.attacks import attacker, datagram, pushpull, state_frame, wall_ms
from tests.integration.membership.attacks import dropped as attack_drops
from tests.integration.membership.conftest import (
    FAST_GOSSIP_TOML,
    GossipFactory,
    GossipProc,
    free_port,
    wait_for,
    write_seeds,
)

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 30.0
RECOVER_S = 20.0
"""Issue 8: every live node ALIVE everywhere again within 20 s of an attack."""


def dropped(proc: GossipProc, reason: str) -> float:
    return attack_drops(proc.metrics(), reason)


def all_alive(procs: list[GossipProc]) -> bool:
    names = {p.name for p in procs}
    for p in procs:
        view = p.members()
        if view is None or any(view.get(n) != "ALIVE" for n in names):
            return False
    return True


def cluster(
    make: GossipFactory, tmp_path: Path, n: int = 3, toml: str = FAST_GOSSIP_TOML
) -> list[GossipProc]:
    ports = [free_port() for _ in range(n)]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    procs = [make(f"n{i}", seeds, port=p, config_toml=toml) for i, p in enumerate(ports)]
    wait_for(lambda: all_alive(procs), START_TIMEOUT_S, f"{n} nodes to converge", procs)
    return procs


def incarnation_of(proc: GossipProc, observer: GossipProc) -> int:
    for row in observer.members_full():
        if row["name"] == proc.name:
            value = row["incarnation"]
            assert isinstance(value, int)
            return value
    raise AssertionError(f"{observer.name} does not know {proc.name}")


def test_one_datagram_at_the_maximum_incarnation_evicts_no_one(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path)
    victim, others = procs[2], procs[:2]
    sock = attacker()
    try:
        for forged in (
            Suspect(victim.name, INCARNATION_MAX, "x"),
            Dead(victim.name, INCARNATION_MAX, "x"),
            Alive(victim.name, INCARNATION_MAX, ("127.0.0.1", victim.port), {}),
            Suspect(victim.name, incarnation_ceiling(wall_ms()) + 10**9, "x"),
        ):
            for target in others:
                sock.sendto(datagram(forged), ("127.0.0.1", target.port))
    finally:
        sock.close()
    wait_for(
        lambda: all(dropped(p, "incarnation") >= 4 for p in others), 10, "drops counted", procs
    )
    wait_for(lambda: all_alive(procs), RECOVER_S, "everyone ALIVE everywhere", procs)
    ceiling = incarnation_ceiling(wall_ms())
    for observer in procs:
        assert incarnation_of(victim, observer) <= ceiling
    assert all(p.alive() for p in procs)


def test_an_accusation_at_the_edge_of_the_window_is_refuted_and_believed(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path)
    victim = procs[2]
    edge = incarnation_ceiling(wall_ms()) - 1
    with attacker() as sock:
        for target in procs:
            sock.sendto(datagram(Suspect(victim.name, edge, "x")), ("127.0.0.1", target.port))

    def refuted() -> bool:
        return all(incarnation_of(victim, p) > edge for p in procs)

    wait_for(refuted, RECOVER_S, "the refutation to be believed everywhere", procs)
    wait_for(lambda: all_alive(procs), RECOVER_S, "everyone ALIVE everywhere", procs)


def test_a_poisoned_incarnation_file_is_ignored_on_restart(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path, n=2)
    victim = procs[1]
    victim.stop()
    path = tmp_path / "state" / f"{victim.name}.incarnation"
    assert path.exists()
    path.write_text(f"{INCARNATION_MAX}\n")
    victim.start()
    wait_for(lambda: all_alive(procs), START_TIMEOUT_S, "the victim back ALIVE", procs)
    assert incarnation_of(victim, procs[0]) <= incarnation_ceiling(wall_ms())
    assert "incarnation_file_ignored" in victim.log_text()
    assert int(path.read_text()) <= incarnation_ceiling(wall_ms())


def test_push_pull_refuses_a_name_udp_refuses_and_keeps_the_rest(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path)
    target = procs[0]
    entries = [
        ["bad\nname", 1, 0, "127.0.0.1", free_port(), {}],
        ["fine-name", wall_ms(), 0, "127.0.0.1", free_port(), {}],
    ]
    state = state_frame(entries)
    reply = pushpull(target.port, state)
    assert reply is not None, "the snapshot was refused whole"
    view = target.members()
    assert view is not None and "fine-name" in view and "bad\nname" not in view
    assert dropped(target, "schema") >= 1
    # The cluster keeps gossiping: the name never reaches a peer, no packet is lost to it.
    wait_for(lambda: all("fine-name" in (p.members() or {}) for p in procs), 10, "spread", procs)
    wait_for(lambda: all_alive(procs), RECOVER_S, "everyone ALIVE everywhere", procs)
    assert all("bad\nname" not in (p.members() or {}) for p in procs)


def test_a_spoofable_join_ping_gets_no_piggybacked_updates(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path, n=2)
    target = procs[0]
    address = ("127.0.0.1", target.port)
    with attacker() as feeder:
        # Give the node news to piggyback: members it will gossip about for a while.
        news = [Alive(f"fake-{i}", wall_ms(), ("127.0.0.1", 1 + i), {}) for i in range(30)]
        for i in range(0, len(news), 10):
            feeder.sendto(datagram(*news[i : i + 10]), address)
    wait_for(lambda: "fake-29" in (target.members() or {}), 10, "the fakes to be known")
    with attacker() as victim:
        victim.settimeout(3)
        host, port = victim.getsockname()
        request = datagram(Alive("joiner", wall_ms(), (host, port), {}), Ping(7, ""))
        victim.sendto(request, address)
        reply, _ = victim.recvfrom(65536)
    # An ack and the node's own ALIVE; with updates piggybacked it would be ~1 kB.
    assert len(reply) <= len(request) + 64, len(reply)


def test_ping_req_is_served_only_for_members_at_their_known_addresses(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path, n=2)
    relay, member = procs
    with attacker() as requester, attacker() as reflector:
        reflector.settimeout(1.0)
        refl = reflector.getsockname()
        for i, (name, addr) in enumerate(
            [(member.name, refl), ("nobody", refl), (relay.name, ("127.0.0.1", relay.port))]
        ):
            requester.sendto(
                datagram(PingReq(100 + i, name, addr, True)), ("127.0.0.1", relay.port)
            )
        with pytest.raises(TimeoutError):
            reflector.recvfrom(65536)  # the relay pinged no address named in the packet
        requester.settimeout(0.5)
        with pytest.raises(TimeoutError):
            requester.recvfrom(65536)  # nor answered a stranger
    wait_for(lambda: dropped(relay, "unknown_sender") >= 3, 10, "refusals counted", procs)


KEY = base64.b64encode(b"r" * 32).decode()
KEYED_TOML = FAST_GOSSIP_TOML + f'keys = ["{KEY}"]\n'


def test_a_replayed_or_stale_sealed_packet_is_dropped_and_counted(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path, n=2, toml=KEYED_TOML)
    target = procs[0]
    ring = Keyring([b"r" * 32])
    address = ("127.0.0.1", target.port)
    with attacker() as sock:
        sock.settimeout(3)
        sealed = datagram(Ping(41, target.name), keyring=ring)
        sock.sendto(sealed, address)
        sock.recvfrom(65536)  # the first copy is answered
        sock.settimeout(0.5)
        sock.sendto(sealed, address)  # the replay is not
        with pytest.raises(TimeoutError):
            sock.recvfrom(65536)
        sock.sendto(datagram(Ping(42, target.name), keyring=ring, sent_at_ms=1), address)
        with pytest.raises(TimeoutError):
            sock.recvfrom(65536)
    wait_for(
        lambda: dropped(target, "replay") >= 1 and dropped(target, "stale") >= 1,
        10,
        "replay and stale drops counted",
        procs,
    )
    wait_for(lambda: all_alive(procs), RECOVER_S, "everyone ALIVE everywhere", procs)


def test_push_pull_connections_that_send_nothing_are_cut_off_quickly(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    procs = cluster(gossip_procs, tmp_path, n=2)
    target = procs[0]
    conns: list[socket.socket] = []
    try:
        for _ in range(16):  # every slot
            conn = socket.create_connection(("127.0.0.1", target.port), timeout=5)
            conns.append(conn)
        started = time.monotonic()
        for conn in conns:
            conn.settimeout(5)
            assert conn.recv(1) == b""  # closed by the server
        # The 1 s first-byte timeout, not the 5 s whole-request one (room for a slow box).
        assert time.monotonic() - started < 4.5
    finally:
        for conn in conns:
            conn.close()
    wait_for(lambda: dropped(target, "timeout") >= 16, 10, "timeouts counted", procs)
    # And the slots are free again for a real exchange.
    wait_for(lambda: all_alive(procs), RECOVER_S, "everyone ALIVE everywhere", procs)
