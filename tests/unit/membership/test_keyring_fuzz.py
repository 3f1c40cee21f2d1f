"""Fuzzing the keyring and the replay window: anything an attacker can send to
``Keyring.open`` is refused as ``auth`` or opened intact, and ``ReplayGuard`` stays
bounded and never accepts a nonce twice. Short in ``make test``, long in ``make fuzz``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.keyring import Keyring, Opened, ReplayGuard
from tests.fuzzing import fuzz_settings

RING = Keyring([b"a" * 32, b"b" * 16])
OTHER = Keyring([b"c" * 24])


@fuzz_settings(300)
@given(st.binary(max_size=600), st.binary(max_size=8))
def test_arbitrary_bytes_are_refused_as_auth(data: bytes, label: bytes) -> None:
    try:
        RING.open(data, label)
    except ProtocolError as exc:
        assert exc.reason == "auth"


@fuzz_settings(200)
@given(
    st.binary(max_size=300),
    st.text(max_size=8),
    st.integers(0, 2**63 - 1),
    st.data(),
)
def test_sealed_packets_open_intact_and_any_change_is_refused(
    body: bytes, label: str, sent_at_ms: int, data: st.DataObject
) -> None:
    sealed = RING.seal(body, label, sent_at_ms)
    assert RING.open(sealed, label)[:2] == (body, sent_at_ms)
    for wrong in (OTHER,):
        try:
            wrong.open(sealed, label)
            raise AssertionError("another key opened the packet")
        except ProtocolError as exc:
            assert exc.reason == "auth"
    i = data.draw(st.integers(0, len(sealed) - 1))
    xor = data.draw(st.integers(1, 255))
    tampered = bytearray(sealed)
    tampered[i] ^= xor
    try:
        RING.open(bytes(tampered), label)
        raise AssertionError(f"a change at byte {i} was accepted")
    except ProtocolError as exc:
        assert exc.reason == "auth"


@fuzz_settings(150)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(-3_000, 3_000), st.integers(0, 500)),
        max_size=300,
    )
)
def test_the_replay_guard_is_bounded_and_never_accepts_a_packet_twice(
    steps: list[tuple[bool, int, int]],
) -> None:
    """Each step sends a new packet (a fresh nonce) or replays the last one accepted."""
    guard = ReplayGuard(window_ms=1_000, max_entries=16)
    now_ms = 1_000_000
    accepted: list[Opened] = []
    for n, (replay, skew_ms, advance_ms) in enumerate(steps):
        now_ms += advance_ms
        if replay and accepted:
            packet = accepted[-1]
        else:
            packet = Opened(b"", now_ms + skew_ms, n.to_bytes(12, "big"))
        try:
            guard.check(packet, now_ms)
        except ProtocolError as exc:
            assert exc.reason in ("stale", "replay")
        else:
            assert abs(now_ms - packet.sent_at_ms) <= 1_000
            assert packet not in accepted, "a replayed packet was accepted"
            accepted.append(packet)
        assert len(guard) <= 16
