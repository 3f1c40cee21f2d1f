"""Real ``relaymesh gossip`` processes on 127.0.0.1, and what tests need to watch them.

Every process is started by the ``gossip_procs`` factory, which kills leftovers at
teardown whatever the test did. Ports are ephemeral, picked here (free for both
UDP and TCP). Tests wait by polling ``/api/members`` with a deadline, never by
sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FAST_GOSSIP_TOML = """\
[gossip]
probe_interval_ms = 200
probe_timeout_ms = 100
gossip_interval_ms = 100
push_pull_interval_ms = 2000
dead_recover_min_ms = 500
"""
"""Timings ~5x faster than the LAN profile, so detection takes seconds, not tens."""

PAUSE_HOOK_DIR = Path(__file__).resolve().parent / "pausehook"
"""Its ``sitecustomize`` pauses a child at a chosen moment (``make(pause_at=...)``)."""


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
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
    raise RuntimeError("no free port")


def http_get(port: int, path: str, timeout_s: float = 2.0) -> bytes | None:
    """The body of GET http://127.0.0.1:port/path, or None when it cannot be fetched."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            body: bytes = r.read()
            return body
    except (OSError, urllib.error.URLError):
        return None


@dataclass
class GossipProc:
    name: str
    port: int
    http_port: int
    args: list[str]
    env: dict[str, str]
    log_path: Path
    pause_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> GossipProc:
        """Start (or restart, same name, ports and state dir) the process."""
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
        log = self.log_path.open("ab")
        self._log = log
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def members(self) -> dict[str, str] | None:
        """name -> status as this node sees it, or None when it does not answer."""
        body = http_get(self.http_port, "/api/members")
        if body is None:
            return None
        return {m["name"]: m["status"] for m in json.loads(body)}

    def members_full(self) -> list[dict[str, object]]:
        body = http_get(self.http_port, "/api/members")
        assert body is not None, f"{self.name} does not answer"
        doc: list[dict[str, object]] = json.loads(body)
        return doc

    def metrics(self) -> str:
        body = http_get(self.http_port, "/metrics")
        assert body is not None, f"{self.name} does not answer /metrics"
        return body.decode()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_paused(self, timeout_s: float) -> None:
        """Until the process reached its ``pause_at`` moment and waits there."""
        assert self.pause_dir is not None, "started without pause_at"
        wait_for((self.pause_dir / "paused").exists, timeout_s, f"{self.name} to pause")

    def resume(self) -> None:
        assert self.pause_dir is not None, "started without pause_at"
        (self.pause_dir / "resume").touch()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def metric_value(text: str, name: str, labels: str = "") -> float:
    """One sample from Prometheus text (``labels`` like ``reason="auth"``); 0 when absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, procs: Sequence[GossipProc] = ()
) -> None:
    """Poll until true; on timeout fail with ``what`` and the views of ``procs``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            views = {p.name: (p.members() if p.alive() else "not running") for p in procs}
            tails = {p.name: p.log_text()[-1500:] for p in procs if not p.alive()}
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}; views={views} {tails}")
        time.sleep(0.1)


GossipFactory = Callable[..., GossipProc]


@pytest.fixture
def gossip_procs(tmp_path: Path) -> Iterator[GossipFactory]:
    """``make(name, seeds_file, config_toml=FAST_GOSSIP_TOML, port=None, env=None)``.

    ``daemon="node"`` runs ``relaymesh node run`` (on its own SQLite file) instead of
    ``relaymesh gossip``; ``pause_at`` (see ``pausehook/sitecustomize.py``) makes the
    process stop at that moment until ``resume()``.
    """
    started: list[GossipProc] = []

    def make(
        name: str,
        seeds_file: Path,
        config_toml: str = FAST_GOSSIP_TOML,
        port: int | None = None,
        http_port: int | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
        daemon: str = "gossip",
        pause_at: str | None = None,
    ) -> GossipProc:
        config = tmp_path / f"{name}.toml"
        config.write_text(config_toml)
        port = port or free_port()
        http_port = http_port or free_port()
        common = [
            "--name",
            name,
            "--bind",
            f"127.0.0.1:{port}",
            "--http",
            f"127.0.0.1:{http_port}",
            "--seeds-file",
            str(seeds_file),
        ]
        args = [sys.executable, "-m", "relaymesh", "--config", str(config)]
        if daemon == "gossip":
            args += ["gossip", *common, "--state-dir", str(tmp_path / "state")]
        elif daemon == "node":
            # Its incarnation file goes beside the database, in a directory of its own.
            (tmp_path / name).mkdir(exist_ok=True)
            store = f"sqlite:///{tmp_path / name / 'store.db'}"
            args += ["--store", store, "node", "run", "--create-store", *common]
        else:
            raise ValueError(f"unknown daemon {daemon!r}")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")}
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.pop("WATCHDOG_USEC", None)
        pause_dir = None
        if pause_at is not None:
            pause_dir = tmp_path / f"{name}.pause"
            pause_dir.mkdir()
            python_path = [str(PAUSE_HOOK_DIR), full_env.get("PYTHONPATH", "")]
            full_env["PYTHONPATH"] = os.pathsep.join(p for p in python_path if p)
            full_env["RMTEST_PAUSE_DIR"] = str(pause_dir)
            full_env["RMTEST_PAUSE_AT"] = pause_at
        full_env.update(env or {})
        proc = GossipProc(
            name, port, http_port, args, full_env, tmp_path / f"{name}.log", pause_dir
        )
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


def write_seeds(path: Path, ports: list[int]) -> Path:
    path.write_text("# test seeds\n" + "".join(f"127.0.0.1:{p}\n" for p in ports))
    return path
