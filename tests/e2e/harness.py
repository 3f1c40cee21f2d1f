"""A cluster of real ``relaymesh node run`` processes for end-to-end tests.

Every node and CLI call is a subprocess of the installed ``relaymesh`` command.
Timings come from a TOML settings file with short probes and leases so failures are
detected in about a second. Conditions are waited on with deadlines, never fixed
sleeps. ``close()`` kills every node still running, and every agent process the
``record`` script agent reported (agents live in their own process groups, so a
SIGKILLed node leaves them behind).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
RELAYMESH = str(Path(sys.executable).with_name("relaymesh"))
RECORD_AGENT = REPO / "examples" / "agents" / "record.py"

BASE_SETTINGS: dict[str, dict[str, Any]] = {
    "gossip": {
        "probe_interval_ms": 200,
        "probe_timeout_ms": 100,
        "gossip_interval_ms": 50,
        "suspicion_mult": 2,
        "push_pull_interval_ms": 2000,
        "dead_recover_min_ms": 500,
    },
    "worker": {
        "slots": 2,
        "lease_ms": 5000,
        "heartbeat_ms": 1000,
        "poll_ms": 100,
        "drain_timeout_s": 2,
    },
    "maintenance": {"interval_ms": 200, "leader_lease_ms": 2000},
    "guard": {"max_load": 1000.0, "min_available_mb": 0, "max_swap_pct": 100.0},
}


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_settings(path: Path, overrides: dict[str, dict[str, Any]] | None = None) -> None:
    sections = {k: dict(v) for k, v in BASE_SETTINGS.items()}
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    lines += [
        "[agents.record]",
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(RECORD_AGENT))}]",
        "timeout_s = 120",
        "",
    ]
    path.write_text("\n".join(lines))


@dataclass
class NodeProc:
    name: str
    gossip_port: int
    http_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (OSError, http.client.HTTPException):
            return False


@dataclass
class Cluster:
    root: Path
    store_url: str
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, NodeProc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "relaymesh.toml"
        write_settings(self.config, self.settings)
        self.seeds = self.root / "seeds.txt"
        self.journal = self.root / "journal.jsonl"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")},
            "RELAYMESH_CONFIG": str(self.config),
            "RELAYMESH_STORE_URL": self.store_url,
            "PYTHONUNBUFFERED": "1",
        }
        sqlite_dir = Path(self.store_url.removeprefix("sqlite:///")).parent
        if self.store_url.startswith("sqlite:///") and sqlite_dir.is_dir():
            # Read commands refuse a SQLite file that does not exist yet. (A directory
            # that is missing on purpose, a volume not mounted yet, stays missing.)
            self.cli("store", "migrate")

    # -- nodes ------------------------------------------------------------------------

    def add_nodes(self, *names: str) -> None:
        for name in names:
            self.nodes[name] = NodeProc(name, free_port(), free_port(), self.root / f"{name}.log")
        self.seeds.write_text("".join(f"127.0.0.1:{n.gossip_port}\n" for n in self.nodes.values()))

    def start(self, *names: str, wait: bool = True) -> None:
        for name in names:
            node = self.nodes[name]
            log = node.log_path.open("ab")
            node.proc = subprocess.Popen(
                [
                    RELAYMESH,
                    "--log-level",
                    "debug",
                    "node",
                    "run",
                    "--name",
                    name,
                    "--bind",
                    f"127.0.0.1:{node.gossip_port}",
                    "--seeds-file",
                    str(self.seeds),
                    "--http",
                    f"127.0.0.1:{node.http_port}",
                    "--create-store",  # each cluster starts on a store of its own
                ],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
        if wait:
            for name in names:
                node = self.nodes[name]
                wait_until(
                    lambda n=node: n.healthy() or not n.running(),  # type: ignore[misc]
                    20,
                    what=f"{name} healthy",
                )
                assert node.running(), f"{name} exited:\n{self.log_tail(name)}"

    def wait_members(self, name: str, alive: int, timeout_s: float = 15) -> None:
        def ok() -> bool:
            try:
                doc = self.http_json(name, "/healthz")
            except (OSError, ValueError, http.client.HTTPException):
                return False
            return int(doc["members"]["alive"]) >= alive

        wait_until(ok, timeout_s, what=f"{name} to see {alive} ALIVE members")

    def http_json(self, name: str, path: str) -> Any:
        url = f"http://127.0.0.1:{self.nodes[name].http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def http_text(self, name: str, path: str) -> str:
        url = f"http://127.0.0.1:{self.nodes[name].http_port}{path}"
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return str(resp.read().decode())

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.kill(self.nodes[name].pid, sig)

    def freeze(self, name: str) -> None:
        """SIGSTOP ``name`` at a moment it holds no SQLite write lock.

        A process stopped inside a write transaction keeps the database file locked for
        every other process until it resumes (a SQLite property, like a VM paused while
        holding a lock): then nothing could take its steps over. Stop, probe the write
        lock, and if it is held resume and try again a moment later."""
        pid = self.nodes[name].pid
        if not self.store_url.startswith("sqlite:///"):
            os.kill(pid, signal.SIGSTOP)
            return
        path = self.store_url[len("sqlite:///") :]
        for _ in range(200):
            os.kill(pid, signal.SIGSTOP)
            try:
                conn = sqlite3.connect(path, timeout=0.05)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.rollback()
                    return
                finally:
                    conn.close()
            except sqlite3.OperationalError:
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.01)
        raise AssertionError(f"{name} never let go of the SQLite write lock")

    def wait_exit(self, name: str, timeout_s: float) -> int:
        proc = self.nodes[name].proc
        assert proc is not None
        return proc.wait(timeout=timeout_s)

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            text = self.nodes[name].log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- CLI ----------------------------------------------------------------------------

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [RELAYMESH, *args],
            check=False,
            env=self.env,
            cwd=self.root,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"relaymesh {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def submit(self, workflow: dict[str, Any]) -> str:
        out = self.cli("submit", "-", stdin=json.dumps(workflow)).stdout
        return out.strip().splitlines()[-1]

    def status(self, workflow_id: str) -> dict[str, Any]:
        """The workflow through a running node's API (fast), else through the CLI."""
        for node in self.nodes.values():
            if node.running() and node.healthy():
                try:
                    doc: dict[str, Any] = self.http_json(node.name, f"/api/workflows/{workflow_id}")
                except (OSError, ValueError, http.client.HTTPException):
                    continue
                if "workflow" in doc:
                    return doc
        deadline = time.monotonic() + 10
        while True:
            result = self.cli("status", workflow_id, "--json", check=False)
            if result.returncode == 0:
                doc = json.loads(result.stdout)
                return doc
            if "unavailable" not in result.stderr or time.monotonic() > deadline:
                raise AssertionError(f"relaymesh status failed: {result.stderr}")
            time.sleep(0.2)

    def api(self, path: str) -> Any:
        """GET ``path`` from the first healthy node."""
        for node in self.nodes.values():
            if node.running() and node.healthy():
                try:
                    return self.http_json(node.name, path)
                except (OSError, ValueError, http.client.HTTPException):
                    continue
        raise AssertionError("no healthy node to ask")

    def step(self, workflow_id: str, name: str) -> dict[str, Any]:
        steps = self.status(workflow_id)["steps"]
        return next(s for s in steps if s["name"] == name)

    def wait_workflow(
        self, workflow_id: str, statuses: set[str], timeout_s: float
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def done() -> bool:
            seen["doc"] = self.status(workflow_id)
            return seen["doc"]["workflow"]["status"] in statuses

        try:
            wait_until(done, timeout_s, interval_s=0.2, what=f"workflow in {statuses}")
        except BaseException:
            steps = [
                (s["name"], s["status"], s["owner_node"], s["lease_epoch"], s["error"])
                for s in seen.get("doc", {}).get("steps", [])
            ]
            print("workflow steps:", json.dumps(steps, indent=1))
            for name in self.nodes:
                print(f"--- {name} log tail ---\n{self.log_tail(name, 15)}")
            raise
        return seen["doc"]

    def journal_lines(self) -> list[dict[str, Any]]:
        try:
            text = self.journal.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # -- cleanup ----------------------------------------------------------------------------

    def close(self) -> None:
        for node in self.nodes.values():
            if node.running():
                assert node.proc is not None
                try:
                    node.proc.send_signal(signal.SIGCONT)
                    node.proc.kill()
                except ProcessLookupError:
                    pass
                node.proc.wait(timeout=10)
        for line in self.journal_lines():
            pid = int(line.get("pid") or 0)
            if pid > 0:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def record_step(name: str, journal: Path, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "agent": "record",
        "input": {"journal": str(journal), "seconds": seconds},
        **extra,
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def now_ms() -> int:
    return time.time_ns() // 1_000_000
