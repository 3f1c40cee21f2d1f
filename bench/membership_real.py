"""Real processes on loopback: RelayMesh beside kinship 0.4.0 and swim-protocol 0.6.3.

For each implementation and cluster size, several runs of:

1. spawn N node processes, all given the same seeds file (the first three nodes),
   memberlist's LAN timings (probe 1 s, timeout 500 ms, 3 indirect checks, gossip 200 ms
   to 3 nodes, suspicion mult 4, push/pull 30 s; RelayMesh's and kinship's defaults,
   swim-protocol's knobs set to match, see ``bench/peers/swim_node.py``). Up to 32 nodes
   all at once; above that in waves of ``2 x CPUs`` processes, each wave once the one
   before answers HTTP (``--spawn-wave``): a RelayMesh process needs ~0.9 s of CPU to
   start, so 100 at once would starve the running nodes' protocol loops for a minute;
2. **convergence**: poll ``GET /api/members`` of every node that has not yet seen all N
   as members (ALIVE or SUSPECT), every ``max(0.2, N / 200)`` s, until every node has,
   within 120 s of the last spawn (``120 + N`` s above 32 nodes). Reported from the
   first spawn (includes interpreter start-up, which dominates on 2 cores, and the
   waves) and from the moment the last node first answered HTTP ("all up");
3. **idle**: after a settle period, a window with no polling at all, measuring
   - CPU % of one core per node: ``utime + stime`` of each node from ``/proc/<pid>/stat``
     (all threads, so kinship's Rust thread counts), averaged over nodes;
   - bytes and packets per node per second: the ``lo`` TX counters of
     ``/proc/net/dev``. Each cluster runs in its own network namespace
     (``unshare -n``), so those counters hold that cluster's traffic only, UDP and
     push/pull TCP alike. Wire bytes include IP/UDP headers (28 B a datagram);
     "payload" subtracts 28 B a packet, an estimate (TCP headers are larger).
     Without ``unshare`` the host's ``lo`` is used and the table says so;
4. **detection**: SIGKILL the last node; poll until every survivor marks it DEAD. Each
   survivor's time is the moment it recorded the change when it reports one
   (RelayMesh's ``status_changed_at_ms``, the peer runners' ``changed_wall_ms``: wall
   clock, or monotonic, shared by every process on the host), else the poll that saw
   it. Reported: the last survivor (every node knows), the first, and the gap; also any
   healthy node that any node marked DEAD during the run (false DEAD).

``python -m bench.membership_real [--quick] [--sizes 5,10] [--impls relaymesh,kinship]``
Prints medians over the runs and writes ``bench/results/membership_real.md``.
swim-protocol runs only up to 32 nodes unless ``--impls`` names it: at 20-32 it already
collapses (no convergence, false DEAD, 25-47 KB/s and ~6 % CPU per node).
Every process spawned is killed at the end of its run (and dies with its parent via
``PR_SET_PDEATHSIG`` if the harness itself is killed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMPLS = ("relaymesh", "kinship", "swim-protocol")
BASE_PORT = 21000
HTTP_OFFSET = 1000
"""Node i gossips on BASE_PORT + i and serves HTTP on BASE_PORT + HTTP_OFFSET + i."""
MAX_SIZE = HTTP_OFFSET
"""More nodes and the gossip ports would run into the HTTP ports."""
ALL_AT_ONCE_MAX = 32
"""Up to this size every node is spawned at once, as in the published 5-32 node runs."""
SWIM_PROTOCOL_MAX_DEFAULT = 32
"""swim-protocol collapses at 20-32 nodes; above this it runs only when asked by name."""
HEADER_BYTES = 28  # IPv4 20 + UDP 8: lo counts no link header (checked: 100-B datagram = 128 B)
CLK_TCK = os.sysconf("SC_CLK_TCK")
_TIMING_ENV = "RELAYMESH_BENCH_TIMING"


@dataclass
class RunResult:
    impl: str
    size: int
    netns: bool
    started: bool = False
    converged: bool = False
    convergence_from_spawn_s: float | None = None
    convergence_from_up_s: float | None = None
    idle_window_s: float = 0.0
    cpu_pct_per_node: float | None = None
    bytes_per_node_s: float | None = None
    payload_bytes_per_node_s: float | None = None
    packets_per_node_s: float | None = None
    detected: bool = False
    detect_all_s: float | None = None
    detect_first_s: float | None = None
    detect_gap_s: float | None = None
    false_dead: int = 0
    marks_s: list[float] = field(default_factory=list)
    spawn_s: float | None = None
    rss_mb_per_node: float | None = None
    poller_cpu_pct: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the harness dies, whatever killed it."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def node_command(impl: str, i: int, size: int, seeds_file: Path, workdir: Path) -> list[str]:
    name = f"n{i:02d}"
    bind = f"127.0.0.1:{BASE_PORT + i}"
    http = f"127.0.0.1:{BASE_PORT + HTTP_OFFSET + i}"
    py = sys.executable
    if impl == "relaymesh":
        return [
            *(_relaymesh_exe()),
            "--log-level",
            "warning",
            "gossip",
            "--seeds-file",
            str(seeds_file),
            "--name",
            name,
            "--bind",
            bind,
            "--http",
            http,
            "--state-dir",
            str(workdir / name),
        ]
    module = {"kinship": "bench.peers.kinship_node", "swim-protocol": "bench.peers.swim_node"}[impl]
    return [
        py,
        "-m",
        module,
        "--name",
        name,
        "--bind",
        bind,
        "--http",
        http,
        "--seeds-file",
        str(seeds_file),
        "--size",
        str(size),
    ]


def _relaymesh_exe() -> list[str]:
    exe = Path(sys.executable).parent / "relaymesh"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "relaymesh"]


class Cluster:
    """N node processes of one implementation; ``close()`` kills every one of them."""

    def __init__(self, impl: str, size: int, workdir: Path) -> None:
        self.impl = impl
        self.size = size
        self.workdir = workdir
        self.seeds_file = workdir / "seeds.txt"
        seeds = [f"127.0.0.1:{BASE_PORT + i}" for i in range(min(3, size))]
        self.seeds_file.write_text("\n".join(seeds) + "\n")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []
        self.spawned_mono = 0.0

    def spawn(self, indexes: Sequence[int]) -> None:
        """Start the nodes ``indexes`` (the clock of "from spawn" starts at the first)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("RELAYMESH_LOG_LEVEL", "warning")
        if not self.procs:
            self.spawned_mono = time.monotonic()
        for i in indexes:
            log = open(self.workdir / f"n{i:02d}.log", "wb")  # noqa: SIM115 - closed in close()
            self.logs.append(log)
            self.procs[i] = subprocess.Popen(
                node_command(self.impl, i, self.size, self.seeds_file, self.workdir),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads here
            )

    def alive_indexes(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        for log in self.logs:
            log.close()

    def log_tail(self, i: int, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.workdir / f"n{i:02d}.log").read_text(errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        return ""


# ---------------------------------------------------------------- reading views


@dataclass
class View:
    """One node's view, normalised: name -> (status, changed_at as monotonic seconds|None)."""

    statuses: dict[str, tuple[str, float | None]]


def _mono_from_stamp(value: Any) -> float | None:
    """A node's change time as this host's monotonic seconds (wall or monotonic ms in)."""
    if not isinstance(value, int | float) or value <= 0:
        return None
    if value > 1e12:  # wall-clock milliseconds
        return time.monotonic() - (time.time() - value / 1000.0)
    return value / 1000.0  # CLOCK_MONOTONIC milliseconds, shared by every process on the host


def parse_view(doc: Any, name_of: Callable[[str], str]) -> View:
    """Accept the peer runners' shape and RelayMesh's ``/api/members`` (list or wrapped)."""
    rows = doc
    if isinstance(doc, dict):
        rows = doc.get("members", [])
    statuses: dict[str, tuple[str, float | None]] = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        raw_name = str(row.get("name") or row.get("address") or "")
        status = str(row.get("status", "")).upper()
        stamp = None
        for key in ("changed_wall_ms", "status_changed_at_ms", "status_changed_at"):
            if key in row:
                stamp = _mono_from_stamp(row[key])
                break
        statuses[name_of(raw_name)] = (status, stamp)
    return View(statuses)


async def http_get_json(port: int, timeout_s: float = 2.0) -> Any:
    async def go() -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"GET /api/members HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            data = await reader.read(-1)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise OSError(head[:80].decode(errors="replace"))
        if b"chunked" in head.lower():
            body = _dechunk(body)
        return json.loads(body)

    return await asyncio.wait_for(go(), timeout_s)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _name_mapper(size: int) -> Callable[[str], str]:
    by_addr = {f"127.0.0.1:{BASE_PORT + i}": f"n{i:02d}" for i in range(size)}
    return lambda raw: by_addr.get(raw, raw)


async def poll_views(cluster: Cluster, indexes: Sequence[int]) -> dict[int, View | None]:
    name_of = _name_mapper(cluster.size)

    async def one(i: int) -> View | None:
        try:
            doc = await http_get_json(BASE_PORT + HTTP_OFFSET + i)
        except (OSError, TimeoutError, ValueError):
            return None
        return parse_view(doc, name_of)

    views = await asyncio.gather(*(one(i) for i in indexes))
    return dict(zip(indexes, views, strict=True))


# ---------------------------------------------------------------- counters


def proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def proc_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def own_cpu_s() -> float:
    """CPU time of this harness process (the poller), all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def lo_tx() -> tuple[int, int]:
    with open("/proc/net/dev") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                cols = rest.split()
                return int(cols[8]), int(cols[9])  # TX bytes, TX packets
    return 0, 0


# ---------------------------------------------------------------- one run


@dataclass
class Timing:
    converge_timeout_s: float
    """From the last spawn until every node holds every other."""
    settle_s: float
    idle_s: float
    detect_timeout_s: float
    poll_s: float = 0.2
    spawn_wave: int = 0
    """Processes spawned per wave, the next wave once these answer HTTP; 0: all at once."""
    spawn_wave_timeout_s: float = 60.0


def timing_for(
    size: int,
    *,
    quick: bool = False,
    idle_s: float | None = None,
    spawn_wave: int | None = None,
    converge_timeout_s: float | None = None,
) -> Timing:
    """The defaults, scaled above ``ALL_AT_ONCE_MAX`` nodes (see the module docstring)."""
    big = size > ALL_AT_ONCE_MAX
    cpus = os.cpu_count() or 2
    return Timing(
        converge_timeout_s=converge_timeout_s or (120.0 + size if big else 120.0),
        settle_s=3.0 if quick else (10.0 if big else 5.0),
        idle_s=idle_s or (8.0 if quick else 20.0),
        detect_timeout_s=40.0,
        # A round reads N views of N members each: polling big clusters less often keeps
        # the poller and the nodes' HTTP handlers out of the way of start-up and detection
        # (node-stamped change times make detection independent of the poll interval).
        poll_s=max(0.2, size / 200),
        spawn_wave=(2 * cpus if big else 0) if spawn_wave is None else spawn_wave,
    )


def check_ports(size: int) -> None:
    """Gossip and HTTP port ranges must not overlap each other or the ephemeral range."""
    if not 1 <= size <= MAX_SIZE:
        raise SystemExit(f"size {size}: 1 to {MAX_SIZE} nodes (gossip ports {BASE_PORT} + i)")
    used = range(BASE_PORT, BASE_PORT + HTTP_OFFSET + size)
    with contextlib.suppress(OSError, ValueError):
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        # Outgoing connections (the poller's, push/pull's) take ports from that range.
        if used.start <= high and low < used.stop:
            raise SystemExit(
                f"ports {used.start}-{used.stop - 1} overlap the ephemeral range {low}-{high}"
            )


async def run_cluster(impl: str, size: int, timing: Timing, netns: bool) -> RunResult:
    result = RunResult(impl=impl, size=size, netns=netns)
    expected = {f"n{i:02d}" for i in range(size)}
    workdir = Path(tempfile.mkdtemp(prefix=f"rm-bench-{impl}-{size}-"))
    cluster = Cluster(impl, size, workdir)
    try:
        first_up: dict[int, float] = {}
        converged_at: dict[int, float] = {}

        def check_exits() -> None:
            dead = [i for i, p in cluster.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"node n{dead[0]:02d} exited: {cluster.log_tail(dead[0])}")

        async def poll_round(indexes: Sequence[int]) -> None:
            views = await poll_views(cluster, indexes)
            now = time.monotonic()
            for i, view in views.items():
                if view is None:
                    continue
                first_up.setdefault(i, now)
                # "Sees" a member: ALIVE or SUSPECT (a member still), as in the simulator.
                seen = {n for n, (s, _) in view.statuses.items() if s in ("ALIVE", "SUSPECT")}
                if i not in converged_at and expected <= seen:
                    converged_at[i] = now

        poller_cpu0, poller_t0 = own_cpu_s(), time.monotonic()
        poller_cpu_s = poller_wall_s = 0.0
        wave = timing.spawn_wave if timing.spawn_wave > 0 else size
        for start in range(0, size, wave):
            indexes = range(start, min(size, start + wave))
            cluster.spawn(indexes)
            result.started = True
            if indexes.stop == size:
                break
            wave_deadline = time.monotonic() + timing.spawn_wave_timeout_s
            while time.monotonic() < wave_deadline:
                check_exits()
                await poll_round([i for i in indexes if i not in first_up])
                if all(i in first_up for i in indexes):
                    break
                await asyncio.sleep(timing.poll_s)
            else:
                result.notes.append(f"wave from n{start:02d} not up in time; spawned on")
        result.spawn_s = time.monotonic() - cluster.spawned_mono
        deadline = time.monotonic() + timing.converge_timeout_s
        while time.monotonic() < deadline and len(converged_at) < size:
            check_exits()
            # A node that saw everyone once counts as converged: stop asking it.
            await poll_round([i for i in range(size) if i not in converged_at])
            if len(converged_at) < size:
                await asyncio.sleep(timing.poll_s)
        poller_cpu_s += own_cpu_s() - poller_cpu0
        poller_wall_s += time.monotonic() - poller_t0
        if len(converged_at) < size:
            raise RuntimeError(
                f"not converged after {timing.converge_timeout_s:.0f} s "
                f"({len(converged_at)}/{size} nodes saw all; {len(first_up)} up)"
            )
        result.converged = True
        last = max(converged_at.values())
        result.convergence_from_spawn_s = last - cluster.spawned_mono
        result.convergence_from_up_s = last - max(first_up.values())

        # Idle: no polling, counters only.
        await asyncio.sleep(timing.settle_s)
        pids = [p.pid for p in cluster.procs.values()]
        cpu0 = [proc_cpu_s(pid) for pid in pids]
        bytes0, packets0 = lo_tx()
        t0 = time.monotonic()
        await asyncio.sleep(timing.idle_s)
        window = time.monotonic() - t0
        bytes1, packets1 = lo_tx()
        cpu1 = [proc_cpu_s(pid) for pid in pids]
        result.rss_mb_per_node = statistics.fmean(proc_rss_mb(pid) for pid in pids)
        result.idle_window_s = window
        result.cpu_pct_per_node = (
            statistics.fmean(b - a for a, b in zip(cpu0, cpu1, strict=True)) / window * 100
        )
        d_bytes, d_packets = bytes1 - bytes0, packets1 - packets0
        result.bytes_per_node_s = d_bytes / size / window
        result.packets_per_node_s = d_packets / size / window
        result.payload_bytes_per_node_s = (d_bytes - HEADER_BYTES * d_packets) / size / window

        # Detection: SIGKILL the last node (never a seed when size > 3).
        poller_cpu0, poller_t0 = own_cpu_s(), time.monotonic()
        victim = size - 1
        victim_name = f"n{victim:02d}"
        cluster.kill(victim)
        t_kill = time.monotonic()
        survivors = [i for i in range(size) if i != victim]
        marked: dict[int, float] = {}
        false_dead: set[tuple[int, str]] = set()
        deadline = t_kill + timing.detect_timeout_s
        while time.monotonic() < deadline and len(marked) < len(survivors):
            views = await poll_views(cluster, survivors)
            now = time.monotonic()
            for i, view in views.items():
                if view is None:
                    continue
                for name, (status, _) in view.statuses.items():
                    if name != victim_name and status == "DEAD":
                        false_dead.add((i, name))
                status, stamp = view.statuses.get(victim_name, ("", None))
                if i not in marked and status == "DEAD":
                    # The node's own record of when, if it gives one that is plausible.
                    when = stamp if stamp is not None and t_kill <= stamp <= now else now
                    marked[i] = when
            await asyncio.sleep(timing.poll_s / 2)
        poller_cpu_s += own_cpu_s() - poller_cpu0
        poller_wall_s += time.monotonic() - poller_t0
        # What the harness itself took from the 2 cores while it polled (never in the
        # idle window): spawn, convergence and detection.
        result.poller_cpu_pct = poller_cpu_s / poller_wall_s * 100
        result.false_dead = len(false_dead)
        if marked:
            result.detect_first_s = min(marked.values()) - t_kill
        if len(marked) == len(survivors):
            result.detected = True
            result.detect_all_s = max(marked.values()) - t_kill
            assert result.detect_first_s is not None
            result.detect_gap_s = result.detect_all_s - result.detect_first_s
        else:
            result.notes.append(f"{len(marked)}/{len(survivors)} survivors marked the victim")
        result.marks_s = [round(marked[i] - t_kill, 3) for i in sorted(marked)]
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# ---------------------------------------------------------------- isolation


def netns_prefix() -> list[str] | None:
    """How to start a process in a fresh network namespace here, or None if we cannot."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        probe = subprocess.run(
            [*prefix, "ip", "link", "set", "lo", "up"], check=False, capture_output=True, timeout=10
        )
        if probe.returncode == 0:
            return prefix
    return None


def run_isolated(impl: str, size: int, timing: Timing, prefix: list[str] | None) -> RunResult:
    """One run in its own network namespace (a child process), or here if we cannot."""
    if prefix is None:
        return asyncio.run(run_cluster(impl, size, timing, netns=False))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        out_path = Path(out.name)
    try:
        script = (
            f"ip link set lo up && exec {sys.executable} -m bench.membership_real "
            f"--inner {impl} {size} {out_path}"
        )
        limit = timing.converge_timeout_s + timing.settle_s + timing.idle_s
        limit += timing.detect_timeout_s + 120
        if timing.spawn_wave > 0:
            limit += -(-size // timing.spawn_wave) * timing.spawn_wave_timeout_s
        proc = subprocess.run(
            [*prefix, "sh", "-c", script],
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), _TIMING_ENV: json.dumps(asdict(timing))},
            timeout=limit,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not out_path.stat().st_size:
            return RunResult(
                impl, size, True, error=f"inner run failed: {proc.stderr.strip()[-300:]}"
            )
        doc = json.loads(out_path.read_text())
        return RunResult(**doc)
    except subprocess.TimeoutExpired:
        return RunResult(impl, size, True, error="inner run timed out")
    finally:
        out_path.unlink(missing_ok=True)


# ---------------------------------------------------------------- report


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = (
    ("impl", "implementation"),
    ("size", "N"),
    ("ok", "runs ok"),
    ("conv_spawn", "converge from spawn s"),
    ("conv_up", "converge from all up s"),
    ("detect_all", "detect (all) s"),
    ("detect_first", "detect (first) s"),
    ("gap", "first-to-last gap s"),
    ("false_dead", "false DEAD"),
    ("cpu", "idle CPU %/node"),
    ("bytes", "idle B/s/node (wire)"),
    ("payload", "idle B/s/node (payload est.)"),
    ("packets", "idle pkt/s/node"),
)


def summarize(results: list[RunResult]) -> dict[str, str]:
    ok = [r for r in results if r.error is None and r.detected]
    return {
        "impl": results[0].impl,
        "size": str(results[0].size),
        "ok": f"{len(ok)}/{len(results)}",
        "conv_spawn": _fmt(_median([r.convergence_from_spawn_s for r in results])),
        "conv_up": _fmt(_median([r.convergence_from_up_s for r in results])),
        "detect_all": _fmt(_median([r.detect_all_s for r in results])),
        "detect_first": _fmt(_median([r.detect_first_s for r in results])),
        "gap": _fmt(_median([r.detect_gap_s for r in results])),
        "false_dead": str(sum(r.false_dead for r in results)),
        "cpu": _fmt(_median([r.cpu_pct_per_node for r in results]), 3),
        "bytes": _fmt(_median([r.bytes_per_node_s for r in results]), 0),
        "payload": _fmt(_median([r.payload_bytes_per_node_s for r in results]), 0),
        "packets": _fmt(_median([r.packets_per_node_s for r in results]), 1),
    }


def markdown_table(rows: list[dict[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(row[key] for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _uptime() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return "?"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.membership_real", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="sizes 5 and 10, one run, short")
    parser.add_argument("--sizes", help="comma-separated cluster sizes [5,10,20,32,100]")
    parser.add_argument("--impls", help=f"comma-separated, of {','.join(IMPLS)}")
    parser.add_argument("--runs", type=int, help="runs per cell [3]")
    parser.add_argument("--idle-s", type=float, help="idle measuring window [20]")
    parser.add_argument(
        "--spawn-wave",
        type=int,
        help=f"processes per start-up wave, 0 = all at once [0 up to {ALL_AT_ONCE_MAX} nodes, "
        "else 2 x CPUs]",
    )
    parser.add_argument(
        "--converge-timeout-s",
        type=float,
        help=f"from the last spawn [120, or 120 + N above {ALL_AT_ONCE_MAX} nodes]",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "membership_real.md")
    parser.add_argument("--raw", type=Path, help="also write every run as JSON here")
    parser.add_argument("--verbose", action="store_true", help="per-survivor detection times")
    parser.add_argument("--inner", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.inner:
        impl, size, out = args.inner
        timing_doc = json.loads(os.environ[_TIMING_ENV])
        result = asyncio.run(run_cluster(impl, int(size), Timing(**timing_doc), True))
        Path(out).write_text(json.dumps(asdict(result)))
        return

    default_sizes = "5,10" if args.quick else "5,10,20,32,100"
    sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
    impls = (args.impls or ",".join(IMPLS)).split(",")
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        parser.error(f"unknown --impls {','.join(unknown)}; known: {','.join(IMPLS)}")
    for size in sizes:
        check_ports(size)
    runs = args.runs or (1 if args.quick else 3)

    def timing(size: int) -> Timing:
        return timing_for(
            size,
            quick=args.quick,
            idle_s=args.idle_s,
            spawn_wave=args.spawn_wave,
            converge_timeout_s=args.converge_timeout_s,
        )

    def cells(size: int) -> list[str]:
        if args.impls is None and size > SWIM_PROTOCOL_MAX_DEFAULT:
            return [i for i in impls if i != "swim-protocol"]
        return impls

    skipped = [s for s in sizes if "swim-protocol" in impls and "swim-protocol" not in cells(s)]
    notes = []
    if skipped:
        notes.append(
            f"swim-protocol not run at N = {', '.join(map(str, skipped))}: above "
            f"{SWIM_PROTOCOL_MAX_DEFAULT} nodes it is left out unless --impls names it, since "
            "it already collapses at 20-32 (no convergence, false DEAD, 25-47 KB/s and ~6 % "
            "CPU per node in the published runs)."
        )
    big = [s for s in sizes if s > ALL_AT_ONCE_MAX]
    if big:
        t = timing(big[0])
        notes.append(
            f"N = {', '.join(map(str, big))}: spawned in waves of "
            f"{t.spawn_wave or 'all'} (the next once these answer HTTP), convergence "
            f"deadline 120 + N s from the last spawn, {t.settle_s:.0f} s settle, views "
            f"polled every max(0.2, N / 200) s (never in the idle window)."
        )
    prefix = netns_prefix()
    load_before = _uptime()
    print(
        f"membership_real: sizes {sizes}, impls {impls}, {runs} run(s) each, "
        f"isolation: {' '.join(prefix) if prefix else 'none (host lo counters)'}, "
        f"loadavg before: {load_before}",
        flush=True,
    )
    for note in notes:
        print(f"  note: {note}", flush=True)
    all_results: list[RunResult] = []
    rows = []
    for size in sizes:
        for impl in cells(size):
            cell = []
            for run in range(runs):
                started = time.monotonic()
                result = run_isolated(impl, size, timing(size), prefix)
                cell.append(result)
                print(
                    f"  {impl:14s} N={size:3d} run {run + 1}: "
                    f"conv {_fmt(result.convergence_from_spawn_s)}/"
                    f"{_fmt(result.convergence_from_up_s)} s, "
                    f"detect {_fmt(result.detect_all_s)} s "
                    f"(first {_fmt(result.detect_first_s)}), "
                    f"cpu {_fmt(result.cpu_pct_per_node, 3)} %, "
                    f"{_fmt(result.bytes_per_node_s, 0)} B/s, false DEAD {result.false_dead}, "
                    f"spawn {_fmt(result.spawn_s, 1)} s, rss {_fmt(result.rss_mb_per_node, 0)} "
                    f"MB/node, poller cpu {_fmt(result.poller_cpu_pct, 0)} %"
                    + (f", ERROR {result.error}" if result.error else "")
                    + (f" ({'; '.join(result.notes)})" if result.notes else "")
                    + (f" marks {result.marks_s}" if args.verbose else "")
                    + f" [{time.monotonic() - started:.0f} s]",
                    flush=True,
                )
            all_results.extend(cell)
            rows.append(summarize(cell))
    load_after = _uptime()
    table = markdown_table(rows)
    print()
    print(table)
    print(f"\nloadavg before: {load_before}; after: {load_after}")
    errors = [f"- {r.impl} N={r.size}: {r.error}" for r in all_results if r.error]
    first = timing(sizes[0])
    doc = [
        "# membership_real",
        "",
        f"Command: `python -m bench.membership_real {' '.join(argv)}`".rstrip() + "",
        "",
        f"Sizes {sizes}, {runs} run(s) per cell, medians; idle window {first.idle_s:.0f} s "
        f"after {first.settle_s:.0f} s settle; isolation: "
        + (f"`{' '.join(prefix)}` (own network namespace per run)" if prefix else "none"),
        f"Load average before: {load_before}; after: {load_after}.",
        *[f"\n{note}" for note in notes],
        "",
        table,
        "",
    ]
    if errors:
        doc += ["Errors:", "", *errors, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(doc))
    if args.raw:
        args.raw.write_text(json.dumps([asdict(r) for r in all_results], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
