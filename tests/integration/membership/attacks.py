"""Hand-crafted packets for the hostile-network tests (issue 8), shared by the live
gossip tests and the e2e replay of every attack.

Packets are built with the wire module's own encoders, so only the field under attack
is wrong. Attacker sockets bind 127.0.0.2: the per-source rate limits would otherwise
also throttle the cluster's own traffic on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time

import msgpack

from relaymesh.membership.keyring import Keyring
from relaymesh.membership.wire import Message, encode_message, frame, pack_compound
from tests.integration.membership.conftest import metric_value

ATTACKER_HOST = "127.0.0.2"
PUSHPULL_STATE_TAG = 8
"""The first field of a push/pull snapshot (``wire.encode_state``)."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def attacker(port: int = 0) -> socket.socket:
    """A UDP socket on the attacker's own loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER_HOST, port))
    return sock


def datagram(*messages: Message, keyring: Keyring | None = None, sent_at_ms: int = 0) -> bytes:
    """One compound packet of ``messages``, sealed with ``keyring`` when given."""
    body = pack_compound([encode_message(m) for m in messages])
    return frame(body, b"", keyring, sent_at_ms or wall_ms())


def state_frame(entries: list[list[object]], keyring: Keyring | None = None) -> bytes:
    """A push/pull snapshot of raw member entries ``[name, inc, status, host, port, meta]``."""
    body = msgpack.packb([PUSHPULL_STATE_TAG, False, entries])
    return frame(body, b"", keyring, wall_ms())


def pushpull(port: int, payload: bytes) -> bytes | None:
    """Send one push/pull frame over TCP; the reply's bytes, or None when refused."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(struct.pack(">I", len(payload)) + payload)
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            pass
    return data or None


def dropped(metrics_text: str, reason: str) -> float:
    """``relaymesh_packets_dropped_total{reason=...}`` from a /metrics scrape."""
    return metric_value(metrics_text, "relaymesh_packets_dropped_total", f'reason="{reason}"')
