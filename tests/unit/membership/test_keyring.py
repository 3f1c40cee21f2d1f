"""AES-GCM keyring: rotation, label binding, clear errors."""

from __future__ import annotations

import base64

import pytest

from relaymesh.exceptions import ConfigError, ProtocolError
from relaymesh.membership.keyring import (
    REPLAY_WINDOW_MS,
    SEAL_OVERHEAD_BYTES,
    Keyring,
    ReplayGuard,
    generate_key,
)

K1, K2, K3 = b"1" * 32, b"2" * 16, b"3" * 24


def test_seal_open_roundtrip_and_overhead() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"hello", b"lbl", sent_at_ms=1234)
    assert len(sealed) == 5 + SEAL_OVERHEAD_BYTES
    opened = ring.open(sealed, b"lbl")
    assert (opened.body, opened.sent_at_ms) == (b"hello", 1234)


def test_secondary_key_opens_and_primary_seals() -> None:
    old = Keyring([K1])
    rotating = Keyring([K2, K1])
    assert rotating.open(old.seal(b"x"), b"").body == b"x"
    with pytest.raises(ProtocolError) as err:
        old.open(rotating.seal(b"x"))
    assert err.value.reason == "auth"


def test_wrong_key_or_label_or_tamper_is_auth() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"x", "a")
    cases: list[tuple[Keyring, bytes, str]] = [
        (Keyring([K3]), sealed, "a"),
        (ring, sealed, "b"),
        (ring, sealed[:-1] + bytes([sealed[-1] ^ 1]), "a"),
        (ring, b"\x01short", "a"),
    ]
    for keyring, data, label in cases:
        with pytest.raises(ProtocolError) as err:
            keyring.open(data, label)
        assert err.value.reason == "auth"


def test_from_base64_and_generate_key() -> None:
    key = generate_key()
    assert len(base64.b64decode(key)) == 32
    ring = Keyring.from_base64([key])
    assert ring.primary == base64.b64decode(key)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["not base64!"], "gossip key #1 is not valid base64"),
        ([base64.b64encode(b"short").decode()], "gossip key #1 is 5 bytes"),
        ([], "at least one key"),
    ],
)
def test_bad_keys_are_config_errors(keys: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Keyring.from_base64(keys)


def test_a_version_1_packet_without_a_timestamp_is_refused() -> None:
    ring = Keyring([K1])
    sealed = bytearray(ring.seal(b"x"))
    sealed[0] = 1
    with pytest.raises(ProtocolError) as err:
        ring.open(bytes(sealed))
    assert err.value.reason == "auth"


def reason(guard: ReplayGuard, data: bytes, now_ms: int, ring: Keyring) -> str | None:
    try:
        guard.check(ring.open(data), now_ms)
    except ProtocolError as exc:
        return exc.reason
    return None


def test_replay_guard_refuses_a_second_copy_and_packets_outside_the_window() -> None:
    ring = Keyring([K1])
    guard = ReplayGuard()
    now = 1_700_000_000_000
    first = ring.seal(b"x", sent_at_ms=now)
    assert reason(guard, first, now, ring) is None
    assert reason(guard, first, now + 5, ring) == "replay"
    assert reason(guard, ring.seal(b"x", sent_at_ms=now), now, ring) is None  # new nonce
    old = ring.seal(b"x", sent_at_ms=now - REPLAY_WINDOW_MS - 1)
    assert reason(guard, old, now, ring) == "stale"
    ahead = ring.seal(b"x", sent_at_ms=now + REPLAY_WINDOW_MS + 1)
    assert reason(guard, ahead, now, ring) == "stale"
    # Once the window has passed, the copy is refused as stale, and forgotten.
    assert reason(guard, first, now + REPLAY_WINDOW_MS + 1, ring) == "stale"
    reason(
        guard,
        ring.seal(b"y", sent_at_ms=now + 2 * REPLAY_WINDOW_MS),
        now + 2 * REPLAY_WINDOW_MS,
        ring,
    )
    assert len(guard) == 1


def test_replay_guard_stays_bounded_and_refuses_below_what_it_forgot() -> None:
    ring = Keyring([K1])
    guard = ReplayGuard(max_entries=8)
    now = 1_700_000_000_000
    packets = [ring.seal(b"x", sent_at_ms=now + i) for i in range(20)]
    for data in packets:
        assert reason(guard, data, now + 20, ring) is None
    assert len(guard) <= 8
    for data in packets:  # forgotten or remembered, every copy is refused
        assert reason(guard, data, now + 20, ring) == "replay"
