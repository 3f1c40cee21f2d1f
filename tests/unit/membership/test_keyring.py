"""AES-GCM keyring: rotation, label binding, clear errors."""

from __future__ import annotations

import base64

import pytest

from relaymesh.exceptions import ConfigError, ProtocolError
from relaymesh.membership.keyring import SEAL_OVERHEAD_BYTES, Keyring, generate_key

K1, K2, K3 = b"1" * 32, b"2" * 16, b"3" * 24


def test_seal_open_roundtrip_and_overhead() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"hello", b"lbl")
    assert len(sealed) == 5 + SEAL_OVERHEAD_BYTES
    assert ring.open(sealed, b"lbl") == b"hello"


def test_secondary_key_opens_and_primary_seals() -> None:
    old = Keyring([K1])
    rotating = Keyring([K2, K1])
    assert rotating.open(old.seal(b"x"), b"") == b"x"
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
