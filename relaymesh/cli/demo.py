"""``relaymesh demo``: a local 3-node cluster on one SQLite file, running a sample DAG.

It starts ``relaymesh node run`` subprocesses on 127.0.0.1 (free ports, a shared
seeds file, fast gossip timings) with their data and logs in ``./demo-data/``,
submits ``examples/workflows/nightly-report.json``, prints the API URLs and each
step's progress, and stays up until Ctrl-C (``--exit-when-done`` for CI), then
stops the nodes with SIGTERM (drain and LEAVE), killing any that do not exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from relaymesh.cli.common import CliContext, pass_cli
from relaymesh.cli.render import store_session
from relaymesh.exceptions import RelayMeshError
from relaymesh.model import TERMINAL_STEP_STATUSES, WorkflowStatus
from relaymesh.ops import services
from relaymesh.settings import load_settings

__all__ = ["register"]

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_STOP_TIMEOUT_S = 15.0
_START_TIMEOUT_S = 30.0
STALL_REPORT_S = 5.0

_FALLBACK_WORKFLOW = {
    "name": "demo",
    "steps": [
        {"name": "fetch", "agent": "echo", "input": {"text": "hello mesh"}, "priority": "high"},
        {"name": "work-a", "agent": "sleep", "input": {"seconds": 1}, "depends_on": ["fetch"]},
        {"name": "work-b", "agent": "sleep", "input": {"seconds": 1}, "depends_on": ["fetch"]},
        {"name": "report", "agent": "echo", "input": {}, "depends_on": ["work-a", "work-b"]},
    ],
}


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (gossip binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free port on 127.0.0.1")


def _config_text(with_scripts: bool) -> str:
    lines = [
        "# Written by `relaymesh demo`; fast timings for a laptop demo.",
        "[gossip]",
        "probe_interval_ms = 500",
        "probe_timeout_ms = 250",
        "gossip_interval_ms = 100",
        "push_pull_interval_ms = 5000",
        "suspicion_mult = 3",
        "",
        "[worker]",
        "slots = 2",
        "lease_ms = 15000",
        "heartbeat_ms = 3000",
        "poll_ms = 200",
        "drain_timeout_s = 5",
        "",
        "[maintenance]",
        "interval_ms = 500",
        "leader_lease_ms = 3000",
        "",
        "[guard]",
        "# Three nodes and their agents on one laptop: do not pause on a busy machine.",
        "max_load = 64.0",
    ]
    if with_scripts:
        py = json.dumps(sys.executable)
        for agent in ("wordcount", "summarize", "record"):
            script = json.dumps(str(_EXAMPLES / "agents" / f"{agent}.py"))
            lines += ["", f"[agents.{agent}]", f"command = [{py}, {script}]", "timeout_s = 60"]
    return "\n".join(lines) + "\n"


def _why_stalled(http_ports: list[int]) -> str:
    """What each node says about its worker (paused for load, memory, safe mode...)."""
    parts = []
    for i, port in enumerate(http_ports):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1.0) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError):
            parts.append(f"demo-{i + 1} unreachable")
            continue
        paused = doc.get("worker_paused")
        parts.append(f"demo-{i + 1} {'paused: ' + paused if paused else 'working'}")
    return ", ".join(parts)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@click.command("demo")
@click.option("--nodes", "node_count", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--data-dir", default="./demo-data", show_default=True)
@click.option("--exit-when-done", is_flag=True, help="Stop the cluster once the workflow ends.")
@click.option("--timeout-s", type=float, default=120.0, show_default=True)
@pass_cli
def demo(
    cli: CliContext, *, node_count: int, data_dir: str, exit_when_done: bool, timeout_s: float
) -> None:
    """A local 3-node cluster on SQLite running a sample workflow."""
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("demo.db*"):
        old.unlink()
    with_scripts = (_EXAMPLES / "agents").is_dir()
    config = data / "relaymesh.toml"
    config.write_text(_config_text(with_scripts))
    store_url = f"sqlite:///{data / 'demo.db'}"
    gossip_ports = [_free_port() for _ in range(node_count)]
    http_ports = [_free_port() for _ in range(node_count)]
    seeds = data / "seeds.txt"
    seeds.write_text("".join(f"127.0.0.1:{p}\n" for p in gossip_ports))
    workflow_file = _EXAMPLES / "workflows" / "nightly-report.json"
    if not (with_scripts and workflow_file.is_file()):
        workflow_file = data / "workflow.json"
        workflow_file.write_text(json.dumps(_FALLBACK_WORKFLOW, indent=2))

    # Ctrl-C and SIGTERM both stop the cluster cleanly, whatever we inherited (a shell
    # that starts us in the background leaves SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    env = {**os.environ, "RELAYMESH_CONFIG": str(config), "RELAYMESH_STORE_URL": store_url}
    for key in [k for k in env if k.startswith("RELAYMESH_NODE__")]:
        del env[key]
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    click.echo(f"demo: {node_count} nodes, store {store_url}, logs in {data}/")
    try:
        for i in range(node_count):
            log_file = (data / f"node-{i + 1}.log").open("wb")
            logs.append(log_file)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "relaymesh",
                        "--log-level",
                        "info",
                        "node",
                        "run",
                        "--name",
                        f"demo-{i + 1}",
                        "--bind",
                        f"127.0.0.1:{gossip_ports[i]}",
                        "--seeds-file",
                        str(seeds),
                        "--http",
                        f"127.0.0.1:{http_ports[i]}",
                        "--create-store",  # the demo's own store, new on a first run
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the demo, which drains the nodes
                )
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        for i, port in enumerate(http_ports):
            while not _healthy(f"http://127.0.0.1:{port}/healthz"):
                if procs[i].poll() is not None:
                    raise click.ClickException(
                        f"node demo-{i + 1} exited with {procs[i].returncode}; "
                        f"see {data / f'node-{i + 1}.log'}"
                    )
                if time.monotonic() > deadline:
                    raise click.ClickException(f"node demo-{i + 1} did not become healthy")
                time.sleep(0.1)
        click.echo("nodes up:")
        for i, port in enumerate(http_ports):
            click.echo(
                f"  demo-{i + 1}  gossip 127.0.0.1:{gossip_ports[i]}  http://127.0.0.1:{port}/"
            )
        click.echo(f"console: http://127.0.0.1:{http_ports[0]}/")
        click.echo(
            f"API: http://127.0.0.1:{http_ports[0]}/api/stats  "
            f"(also /api/tasks, /api/members, /api/dead, /api/openapi.json, /metrics)"
        )
        settings = load_settings(str(config), {"node": {"store_url": store_url}})
        outcome = asyncio.run(
            _submit_and_watch(store_url, settings, workflow_file, http_ports, timeout_s)
        )
        if exit_when_done:
            code = 0 if outcome == WorkflowStatus.SUCCEEDED else 1
        else:
            click.echo("cluster stays up; press Ctrl-C to stop it")
            _wait_for_nodes(procs)
            code = 0
    except KeyboardInterrupt:
        code = 0
    except (RelayMeshError, OSError) as exc:
        code = 1
        click.echo(f"error: {exc}", err=True)
    finally:
        _stop(procs)
        for fh in logs:
            fh.close()
    sys.exit(code)


async def _submit_and_watch(
    store_url: str, settings: Any, workflow_file: Path, http_ports: list[int], timeout_s: float
) -> WorkflowStatus:
    from relaymesh.work.workflow import load_workflow_file

    spec = load_workflow_file(
        workflow_file, known_agents=services.known_agents(settings), settings=settings
    )
    async with store_session(store_url, create=True) as store:
        workflow_id = await services.submit_workflow(store, spec, services.cli_actor())
        click.echo(f"submitted workflow {spec.name}: {workflow_id}")
        click.echo(f"  watch it: http://127.0.0.1:{http_ports[0]}/api/workflows/{workflow_id}")
        seen: dict[str, tuple[str, int, str | None]] = {}
        started = last_change = time.monotonic()
        while True:
            workflow, steps = await services.workflow_status(store, workflow_id)
            for step in steps:
                key = (step.status.value, step.attempt, step.owner_node)
                if seen.get(step.id) != key:
                    seen[step.id] = key
                    last_change = time.monotonic()
                    where = f" on {step.owner_node}" if step.owner_node else ""
                    click.echo(
                        f"  {time.monotonic() - started:6.1f}s  {step.name:<14} "
                        f"{step.status.value:<11} attempt {step.attempt}/{step.max_attempts}{where}"
                    )
            if workflow.status is not WorkflowStatus.RUNNING and all(
                s.status in TERMINAL_STEP_STATUSES for s in steps
            ):
                click.echo(f"workflow {workflow.status.value} in {time.monotonic() - started:.1f}s")
                last = steps[-1] if steps else None
                if last is not None and last.result is not None:
                    click.echo(f"result of {last.name}: {json.dumps(last.result)[:400]}")
                return workflow.status
            if time.monotonic() - last_change > STALL_REPORT_S:
                last_change = time.monotonic()
                click.echo(f"  (no progress for {STALL_REPORT_S:.0f}s: {_why_stalled(http_ports)})")
            if time.monotonic() - started > timeout_s:
                click.echo(f"workflow still {workflow.status.value} after {timeout_s:.0f}s")
                return workflow.status
            await asyncio.sleep(0.25)


def _wait_for_nodes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Until Ctrl-C / SIGTERM (KeyboardInterrupt) or a node exits on its own."""
    while True:
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                click.echo(f"node demo-{i + 1} exited with {proc.returncode}")
                return
        time.sleep(0.5)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every node (drain + LEAVE), then SIGKILL what is left after a bound."""
    alive = [p for p in procs if p.poll() is None]
    if not alive:
        return
    click.echo("stopping nodes (drain and leave)...")
    for proc in alive:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for proc in alive:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    click.echo("stopped")


def register(main: click.Group) -> None:
    main.add_command(demo)
