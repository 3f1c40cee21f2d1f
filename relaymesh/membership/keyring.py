"""AES-GCM sealing of gossip packets with a primary key and secondary keys.

Owns the cluster's shared keys. The first key seals; every key is tried to open,
so keys rotate without downtime (add the new key as secondary everywhere, promote
it to primary everywhere, then drop the old one). The cluster label is bound to
every sealed packet as associated data, so a packet sealed for another cluster
does not open even when the key is the same.

Sealed layout: ``version (1 byte) | nonce (12 bytes) | ciphertext + tag (16 bytes)``.
Nonces come from ``os.urandom``: under GCM a repeated nonce leaks the key stream,
and an injected, seeded ``random.Random`` (as the simulator uses) would repeat.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relaymesh.exceptions import ConfigError, ProtocolError

__all__ = ["KEY_SIZES", "SEAL_OVERHEAD_BYTES", "Keyring", "generate_key"]

KEY_SIZES = (16, 24, 32)
_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
SEAL_OVERHEAD_BYTES = 1 + _NONCE_BYTES + _TAG_BYTES
"""Bytes ``seal`` adds to its input."""


def generate_key() -> str:
    """A new random AES-256 key, base64-encoded (for ``relaymesh keygen``)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


class Keyring:
    """Primary key (first) seals; all keys open. Immutable once built."""

    __slots__ = ("_ciphers", "_keys")

    def __init__(self, keys: Iterable[bytes]) -> None:
        key_list = [bytes(k) for k in keys]
        if not key_list:
            raise ConfigError("a keyring needs at least one key")
        for i, key in enumerate(key_list):
            if len(key) not in KEY_SIZES:
                raise ConfigError(
                    f"gossip key #{i + 1} is {len(key)} bytes; AES needs 16, 24 or 32"
                )
        self._keys = tuple(key_list)
        self._ciphers = tuple(AESGCM(k) for k in key_list)

    @classmethod
    def from_base64(cls, keys: Iterable[str]) -> Keyring:
        """Build from base64 strings (settings ``gossip.keys``); ConfigError names a bad one."""
        raw: list[bytes] = []
        for i, text in enumerate(keys):
            try:
                raw.append(base64.b64decode(text.strip(), validate=True))
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"gossip key #{i + 1} is not valid base64") from exc
        return cls(raw)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def seal(self, plain: bytes, label: bytes | str = b"") -> bytes:
        """Encrypt and authenticate ``plain`` (and ``label``) with the primary key."""
        nonce = os.urandom(_NONCE_BYTES)
        return bytes((_VERSION,)) + nonce + self._ciphers[0].encrypt(nonce, plain, _ad(label))

    def open(self, sealed: bytes, label: bytes | str = b"") -> bytes:
        """Decrypt with whichever key fits; ``ProtocolError('auth')`` when none does."""
        if len(sealed) < SEAL_OVERHEAD_BYTES or sealed[0] != _VERSION:
            raise ProtocolError("auth", "sealed packet is malformed")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        body = sealed[1 + _NONCE_BYTES :]
        ad = _ad(label)
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, body, ad)
            except InvalidTag:
                continue
        raise ProtocolError("auth", "no key opens the packet")


def _ad(label: bytes | str) -> bytes:
    return label.encode("utf-8") if isinstance(label, str) else label
