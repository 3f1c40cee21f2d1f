"""The wire format: msgpack messages, compound packets, framing, strict validation.

Owns every byte layout a peer can send us, and the checks that stand between those
bytes and the protocol state. Nothing here trusts its input: every field is
type-checked (``type(x) is int`` — a msgpack bool is not an incarnation), every
string and list is capped, and any failure raises ``ProtocolError(reason)`` with
the drop counter's label, never anything else.

Datagram layout::

    kind (1 byte: 1 plain, 2 sealed) | label length (1 byte) | label | body

The label travels in clear so a packet from another cluster is dropped as
``label`` before any decryption; when sealed, it is also authenticated as the
AES-GCM associated data (``keyring.py``). The body (after opening) is a msgpack
array of messages; each message is a msgpack array whose first element is its
``MessageType``. A packet is one message or many (a compound): the same layout.
Updates are encoded once and their bytes reused, so a compound is built by
concatenating cached encodings behind an array header.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from relaymesh.exceptions import ProtocolError
from relaymesh.membership.keyring import SEAL_OVERHEAD_BYTES, Keyring, ReplayGuard
from relaymesh.membership.state import Address, Member
from relaymesh.model import MemberStatus

__all__ = [
    "MAX_HOST_LEN",
    "MAX_INCARNATION",
    "MAX_LABEL_BYTES",
    "MAX_MESSAGES_PER_PACKET",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "MAX_METADATA_KEY_LEN",
    "MAX_METADATA_VALUE_LEN",
    "MAX_NAME_LEN",
    "MAX_SEQ",
    "MAX_STATE_MEMBERS",
    "Ack",
    "Alive",
    "Dead",
    "DropSink",
    "Left",
    "Message",
    "MessageType",
    "Nack",
    "Ping",
    "PingReq",
    "Suspect",
    "array_header",
    "decode_packet",
    "decode_state",
    "encode_message",
    "encode_state",
    "frame",
    "frame_overhead",
    "pack_compound",
    "unframe",
    "update_key",
    "valid_name",
]

MAX_NAME_LEN = 128
MAX_HOST_LEN = 255
MAX_LABEL_BYTES = 255
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_LEN = 64
MAX_METADATA_VALUE_LEN = 512
MAX_METADATA_BYTES = 1024
"""Keys and values of one member's metadata together, in characters: with
``max_members`` it bounds what a peer can make us hold (a node's own is ~40)."""
MAX_MESSAGES_PER_PACKET = 256
MAX_STATE_MEMBERS = 65_536
MAX_SEQ = 2**32 - 1
MAX_INCARNATION = 2**63 - 1
"""What the wire carries; what a node believes is ``incarnation.admissible``."""
_MAX_STR_BYTES = 2048

_FRAME_PLAIN = 1
_FRAME_SEALED = 2


class MessageType(IntEnum):
    """Message type tags. APPEND-ONLY: never renumber or reuse a value."""

    PING = 0
    ACK = 1
    PING_REQ = 2
    NACK = 3
    ALIVE = 4
    SUSPECT = 5
    DEAD = 6
    LEFT = 7
    STATE = 8


_STATUS_CODES: dict[MemberStatus, int] = {
    MemberStatus.ALIVE: 0,
    MemberStatus.SUSPECT: 1,
    MemberStatus.DEAD: 2,
    MemberStatus.LEFT: 3,
}
_CODE_STATUS = {code: status for status, code in _STATUS_CODES.items()}


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you there? ``target`` is the name we expect; "" for a join ping to a seed."""

    seq: int
    target: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` at ``address`` for me and ack ``seq`` (nack it if ``nack``)."""

    seq: int
    target: str
    address: Address
    nack: bool


@dataclass(frozen=True, slots=True)
class Nack:
    """The intermediary of ``seq`` got no ack from the target in time (Lifeguard)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Alive:
    name: str
    incarnation: int
    address: Address
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class Suspect:
    name: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Dead:
    name: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Left:
    name: str
    incarnation: int


Message = Ping | Ack | PingReq | Nack | Alive | Suspect | Dead | Left

DropSink = Callable[[str], None]
"""Told the reason of every message (or snapshot entry) dropped alone."""


# --- encoding ---------------------------------------------------------------


_PACKER = msgpack.Packer()
"""Reused: ``packb`` builds a Packer (and its buffer) per call. ``pack`` runs in C
holding the GIL for the plain types packed here, and resets the buffer after every
call (or error), so sharing it is safe."""
_TAG_PING = int(MessageType.PING)
_TAG_ACK = int(MessageType.ACK)
_TAG_PING_REQ = int(MessageType.PING_REQ)
_TAG_NACK = int(MessageType.NACK)
_TAG_ALIVE = int(MessageType.ALIVE)
_TAG_SUSPECT = int(MessageType.SUSPECT)
_TAG_DEAD = int(MessageType.DEAD)
_TAG_LEFT = int(MessageType.LEFT)


def encode_message(msg: Message) -> bytes:
    """The msgpack bytes of one message."""
    # Most frequent first (updates and probes); plain int tags pack the same bytes as
    # the enum and skip its attribute lookup.
    fields: list[Any]
    if isinstance(msg, Alive):
        fields = [_TAG_ALIVE, msg.name, msg.incarnation, *msg.address, msg.metadata]
    elif isinstance(msg, Suspect):
        fields = [_TAG_SUSPECT, msg.name, msg.incarnation, msg.sender]
    elif isinstance(msg, Ping):
        fields = [_TAG_PING, msg.seq, msg.target]
    elif isinstance(msg, Ack):
        fields = [_TAG_ACK, msg.seq]
    elif isinstance(msg, PingReq):
        fields = [_TAG_PING_REQ, msg.seq, msg.target, *msg.address, msg.nack]
    elif isinstance(msg, Nack):
        fields = [_TAG_NACK, msg.seq]
    elif isinstance(msg, Dead):
        fields = [_TAG_DEAD, msg.name, msg.incarnation, msg.sender]
    else:
        fields = [_TAG_LEFT, msg.name, msg.incarnation]
    packed: bytes = _PACKER.pack(fields)
    return packed


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def pack_compound(parts: Sequence[bytes]) -> bytes:
    """A packet body from already-encoded messages."""
    return array_header(len(parts)) + b"".join(parts)


def frame_overhead(label: bytes, keyring: Keyring | None) -> int:
    """Bytes ``frame`` adds around a body."""
    return 2 + len(label) + (SEAL_OVERHEAD_BYTES if keyring is not None else 0)


def frame(body: bytes, label: bytes, keyring: Keyring | None, sent_at_ms: int = 0) -> bytes:
    """Wrap a body for the wire: label in clear, body sealed when there is a keyring
    (with ``sent_at_ms``, our wall clock, for the receiver's replay window)."""
    if keyring is None:
        return bytes((_FRAME_PLAIN, len(label))) + label + body
    return bytes((_FRAME_SEALED, len(label))) + label + keyring.seal(body, label, sent_at_ms)


def unframe(
    data: bytes,
    label: bytes,
    keyring: Keyring | None,
    replay: ReplayGuard | None = None,
    now_wall_ms: int = 0,
) -> bytes:
    """The body of a datagram; ``ProtocolError`` (decode, label, auth, stale, replay)
    when refused.

    With a keyring, plain packets are refused (``auth``): an attacker must not be
    able to bypass encryption by not using it. Without one, sealed packets cannot
    be read (``auth``). With ``replay``, a sealed packet sent outside its window or
    seen before is refused.
    """
    if len(data) < 2:
        raise ProtocolError("decode", "packet too short")
    kind = data[0]
    if kind not in (_FRAME_PLAIN, _FRAME_SEALED):
        raise ProtocolError("decode", "unknown frame kind")
    end = 2 + data[1]
    if len(data) < end:
        raise ProtocolError("decode", "truncated label")
    if data[2:end] != label:
        raise ProtocolError("label", "cluster label does not match")
    body = data[end:]
    if kind == _FRAME_SEALED:
        if keyring is None:
            raise ProtocolError("auth", "packet is encrypted and no keyring is set")
        opened = keyring.open(body, label)
        if replay is not None:
            replay.check(opened, now_wall_ms)
        return opened.body
    if keyring is not None:
        raise ProtocolError("auth", "unencrypted packet refused: a keyring is set")
    return body


def encode_state(members: Iterable[Member], *, join: bool) -> bytes:
    """A full membership snapshot (anti-entropy body; any size, goes over TCP)."""
    entries = [
        [
            m.name,
            m.incarnation,
            _STATUS_CODES[m.status],
            m.address[0],
            m.address[1],
            m.metadata,
        ]
        for m in members
    ]
    packed: bytes = msgpack.packb([MessageType.STATE, join, entries])
    return packed


# --- decoding ---------------------------------------------------------------


def _unpack(body: bytes, max_array_len: int) -> Any:
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=_MAX_STR_BYTES,
            max_bin_len=0,
            max_ext_len=0,
            max_array_len=max_array_len,
            max_map_len=MAX_METADATA_ENTRIES,
        )
    except Exception as exc:  # msgpack raises many kinds; all mean the same here
        raise ProtocolError("decode", f"not msgpack: {type(exc).__name__}") from exc


def update_key(tag: int, name: str, incarnation: int, sender: str = "") -> tuple[object, ...]:
    """The dedup identity of an update: what makes a second copy of it news-free."""
    if tag == MessageType.SUSPECT:
        return (tag, name, incarnation, sender)
    return (tag, name, incarnation)


_UPDATE_TAGS = frozenset((_TAG_ALIVE, _TAG_DEAD, _TAG_LEFT))


def decode_packet(
    body: bytes, known: Container[object] | None = None, on_drop: DropSink | None = None
) -> list[Message]:
    """The messages of a packet body.

    ``ProtocolError`` when the body is not a list of messages. An invalid message is
    dropped alone and its reason told to ``on_drop``, so one bad update (a name a
    newer peer allows, say) does not take the pings and acks beside it down; without
    ``on_drop`` it raises instead (strict: tools and tests).

    Updates whose ``update_key`` is in ``known`` (already handled) are skipped before
    the costly field checks: in a large cluster most piggybacked updates are repeats.
    Messages of a type this version does not know are skipped too (the enum only
    grows), so older nodes keep working next to newer ones.
    """
    obj = _unpack(body, MAX_MESSAGES_PER_PACKET)
    if type(obj) is not list:
        raise ProtocolError("schema", "packet is not a list of messages")
    messages: list[Message] = []
    for raw in obj:
        if known is not None and type(raw) is list and len(raw) >= 3 and type(raw[0]) is int:
            tag = raw[0]
            key: tuple[object, ...] | None = None
            # Plain ints, not the enum: this runs for every piggybacked update of a packet.
            if tag in _UPDATE_TAGS:
                key = (tag, raw[1], raw[2])
            elif tag == _TAG_SUSPECT and len(raw) >= 4:
                key = (tag, raw[1], raw[2], raw[3])
            if key is not None:
                try:
                    if key in known:
                        continue
                except TypeError:
                    pass  # unhashable field: let the full check reject it
        try:
            msg = _parse_message(raw)
        except ProtocolError as exc:
            if on_drop is None:
                raise
            on_drop(exc.reason)
            continue
        if msg is not None:
            messages.append(msg)
    return messages


def decode_state(
    body: bytes,
    held: Mapping[str, Member] | None = None,
    news_free: Container[MemberStatus] = (),
    on_drop: DropSink | None = None,
) -> tuple[bool, list[Member]]:
    """(join flag, members) of a snapshot; ``status_changed_at_ms`` is left 0.

    The fields are checked by the same rules as a datagram's (``valid_name``,
    ``_metadata``, ...). A bad header refuses the snapshot (``ProtocolError``); a bad
    entry is dropped alone and its reason told to ``on_drop`` (without it, the
    snapshot is refused whole).

    With ``held`` (the receiver's table), an entry equal in every field to the record
    held under its name, in a status the caller lists in ``news_free`` (a repeat it
    cannot learn from), is left out: in a converged cluster that is almost every entry,
    and building records nobody uses is most of a push/pull's cost. Every entry is
    still validated first.
    """
    obj = _unpack(body, MAX_STATE_MEMBERS)
    if type(obj) is not list or len(obj) < 3 or obj[0] != MessageType.STATE:
        raise ProtocolError("schema", "not a state snapshot")
    join, entries = obj[1], obj[2]
    if type(join) is not bool or type(entries) is not list:
        raise ProtocolError("schema", "bad snapshot header")
    members: list[Member] = []
    seen: set[str] = set()
    code_status = _CODE_STATUS
    for entry in entries:
        try:
            if type(entry) is not list or len(entry) < 6:
                raise ProtocolError("schema", "bad snapshot entry")
            name, incarnation, code, host, port, metadata = entry[:6]
            # The name by the one rule (valid_name) every path uses. The checks of
            # _host, ... are inlined (a snapshot has one entry per member); each helper
            # is called only to raise its error.
            _name(name)
            if name in seen:
                raise ProtocolError("schema", "member listed twice")
            if type(code) is not int or code not in code_status:
                raise ProtocolError("schema", "bad status")
            if type(host) is not str or not 0 < len(host) <= MAX_HOST_LEN:
                _host(host)
            if type(port) is not int or not 0 < port <= 65535:
                _port(port)
            if type(incarnation) is not int or not 0 <= incarnation <= MAX_INCARNATION:
                _incarnation(incarnation)
            if type(metadata) is not dict or metadata:
                metadata = _metadata(metadata)
        except ProtocolError as exc:
            if on_drop is None:
                raise
            on_drop(exc.reason)
            continue
        seen.add(name)
        status = code_status[code]
        if held is not None:
            # Types are checked above, so == is exact here (no 1 == True == 1.0).
            cur = held.get(name)
            if (
                cur is not None
                and cur.status is status
                and cur.incarnation == incarnation
                and status in news_free
                and cur.address[0] == host
                and cur.address[1] == port
                and cur.metadata == metadata
            ):
                continue
        members.append(Member(name, (host, port), status, incarnation, metadata, 0))
    return join, members


def _parse_message(raw: Any) -> Message | None:
    if type(raw) is not list or not raw:
        raise ProtocolError("schema", "message is not a list")
    tag = raw[0]
    if type(tag) is not int:
        raise ProtocolError("schema", "message type is not an int")
    n = len(raw)
    # Updates first: most messages in a busy cluster are piggybacked updates.
    if tag == _TAG_ALIVE and n >= 6:
        return Alive(
            _name(raw[1]), _incarnation(raw[2]), (_host(raw[3]), _port(raw[4])), _metadata(raw[5])
        )
    if tag == _TAG_SUSPECT and n >= 4:
        return Suspect(_name(raw[1]), _incarnation(raw[2]), _name(raw[3]))
    if tag == _TAG_PING and n >= 3:
        target = raw[2]
        if type(target) is not str or len(target) > MAX_NAME_LEN:
            raise ProtocolError("schema", "bad ping target")
        return Ping(_seq(raw[1]), target)
    if tag == _TAG_ACK and n >= 2:
        return Ack(_seq(raw[1]))
    if tag == _TAG_NACK and n >= 2:
        return Nack(_seq(raw[1]))
    if tag == _TAG_PING_REQ and n >= 6:
        if type(raw[5]) is not bool:
            raise ProtocolError("schema", "bad nack flag")
        return PingReq(_seq(raw[1]), _name(raw[2]), (_host(raw[3]), _port(raw[4])), raw[5])
    if tag == _TAG_DEAD and n >= 4:
        return Dead(_name(raw[1]), _incarnation(raw[2]), _name(raw[3]))
    if tag == _TAG_LEFT and n >= 3:
        return Left(_name(raw[1]), _incarnation(raw[2]))
    if tag in _KNOWN_TAGS or tag < 0:
        raise ProtocolError("schema", f"message {tag} has too few fields")
    return None


_KNOWN_TAGS = frozenset(int(t) for t in MessageType)


def _seq(x: Any) -> int:
    if type(x) is not int or not 0 <= x <= MAX_SEQ:
        raise ProtocolError("schema", "bad sequence number")
    return x


def _incarnation(x: Any) -> int:
    if type(x) is not int or not 0 <= x <= MAX_INCARNATION:
        raise ProtocolError("schema", "bad incarnation")
    return x


def valid_name(x: Any) -> bool:
    """A member name: 1..MAX_NAME_LEN printable characters (names end up in logs, the
    store's mesh_nodes and the console)."""
    return type(x) is str and 0 < len(x) <= MAX_NAME_LEN and x.isprintable()


def _name(x: Any) -> str:
    if not valid_name(x):
        raise ProtocolError("schema", "bad member name")
    return x  # type: ignore[no-any-return]


def _host(x: Any) -> str:
    if type(x) is not str or not 0 < len(x) <= MAX_HOST_LEN:
        raise ProtocolError("schema", "bad host")
    return x


def _port(x: Any) -> int:
    if type(x) is not int or not 0 < x <= 65535:
        raise ProtocolError("schema", "bad port")
    return x


def _metadata(x: Any) -> dict[str, str]:
    if type(x) is dict and not x:
        return x  # nearly every member has none
    if type(x) is not dict or len(x) > MAX_METADATA_ENTRIES:
        raise ProtocolError("schema", "bad metadata")
    total = 0
    for key, value in x.items():
        if (
            type(key) is not str
            or type(value) is not str
            or len(key) > MAX_METADATA_KEY_LEN
            or len(value) > MAX_METADATA_VALUE_LEN
        ):
            raise ProtocolError("schema", "bad metadata entry")
        total += len(key) + len(value)
    if total > MAX_METADATA_BYTES:
        raise ProtocolError("metadata", f"metadata over {MAX_METADATA_BYTES} characters")
    return x
