"""The membership core's only link to real sockets: UDP datagrams and TCP push/pull.

UDP carries probes and gossip: ``UdpEndpoint`` hands every datagram to a callback
and sends without ever blocking or raising (a full socket buffer or an ICMP
"unreachable" from a dead peer is normal life for a failure detector).

TCP carries the anti-entropy push/pull: one request frame, one reply frame, then
the connection closes. A frame is a 4-byte big-endian length and that many bytes.
The server must survive any peer: a frame over ``max_frame_bytes`` is refused
before it is read, its first byte must arrive within ``first_byte_timeout_s`` and
the whole request within ``read_timeout_s`` (so a peer that connects and waits, or
dribbles one byte a second, is cut off), at most ``max_connections`` are served at
once, and every refusal is reported to ``on_drop(reason)`` for the drop counters.
With a ``SourceLimiter``, a source host over its rate is refused before anything
is read (``rate_limit``), on UDP and on TCP accepts alike. Bytes handed to callbacks belong to the
callee; this module never looks inside them.

Raises, where callers can see it:

    RelayMeshError
     ├── ProtocolError     the peer's frame was too large or cut short (reason set)
     └── TransportError    the peer could not be reached or did not answer in time
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from typing import cast

from relaymesh.exceptions import ProtocolError, RelayMeshError
from relaymesh.logging import get_logger
from relaymesh.membership.ratelimit import SourceLimiter

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Address",
    "PushPullServer",
    "TransportError",
    "UdpEndpoint",
    "open_udp",
    "pushpull_request",
    "read_frame",
    "write_frame",
]

Address = tuple[str, int]

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
"""A full snapshot of tens of thousands of members (~100 bytes each) fits; anything
larger is an attack or a bug. With ``max_connections`` it bounds push/pull memory."""

_FRAME_HEADER = struct.Struct(">I")

log = get_logger(__name__)


class TransportError(RelayMeshError):
    """The peer could not be reached or did not answer in time."""


# -- UDP


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket. ``on_packet(data, src)`` runs on the event loop per datagram."""

    def __init__(
        self,
        on_packet: Callable[[bytes, Address], None],
        limiter: SourceLimiter | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self._on_packet = on_packet
        self._limiter = limiter
        self._on_drop = on_drop
        self._transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: 3.11's selector datagram transport does not
        # inherit from DatagramTransport, though it implements it.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = addr[0], addr[1]
        if not isinstance(host, str) or not isinstance(port, int):
            return
        if self._limiter is not None and not self._limiter.allow(host):
            if self._on_drop is not None:
                self._on_drop("rate_limit")
            return
        try:
            self._on_packet(data, (host, port))
        except Exception:
            # The core counts bad packets itself; reaching here is our bug, not the
            # peer's, and must still not take the receive path down.
            log.exception("udp_handler_failed", src=f"{host}:{port}", size=len(data))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable after probing a dead peer: expected, not news.
        self.send_errors += 1
        log.debug("udp_error", error=str(exc))

    def send(self, address: Address, data: bytes) -> None:
        """Queue one datagram; never blocks, never raises."""
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._transport.sendto(data, address)
        except (OSError, ValueError) as exc:
            self.send_errors += 1
            log.debug("udp_send_failed", dst=f"{address[0]}:{address[1]}", error=str(exc))

    @property
    def local_address(self) -> Address:
        assert self._transport is not None, "not bound"
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_udp(
    host: str,
    port: int,
    on_packet: Callable[[bytes, Address], None],
    limiter: SourceLimiter | None = None,
    on_drop: Callable[[str], None] | None = None,
) -> UdpEndpoint:
    """Bind a UDP socket; raises ``OSError`` when the address is taken."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(on_packet, limiter, on_drop), local_addr=(host, port)
    )
    return protocol


# -- TCP frames


async def read_frame(
    reader: asyncio.StreamReader, max_frame_bytes: int, first_byte_timeout_s: float | None = None
) -> bytes | None:
    """One length-prefixed frame; None when the peer closed before sending a byte.

    ``ProtocolError`` when the frame is too large or cut short; ``TimeoutError`` when
    no byte came within ``first_byte_timeout_s``.
    """
    try:
        async with asyncio.timeout(first_byte_timeout_s):
            first = await reader.read(1)
        if not first:
            return None
        header = first + await reader.readexactly(_FRAME_HEADER.size - 1)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("decode", "push/pull frame header cut short") from exc
    (length,) = _FRAME_HEADER.unpack(header)
    if length > max_frame_bytes:
        # Refuse before reading: the length is the peer's claim, not memory we owe it.
        raise ProtocolError("too_large", f"push/pull frame of {length} bytes")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("decode", "push/pull frame cut short") from exc


def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(_FRAME_HEADER.pack(len(payload)))
    writer.write(payload)


async def pushpull_request(
    address: Address,
    payload: bytes,
    *,
    timeout_s: float,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> bytes:
    """Send one frame to ``address`` and return its reply frame, all within ``timeout_s``.

    Raises ``TransportError`` (refused, reset, timed out) or ``ProtocolError``
    (reply too large or cut short).
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(address[0], address[1])
            write_frame(writer, payload)
            await writer.drain()
            reply = await read_frame(reader, max_frame_bytes)
    except TimeoutError as exc:
        raise TransportError(f"push/pull with {address[0]}:{address[1]} timed out") from exc
    except OSError as exc:
        raise TransportError(f"push/pull with {address[0]}:{address[1]} failed: {exc}") from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    if reply is None:
        # The peer refused our request (its drop counters say why), or is shutting down.
        raise TransportError(f"{address[0]}:{address[1]} closed without a push/pull reply")
    return reply


class PushPullServer:
    """Serve push/pull: ``handler(request, peer)`` returns the reply bytes.

    ``handler`` runs on the event loop and must not block. It returns None to refuse
    the request (it has counted why); a ``ProtocolError`` from it is counted here by
    its reason; anything else is logged as our bug. A refused request gets no reply:
    the connection is closed.
    """

    def __init__(
        self,
        handler: Callable[[bytes, Address], bytes | None],
        *,
        on_drop: Callable[[str], None],
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        read_timeout_s: float = 5.0,
        first_byte_timeout_s: float = 1.0,
        max_connections: int = 16,
        limiter: SourceLimiter | None = None,
    ) -> None:
        self._handler = handler
        self._on_drop = on_drop
        self.max_frame_bytes = max_frame_bytes
        self.read_timeout_s = read_timeout_s
        self.first_byte_timeout_s = first_byte_timeout_s
        self.max_connections = max_connections
        self._limiter = limiter
        self._server: asyncio.Server | None = None
        self._active: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (the kernel's choice when ``port`` is 0)."""
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=64 * 1024
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._active):
                task.cancel()
            if self._active:
                await asyncio.gather(*self._active, return_exceptions=True)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            peer = writer.get_extra_info("peername") or ("?", 0)
            if self._limiter is not None and not self._limiter.allow(str(peer[0])):
                self._on_drop("rate_limit")
                return
            if len(self._active) >= self.max_connections:
                # Bounded work per peer set: refuse rather than queue without limit.
                self._on_drop("overload")
                return
            self._active.add(task)
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    request = await read_frame(
                        reader, self.max_frame_bytes, self.first_byte_timeout_s
                    )
                if request is None:
                    return  # connected and closed (a port check): nothing to count
            except TimeoutError:
                self._on_drop("timeout")
                return
            except ProtocolError as exc:
                self._on_drop(exc.reason)
                return
            try:
                reply = self._handler(request, (str(peer[0]), int(peer[1])))
            except ProtocolError as exc:
                self._on_drop(exc.reason)
                return
            except Exception:
                log.exception("pushpull_handler_failed", peer=f"{peer[0]}:{peer[1]}")
                return
            if reply is None:
                return
            write_frame(writer, reply)
            async with asyncio.timeout(self.read_timeout_s):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("pushpull_serve_failed", error=str(exc))
        finally:
            self._active.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
