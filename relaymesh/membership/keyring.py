"""AES-GCM sealing of gossip packets with a primary key and secondary keys.

Owns the cluster's shared keys. The first key seals; every key is tried to open,
so keys rotate without downtime (add the new key as secondary everywhere, promote
it to primary everywhere, then drop the old one). The cluster label is bound to
every sealed packet as associated data, so a packet sealed for another cluster
does not open even when the key is the same.

Sealed layout (version 2)::

    version (1 byte: 2) | nonce (12 bytes) | AES-GCM( sent_at_ms (8 bytes) | body ) + tag (16)

Nonces come from ``os.urandom``: under GCM a repeated nonce leaks the key stream,
and an injected, seeded ``random.Random`` (as the simulator uses) would repeat.
``sent_at_ms`` (the sender's wall clock, big-endian) is inside the ciphertext, so it
is authenticated: ``ReplayGuard`` refuses a packet sent outside a bounded window
around our clock, or whose nonce it already saw within that window (a captured
packet played back). Version 1 (no timestamp, before replay protection) is refused:
a keyed cluster upgrades all nodes together (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import os
import struct
from collections.abc import Iterable
from typing import NamedTuple

from relaymesh.exceptions import ConfigError, ProtocolError

__all__ = [
    "KEY_SIZES",
    "REPLAY_MAX_ENTRIES",
    "REPLAY_WINDOW_MS",
    "SEAL_OVERHEAD_BYTES",
    "Keyring",
    "Opened",
    "ReplayGuard",
    "generate_key",
]

KEY_SIZES = (16, 24, 32)
_VERSION = 2
_NONCE_BYTES = 12
_TAG_BYTES = 16
_SENT_AT = struct.Struct(">Q")
SEAL_OVERHEAD_BYTES = 1 + _NONCE_BYTES + _TAG_BYTES + _SENT_AT.size
"""Bytes ``seal`` adds to its input."""

REPLAY_WINDOW_MS = 60_000
"""A sealed packet sent more than this before or after our wall clock is refused
(``stale``): keyed nodes need clocks within a minute of each other (NTP)."""
REPLAY_MAX_ENTRIES = 65_536
"""Nonces remembered at most (~100 bytes each); past it the oldest are forgotten and
nothing sent at or before them is accepted any more."""


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
        # Imported here: a node without gossip keys never loads cryptography (~20
        # modules, ~10 ms and a few MB on every start).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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

    def seal(self, plain: bytes, label: bytes | str = b"", sent_at_ms: int = 0) -> bytes:
        """Encrypt and authenticate ``sent_at_ms``, ``plain`` (and ``label``) with the
        primary key."""
        nonce = os.urandom(_NONCE_BYTES)
        inner = _SENT_AT.pack(max(sent_at_ms, 0)) + plain
        return bytes((_VERSION,)) + nonce + self._ciphers[0].encrypt(nonce, inner, _ad(label))

    def open(self, sealed: bytes, label: bytes | str = b"") -> Opened:
        """Decrypt with whichever key fits; ``ProtocolError('auth')`` when none does."""
        if len(sealed) < SEAL_OVERHEAD_BYTES or sealed[0] != _VERSION:
            raise ProtocolError("auth", "sealed packet is malformed")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        body = sealed[1 + _NONCE_BYTES :]
        ad = _ad(label)
        from cryptography.exceptions import InvalidTag

        for cipher in self._ciphers:
            try:
                inner = cipher.decrypt(nonce, body, ad)
            except InvalidTag:
                continue
            (sent_at_ms,) = _SENT_AT.unpack_from(inner)
            return Opened(inner[_SENT_AT.size :], sent_at_ms, nonce)
        raise ProtocolError("auth", "no key opens the packet")


class Opened(NamedTuple):
    """What ``Keyring.open`` found inside a sealed packet."""

    body: bytes
    sent_at_ms: int
    nonce: bytes


class ReplayGuard:
    """Refuses sealed packets outside the window, or seen before within it.

    Bounded: at most ``max_entries`` nonces; each is forgotten once its packet is
    older than the window (it would be refused as ``stale`` anyway), or, when the
    table is full, oldest first, raising a floor below which nothing is accepted.
    """

    __slots__ = ("_floor_ms", "_heap", "_max_entries", "_seen", "_window_ms")

    def __init__(
        self, window_ms: int = REPLAY_WINDOW_MS, max_entries: int = REPLAY_MAX_ENTRIES
    ) -> None:
        self._window_ms = window_ms
        self._max_entries = max_entries
        self._seen: set[bytes] = set()
        self._heap: list[tuple[int, bytes]] = []
        self._floor_ms = -1

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, opened: Opened, now_wall_ms: int) -> None:
        """Remember the packet; ``ProtocolError`` ``stale`` or ``replay`` when refused."""
        sent_at_ms = opened.sent_at_ms
        if abs(now_wall_ms - sent_at_ms) > self._window_ms:
            raise ProtocolError("stale", "sealed packet sent outside the replay window")
        if opened.nonce in self._seen or sent_at_ms <= self._floor_ms:
            raise ProtocolError("replay", "sealed packet seen before")
        heap = self._heap
        horizon_ms = now_wall_ms - self._window_ms
        while heap and (heap[0][0] < horizon_ms or len(heap) >= self._max_entries):
            old_ms, old_nonce = heapq.heappop(heap)
            self._seen.discard(old_nonce)
            if old_ms >= horizon_ms:
                self._floor_ms = max(self._floor_ms, old_ms)
        heapq.heappush(heap, (sent_at_ms, opened.nonce))
        self._seen.add(opened.nonce)


def _ad(label: bytes | str) -> bytes:
    return label.encode("utf-8") if isinstance(label, str) else label
