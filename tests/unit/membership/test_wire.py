"""Wire format: round trips, strict validation, framing, and fuzzing the decoder."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.keyring import Keyring
from relaymesh.membership.protocol import DROP_REASONS
from relaymesh.membership.state import Member
from relaymesh.membership.wire import (
    MAX_MESSAGES_PER_PACKET,
    MAX_NAME_LEN,
    Ack,
    Alive,
    Dead,
    Left,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    array_header,
    decode_packet,
    decode_state,
    encode_message,
    encode_state,
    frame,
    pack_compound,
    unframe,
)
from relaymesh.model import MemberStatus
from tests.fuzzing import fuzz_settings

from ._helpers import FAST, core, packet

ALL: list[Message] = [
    Ping(1, "b"),
    Ping(2, ""),
    Ack(3),
    Nack(4),
    PingReq(5, "c", ("10.0.0.3", 7946), True),
    Alive("a", 7, ("10.0.0.1", 7946), {"role": "worker"}),
    Suspect("b", 2, "a"),
    Dead("b", 2, "a"),
    Left("a", 8),
]


def test_every_message_round_trips_in_one_compound() -> None:
    body = pack_compound([encode_message(m) for m in ALL])
    assert decode_packet(body) == ALL


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 70_000])
def test_array_header_matches_msgpack(n: int) -> None:
    assert msgpack.packb([None] * n)[: -n or None] == array_header(n)


def reason_of(body: bytes) -> str:
    with pytest.raises(ProtocolError) as err:
        decode_packet(body)
    return err.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        {"not": "a list"},
        [[]],
        [["ping", 1, "x"]],
        [[0, -1, "x"]],
        [[0, 2**40, "x"]],
        [[0, True, "x"]],
        [[1]],
        [[4, "", 1, "h", 1, {}]],
        [[4, "x" * (MAX_NAME_LEN + 1), 1, "h", 1, {}]],
        [[4, "ro\x00ue", 1, "h", 1, {}]],  # control characters in a name
        [[4, "r\x7fgue", 1, "h", 1, {}]],
        [[5, "line\nbreak", 1]],
        [[4, "a", 1.5, "h", 1, {}]],
        [[4, "a", 1, "h", 0, {}]],
        [[4, "a", 1, "h", 70000, {}]],
        [[4, "a", 1, "h", 1, {"k": 1}]],
        [[4, "a", 1, "h", 1, []]],
        [[2, 1, "t", "h", 1, "yes"]],
        [[5, "a", 1]],
    ],
)
def test_invalid_fields_are_schema_errors(raw: object) -> None:
    assert reason_of(msgpack.packb(raw)) == "schema"


def test_undecodable_and_oversized_structures_are_decode_errors() -> None:
    assert reason_of(b"\xc1") == "decode"  # never-used msgpack byte
    assert reason_of(msgpack.packb([[0, 1, "x"]]) + b"\x00") == "decode"  # trailing data
    assert reason_of(msgpack.packb([[0, 1, "x"]] * (MAX_MESSAGES_PER_PACKET + 1))) == "decode"
    assert reason_of(msgpack.packb([[4, "a", 1, "h", 1, {str(i): "" for i in range(40)}]])) == (
        "decode"
    )
    assert reason_of(msgpack.packb([[0, 1, b"bytes"]])) == "decode"
    assert reason_of(b"\x91\xd4\x01\x00") == "decode"  # ext type


def test_unknown_message_types_are_skipped_for_compatibility() -> None:
    body = msgpack.packb([[999, "from the future"], [1, 5]])
    assert decode_packet(body) == [Ack(5)]


def test_known_updates_are_skipped_before_validation() -> None:
    body = pack_compound([encode_message(Alive("a", 1, ("h", 1), {})), encode_message(Ack(1))])
    assert decode_packet(body, {(4, "a", 1)}) == [Ack(1)]


def test_frame_label_and_keys() -> None:
    ring = Keyring([b"k" * 32])
    plain = frame(b"body", b"prod", None)
    assert unframe(plain, b"prod", None) == b"body"
    sealed = frame(b"body", b"prod", ring)
    assert b"body" not in sealed
    assert unframe(sealed, b"prod", ring) == b"body"
    cases = [
        (plain, b"test", None, "label"),
        (sealed, b"test", ring, "label"),
        (plain, b"prod", ring, "auth"),
        (sealed, b"prod", None, "auth"),
        (sealed, b"prod", Keyring([b"x" * 32]), "auth"),
        (b"\x01", b"", None, "decode"),
        (b"\x07\x00body", b"", None, "decode"),
        (b"\x01\x09ab", b"", None, "decode"),
    ]
    for data, label, keyring, reason in cases:
        with pytest.raises(ProtocolError) as err:
            unframe(data, label, keyring)
        assert err.value.reason == reason


def test_state_round_trip_and_validation() -> None:
    members = [
        Member("a", ("h", 1), MemberStatus.ALIVE, 3, {"k": "v"}, 0),
        Member("b", ("h", 2), MemberStatus.LEFT, 9, {}, 0),
    ]
    join, back = decode_state(encode_state(members, join=True))
    assert join is True
    assert back == members
    with pytest.raises(ProtocolError, match="listed twice"):
        decode_state(encode_state([members[0], members[0]], join=False))
    with pytest.raises(ProtocolError):
        decode_state(msgpack.packb([8, False, [["a", 1, 9, "h", 1, {}]]]))


# --- fuzzing: a live core must survive anything -----------------------------

VALID = packet(*ALL)


def assert_survives(data: bytes) -> None:
    swim, _ = core()
    swim.handle_packet(data, ("10.9.9.9", 1))
    dropped = sum(swim.stats.dropped.values())
    assert swim.stats.packets_received == 1
    # The packet, or each of its messages alone (a compound holds at most 256).
    assert dropped <= MAX_MESSAGES_PER_PACKET
    assert set(swim.stats.dropped) == set(DROP_REASONS)


@fuzz_settings(300)
@given(st.binary(max_size=1600))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert_survives(data)
    assert_survives(b"\x01\x00" + data)


@fuzz_settings(250)
@given(st.data())
def test_mutated_valid_packets_never_raise(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "drop", "dup"]))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "drop" and len(raw) > 3:
            del raw[i]
        else:
            raw.insert(i, raw[i])
    assert_survives(bytes(raw))


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10)
json_like = (
    scalars
    | st.lists(scalars, max_size=4)
    | st.dictionaries(st.text(max_size=3), scalars, max_size=3)
)


@fuzz_settings(150)
@given(st.lists(st.lists(json_like, max_size=7), max_size=5))
def test_well_formed_msgpack_with_wrong_shapes_never_raises(messages: list[object]) -> None:
    swim, _ = core()
    swim.handle_packet(frame(msgpack.packb(messages), b"", None), ("10.9.9.9", 1))
    swim.tick()
    assert swim.stats.packets_received == 1


SEALING = Keyring([b"s" * 32])
SEALED_VALID = packet(*ALL, label="prod", keyring=SEALING)


@fuzz_settings(200)
@given(st.integers(0, len(SEALED_VALID) - 1), st.integers(1, 255))
def test_tampered_sealed_packets_are_dropped_by_the_part_hit(i: int, xor: int) -> None:
    raw = bytearray(SEALED_VALID)
    raw[i] ^= xor
    swim, _ = core(keyring=SEALING, config=replace(FAST, label="prod"))
    swim.handle_packet(bytes(raw), ("10.9.9.9", 1))
    # Frame: kind byte, label length, label "prod", then the sealed body.
    if i == 0:
        # No such frame kind, or the plain kind, which a keyed node refuses unread.
        reason = "auth" if raw[0] == 1 else "decode"
    elif i == 1:
        reason = "decode" if 2 + raw[1] > len(raw) else "label"  # truncated / other label
    elif i < 2 + len("prod"):
        reason = "label"
    else:
        reason = "auth"  # AES-GCM refuses any change to nonce, ciphertext or tag
    assert {k: v for k, v in swim.stats.dropped.items() if v} == {reason: 1}
    assert swim.take_outbound() == []


@fuzz_settings(200)
@given(st.binary(max_size=400))
def test_merge_state_raises_only_protocol_errors(data: bytes) -> None:
    swim, _ = core()
    for blob in (data, b"\x01\x00" + data):
        try:
            swim.merge_state(blob)
        except ProtocolError as exc:
            assert exc.reason in DROP_REASONS
