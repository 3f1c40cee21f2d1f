"""The HTTP server lifecycle every daemon shares (``node run``, ``gossip``, ``serve-web``).

``HttpServer`` serves ``/healthz`` and ``/metrics`` itself; callers add their routes
with ``add_routes`` before ``start()``. It owns the aiohttp runner and the ``Host``
check every route sits behind (``relaymesh.web.origin``), and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from relaymesh.ops.metrics import CONTENT_TYPE_LATEST, Metrics
from relaymesh.web.origin import host_guard

__all__ = ["HttpServer", "parse_hostport"]


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port`` / ``:port`` / ``[v6]:port`` to a tuple; ValueError with a clear text."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    port_n = int(port)
    if not 0 <= port_n <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port_n


class HttpServer:
    def __init__(
        self,
        bind: str,
        metrics: Metrics,
        health: Callable[[], dict[str, Any]],
        *,
        before_metrics: Callable[[], Any] | None = None,
        allowed_hosts: Callable[[], Sequence[str]] = lambda: (),
    ) -> None:
        """``health()`` returns a JSON-able dict with a boolean ``ok``; 200 when ok, else 503.
        ``before_metrics`` (sync or async) refreshes gauges before each scrape; it is
        called on every unauthenticated scrape, so it must be cheap (cache store figures).
        ``allowed_hosts()`` gives ``[web] allowed_hosts`` (called per request)."""
        self.host, self.port = parse_hostport(bind)
        self._metrics = metrics
        self._health = health
        self._before_metrics = before_metrics
        self.app = web.Application(middlewares=[host_guard(allowed_hosts)])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics_handler)
        self._runner: web.AppRunner | None = None

    def add_routes(self, routes: Sequence[web.AbstractRouteDef]) -> None:
        self.app.add_routes(routes)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            # Asked for an ephemeral port: report the one the kernel gave.
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        doc = self._health()
        return web.json_response(doc, status=200 if doc.get("ok") else 503)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        if self._before_metrics is not None:
            maybe = self._before_metrics()
            if hasattr(maybe, "__await__"):
                await maybe
        body = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
