"""Which ``Host`` and ``Origin`` headers the HTTP server accepts (INTERFACE.md, HTTP).

DNS rebinding: a page on ``evil.example`` re-points its own name at 127.0.0.1 and then
talks to a local node *as the same origin*, so neither the browser's same-origin rule
nor a loopback-only check stops it. What gives it away is the ``Host`` header, which
still says ``evil.example``. So a request is served only when its ``Host`` names the
address the connection came in on, a loopback name, or one of ``[web] allowed_hosts``
(421 otherwise). A write whose ``Origin`` is present and is not the console's own
origin (the scheme-less ``host:port`` of the ``Host`` it was sent to) is refused with
403: that is a cross-site form or script, never the console.

Pure functions plus one aiohttp middleware; no settings model (callers pass values).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from relaymesh.exposure import is_loopback_host

__all__ = ["host_allowed", "host_guard", "origin_allowed", "split_host_header"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host_header(value: str) -> tuple[str, int | None]:
    """``example.com:8701`` -> ``("example.com", 8701)``; ``[::1]`` -> ``("::1", None)``.
    The name is lower-cased without a trailing dot; a malformed port gives ``-1``."""
    text = value.strip().lower()
    if text.startswith("["):
        name, closed, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not closed or (rest and not rest.startswith(":")):
            return name, -1
    elif text.count(":") == 1:
        name, _, port_text = text.partition(":")
    else:
        name, port_text = text, ""  # bare IPv6 without brackets, or a plain name
    if port_text == "":
        port: int | None = None
    elif port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        port = -1
    return name.rstrip("."), port


def host_allowed(
    host_header: str | None, *, local_addresses: Iterable[str], allowed_hosts: Sequence[str]
) -> bool:
    """Is ``host_header`` one this server answers to? No header at all is accepted: every
    browser sends one, so its absence is a script, and a script is not being rebound."""
    if host_header is None:
        return True
    name, port = split_host_header(host_header)
    if port == -1 or not name:
        return False
    if is_loopback_host(name):
        return True
    if any(name == addr.strip("[]").lower() for addr in local_addresses if addr):
        return True
    full = host_header.strip().lower()
    return any(entry.strip().lower().rstrip(".") in (name, full) for entry in allowed_hosts)


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """A write's ``Origin`` is acceptable when absent or naming the host it was sent to."""
    if origin is None:
        return True
    if host_header is None:
        return False
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return False  # "null" (sandboxed frames, file:) and anything odd
    origin_port = origin_port if origin_port is not None else _DEFAULT_PORTS[parts.scheme]
    name, port = split_host_header(host_header)
    if name != parts.hostname.rstrip("."):
        return False
    # A Host without a port means the default port of whatever scheme the browser used.
    return port is None or port == origin_port


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_guard(
    allowed_hosts: Callable[[], Sequence[str]],
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: 421 for a ``Host`` this server does not answer to. ``allowed_hosts``
    is called per request, so a settings reload applies at once."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        local: list[str] = []
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and sockname:
            local.append(str(sockname[0]))
        if not host_allowed(
            request.headers.get("Host"), local_addresses=local, allowed_hosts=allowed_hosts()
        ):
            return _refuse(
                421,
                "this server does not answer to that Host header; "
                "add it to [web] allowed_hosts if it is really this node's name",
            )
        return await handler(request)

    return guard
