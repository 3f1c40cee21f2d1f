"""A TCP proxy in front of a real PostgreSQL server, for faults the server cannot make.

* ``cut_after_commit()``: the next ``COMMIT`` a client sends is passed to the server and
  then both sides are closed before the answer comes back: the commit lands, the client
  only sees its connection die (a commit whose outcome is unknown).
* ``reset_clients()``: every client connection is reset now (RST), mid-query or not,
  like a server host that crashed.
* ``refuse = True``: new connections are reset at once (a server that is down), until
  set back to False.
* ``hang()``: from now on nothing is forwarded either way and nothing is closed, like a
  host that vanished behind a firewall (blackholed): calls wait until their deadline.

Loopback only; ``close()`` stops the listener and every connection.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["PgProxy", "silent_listener"]

# asyncpg ends a transaction with a simple Query message: b"Q", int32 length, "COMMIT;\0".
_COMMIT = b"COMMIT;\x00"


class PgProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._cut_commit = False
        self._hung = False
        self.refuse = False
        self._closing = asyncio.Event()
        self.commits_cut = 0
        self.port = 0

    async def start(self) -> PgProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def cut_after_commit(self) -> None:
        self._cut_commit = True

    def reset_clients(self) -> None:
        for writer in list(self._clients):
            writer.transport.abort()

    def hang(self) -> None:
        self._hung = True

    async def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            c_writer.transport.abort()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            c_writer.close()
            return
        self._writers |= {c_writer, s_writer}
        self._clients.add(c_writer)

        def cut() -> None:
            # The client sees a reset before any answer can reach it; the server gets
            # the COMMIT, then an orderly end of stream (a reset could make it drop the
            # unread COMMIT), so it commits before it notices the client is gone.
            c_writer.transport.abort()
            s_writer.close()

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_side: bool
        ) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    if self._hung:  # swallow it and everything after, until close()
                        await self._closing.wait()
                        return
                    writer.write(data)
                    await writer.drain()
                    if client_side and self._cut_commit and _COMMIT in data:
                        self._cut_commit = False
                        self.commits_cut += 1
                        cut()
                        return
            with contextlib.suppress(OSError):
                writer.close()

        try:
            await asyncio.gather(pump(c_reader, s_writer, True), pump(s_reader, c_writer, False))
        finally:
            self._writers -= {c_writer, s_writer}
            self._clients.discard(c_writer)
            c_writer.transport.abort()
            s_writer.close()


@contextlib.asynccontextmanager
async def silent_listener():  # type: ignore[no-untyped-def]
    """A TCP port that accepts connections and never says a word: a hung server."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()
        await server.wait_closed()
