"""``relaymesh gossip`` (membership only: no worker, no store) and ``relaymesh keygen``.

Options come from the command line, then ``RELAYMESH_NODE__*`` variables, then the
settings file's ``[node]`` section (``CliContext.settings(node=...)``). The daemon
lifecycle follows uvicorn: start -> serve until SIGTERM/SIGINT -> bounded leave;
SIGHUP re-reads the settings file and logs which fields changed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import uvloop

from relaymesh.cli.common import CliContext, fail, pass_cli
from relaymesh.exceptions import ConfigError, RelayMeshError
from relaymesh.exposure import check_gossip_exposure
from relaymesh.logging import configure_logging, get_logger
from relaymesh.ops.metrics import Metrics
from relaymesh.ops.systemd import SystemdNotifier, capture_signals, daemon_signals
from relaymesh.settings import RELOADABLE_SECTIONS, Settings, diff_fields

if TYPE_CHECKING:
    from aiohttp import web

    from relaymesh.membership.driver import MembershipService
    from relaymesh.web.server import HttpServer

__all__ = ["build_service", "gossip", "keygen", "register"]

log = get_logger(__name__)

LEAVE_TIMEOUT_S = 3.0
"""SIGTERM to exit: LEAVE broadcast plus socket close; the unit's TimeoutStopSec is above."""


def register(main: click.Group) -> None:
    main.add_command(gossip)
    main.add_command(keygen)


@click.command("gossip")
@click.option("--seeds-file", default=None, help="One HOST:PORT per line [node.seeds_file].")
@click.option("--name", default=None, help="Node name, stable across restarts [node.name].")
@click.option("--bind", default=None, help="UDP+TCP address [node.bind, 127.0.0.1:7946].")
@click.option("--advertise", default=None, help="Address peers use [node.advertise].")
@click.option("--http", default=None, help="Serve /metrics, /healthz, /api/members.")
@click.option("--state-dir", default=None, help="Where the last incarnation is kept.")
@pass_cli
def gossip(cli: CliContext, /, **options: str | None) -> None:
    """Run membership only (gossip + anti-entropy), without a worker or a store."""
    # From here to the end of the process SIGTERM never kills us: before the loop's
    # handlers exist it is held and acted on once they do, after the leave it is ignored.
    with daemon_signals():
        # Option names are the [node] keys: a flag wins over the variable and the file.
        overrides: dict[str, Any] = dict(options)
        try:
            settings = cli.settings(node=dict(overrides))
            metrics = Metrics()
            service = build_service(settings, metrics)
        except RelayMeshError as exc:
            fail(str(exc))
            return
        configure_logging(cli.log_level, node=service.name)
        _run_async(_serve(cli, overrides, settings, service, metrics))


@click.command("keygen")
def keygen() -> None:
    """Print a new base64 gossip key (for [gossip] keys)."""
    from relaymesh.membership.keyring import generate_key

    click.echo(generate_key())


def build_service(settings: Settings, metrics: Metrics) -> MembershipService:
    """A ``MembershipService`` from settings (``ConfigError`` when they do not add up)."""
    # Imported here so that every other command keeps working when the membership
    # package is broken or half-written.
    from relaymesh.membership.driver import MembershipService, parse_address
    from relaymesh.membership.seeds import load_seeds

    node = settings.node
    check_gossip_exposure(settings)
    _, port = parse_address(node.bind)
    seeds: list[str] = []
    if node.seeds_file:
        seeds = load_seeds(Path(node.seeds_file))
    # An ephemeral port changes every start, so it cannot name the node; the pid at least
    # keeps two such nodes on one host apart.
    name = node.name or f"{socket.gethostname()}-{port if port else os.getpid()}"
    return MembershipService(
        name=name,
        bind=node.bind,
        advertise=node.advertise,
        seeds=seeds,
        settings=settings.gossip,
        metrics=metrics,
        state_dir=Path(node.state_dir) if node.state_dir else None,
    )


async def _serve(
    cli: CliContext,
    overrides: dict[str, Any],
    settings: Settings,
    service: MembershipService,
    metrics: Metrics,
) -> None:
    loop = asyncio.get_running_loop()
    notifier = SystemdNotifier()
    stop_requested = asyncio.Event()
    current = {"settings": settings}

    def request_stop() -> None:
        if not stop_requested.is_set():
            log.info("shutdown_requested", node=service.name)
        stop_requested.set()

    def reload_settings() -> None:
        notifier.reloading()
        try:
            new = cli.settings(node=dict(overrides))
        except RelayMeshError as exc:
            log.error("settings_reload_failed", node=service.name, error=str(exc))
        else:
            changed = diff_fields(current["settings"], new)
            current["settings"] = new
            needs_restart = [f for f in changed if f.split(".")[0] not in RELOADABLE_SECTIONS]
            log.info(
                "settings_reloaded",
                node=service.name,
                changed=changed,
                needs_restart=needs_restart,
            )
        notifier.ready()

    handlers = {
        signal.SIGTERM: request_stop,
        signal.SIGINT: request_stop,
        signal.SIGHUP: reload_settings,
    }

    def report_status(_event: object) -> None:
        # `systemctl status` shows the view as this node sees it.
        counts = service.health()["members"]
        notifier.status(", ".join(f"{n} {status}" for status, n in counts.items()))

    http: HttpServer | None = None
    watchdog: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal http, watchdog
        await service.start()
        if settings.node.http:
            http = await _start_http(
                settings.node.http,
                metrics,
                service,
                allowed_hosts=lambda: current["settings"].web.allowed_hosts,
            )
        notifier.ready(status=f"gossiping as {service.name}")
        if notifier.enabled:
            service.subscribe(report_status)
            # Peers may have joined while HTTP started, before the subscription.
            report_status(None)
        watchdog = asyncio.create_task(notifier.run_watchdog(), name="sd-watchdog")
        log.info(
            "gossip_ready",
            node=service.name,
            address=f"{service.address[0]}:{service.address[1]}",
            http=f"{http.host}:{http.port}" if http is not None else None,
        )

    with capture_signals(loop, handlers):
        try:
            # A SIGTERM held while the process started up has asked to stop already:
            # then there is nothing to join, and so nothing to leave.
            if not stop_requested.is_set():
                await start()
            await stop_requested.wait()
        finally:
            notifier.stopping(status="leaving the mesh")
            if watchdog is not None:
                watchdog.cancel()
            await service.stop(leave=True, timeout_s=LEAVE_TIMEOUT_S)
            if http is not None:
                await http.stop()
            notifier.close()
    log.info("gossip_stopped", node=service.name)


async def _start_http(
    bind: str,
    metrics: Metrics,
    service: MembershipService,
    *,
    allowed_hosts: Callable[[], Sequence[str]],
) -> HttpServer:
    """/healthz, /metrics and GET /api/members (the view, for scripts and benchmarks)."""
    # Imported here: aiohttp costs every other `relaymesh` command ~0.6 s at start.
    from aiohttp import web

    from relaymesh.web.server import HttpServer

    try:
        http = HttpServer(
            bind,
            metrics,
            service.health,
            before_metrics=service.update_metrics,
            allowed_hosts=allowed_hosts,
        )
    except ValueError as exc:
        raise ConfigError(f"--http: {exc}") from exc

    async def api_members(request: web.Request) -> web.Response:
        return web.json_response(service.members_json())

    http.add_routes([web.get("/api/members", api_members)])
    try:
        await http.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve HTTP on {bind}: {exc.strerror or exc}") from exc
    return http


def _run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop; ``RelayMeshError`` becomes one line on stderr and exit 1."""
    try:
        uvloop.run(main)
    except RelayMeshError as exc:
        fail(str(exc))
