"""A tiny HTTP responder for the peer runners: any GET answers the members snapshot.

Kept dependency-free (asyncio streams) so the runners measure the peer library, not a web
framework. One request per connection, bounded header read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

Snapshot = Callable[[], dict[str, Any]]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def read_seeds(path: str) -> list[str]:
    seeds = []
    with open(path) as fh:
        for raw in fh:
            line = raw.split("#", 1)[0].strip()
            if line:
                seeds.append(line)
    return seeds


async def serve_snapshot(bind: str, snapshot: Snapshot) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = json.dumps(snapshot()).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    host, port = split_hostport(bind)
    return await asyncio.start_server(handle, host, port)
