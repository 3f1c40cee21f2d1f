"""The membership simulator at scale: detection, false positives and traffic, Lifeguard on/off.

Every number here comes from ``relaymesh.sim.run_scenario``: the real protocol core
(``membership.protocol.Swim``) on ``membership.memory.MemoryNetwork`` on a virtual clock,
so results do not depend on the machine or its load (only the wall time does). Runs are
spread over the machine's cores (one process per run).

Tables (Lifeguard on, then off): N = 10, 100, 1000 at loss 0 %, 5 %, 20 %, and with 5 % of
the nodes slow (every packet handled 0.5-2.5 s late). Each cell pools several seeds; each
run SIGKILLs ``KILLS[N]`` nodes 10 s after every node first saw every other, and runs
``DETECT_WINDOW_S`` more. N=1000 runs start from the converged view (``Swim.preload``, the
simulator's ``--bootstrap``) instead of a simultaneous join, so they kill at 10 s; the
"start" column says "preloaded" for those and "joined" otherwise, and convergence is
measured on joined runs only (a real 1,000-node join is its own target row). Columns:

- detection p50 / p99: seconds from the kill until the *last* survivor marked the victim
  DEAD (every node knows), over all victims of all seeds (nearest rank);
- gap p50: first-to-last survivor marking it DEAD;
- false SUSPECT / false DEAD: healthy (not killed) nodes some survivor marked so, median
  over seeds (nodes, not marks: one suspicion reaches every member);
  false DEAD is also given as the total over all seeds, since its target is zero;
- B/s/node: steady traffic per node (from 10 s after convergence to the end, the kills
  included), datagram bytes (+ push/pull where the network counts it, see the header).

Then the hashicorp/memberlist-derived targets, each checked on its own runs.

``python -m bench.membership_sim [--quick] [--seeds N] [--workers N]``; writes
``bench/results/membership_sim.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relaymesh.sim import Detection, Freeze, Scenario, SimResult, percentile, run_scenario

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

KILLS = {10: 1, 50: 1, 100: 3, 1000: 5}
DETECT_WINDOW_S = 80.0
"""After the kill: Lifeguard's suspicion starts at 6x the minimum (72 s at N=1000) and
shrinks with confirmations; 80 s covers an unconfirmed worst case at every size here."""
BIG_DETECT_WINDOW_S = 45.0
"""At 1,000 nodes confirmations come fast (suspicion ~12-16 s); a shorter window keeps a
run affordable. An undetected victim shows in the "detected by all" column."""
CONDITIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("loss 0 %", {"loss": 0.0}),
    ("loss 5 %", {"loss": 0.05}),
    ("loss 20 %", {"loss": 0.20}),
    ("5 % slow", {"loss": 0.0, "slow_frac": 0.05, "slow_delay_ms": (500, 2500)}),
)


@dataclass
class Job:
    key: tuple[Any, ...]
    scenario: Scenario


@dataclass
class Cell:
    results: list[SimResult] = field(default_factory=list)


def _expected_convergence_s(n: int) -> float:
    return 5.0 if n <= 100 else 30.0


def table_scenario(n: int, cond: dict[str, Any], lifeguard: bool, seed: int) -> Scenario:
    # At 1,000 nodes start converged (``Swim.preload``): the simultaneous join of 1,000
    # nodes costs ~2 CPU minutes a run otherwise. Such a cell measures no convergence.
    bootstrap = n >= 1000
    # Kill 10 s after convergence (at 10 s when bootstrapped); the run ends the detection
    # window after that at the latest.
    window = BIG_DETECT_WINDOW_S if n >= 1000 else DETECT_WINDOW_S
    duration = (0.0 if bootstrap else _expected_convergence_s(n)) + 10.0 + window
    return Scenario(
        nodes=n,
        duration_s=duration,
        seed=seed,
        kill=KILLS[n],
        lifeguard=lifeguard,
        bootstrap=bootstrap,
        **cond,
    )


def _run(job: Job) -> tuple[tuple[Any, ...], SimResult]:
    return job.key, run_scenario(job.scenario)


def result_from_json(doc: dict[str, Any]) -> SimResult:
    doc = dict(doc)
    doc.pop("detected_all", None)
    dets = []
    for det in doc.pop("detections"):
        dets.append(Detection(**{k: v for k, v in det.items() if k not in ("detected", "gap_s")}))
    return SimResult(detections=dets, **doc)


def load_raw(paths: Sequence[Path]) -> dict[tuple[Any, ...], Cell]:
    cells: dict[tuple[Any, ...], Cell] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                key = tuple(doc["key"])
                cells.setdefault(key, Cell()).results.append(result_from_json(doc["result"]))
    return cells


def run_jobs(jobs: list[Job], workers: int, raw: Path | None = None) -> dict[tuple[Any, ...], Cell]:
    """Run every job; each result is also appended to ``raw`` (JSON lines) as it lands."""
    cells: dict[tuple[Any, ...], Cell] = {}
    # Biggest first, so the long runs do not end up alone at the tail.
    jobs = sorted(jobs, key=lambda j: -j.scenario.nodes * j.scenario.duration_s)
    done = 0
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run, job) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            key, result = future.result()
            cells.setdefault(key, Cell()).results.append(result)
            if raw is not None:
                with raw.open("a") as fh:
                    fh.write(json.dumps({"key": list(key), "result": result.to_json()}) + "\n")
            done += 1
            if result.scenario["nodes"] >= 1000 or done % 10 == 0 or done == len(jobs):
                print(
                    f"  [{done}/{len(jobs)}] {key} {result.wall_s:.0f} s "
                    f"(elapsed {time.monotonic() - started:.0f} s)",
                    flush=True,
                )
    return cells


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def detection_samples(results: Sequence[SimResult]) -> tuple[list[float], list[float], int, int]:
    """(last-DEAD times of detected victims, gaps, victims detected, victims)."""
    lasts: list[float] = []
    gaps: list[float] = []
    detected = total = 0
    for r in results:
        for d in r.detections:
            total += 1
            if d.detected and d.last_s is not None:
                detected += 1
                lasts.append(d.last_s)
                if d.gap_s is not None:
                    gaps.append(d.gap_s)
    return lasts, gaps, detected, total


def cell_row(results: Sequence[SimResult]) -> dict[str, str]:
    lasts, gaps, detected, total = detection_samples(results)
    return {
        "detected": f"{detected}/{total}",
        "p50": _fmt(percentile(lasts, 50)),
        "p99": _fmt(percentile(lasts, 99)),
        "gap": _fmt(percentile(gaps, 50)),
        "fs": _fmt(statistics.median(r.false_suspect_nodes for r in results), 1),
        "fd": _fmt(statistics.median(r.false_dead_nodes for r in results), 1),
        "fd_total": str(sum(r.false_dead for r in results)),
        "start": _start(results),
        "conv": _fmt(_median_or_none([r.converged_at_s for r in results if not r.bootstrapped])),
        "bps": _fmt(statistics.median(r.bytes_per_node_s for r in results), 0),
        "mps": _fmt(statistics.median(r.messages_per_node_s for r in results), 1),
        "wall": _fmt(statistics.median(r.wall_s for r in results), 1),
    }


def _start(results: Sequence[SimResult]) -> str:
    """How the cell's runs began: "joined" (real joins) or "preloaded" (``--bootstrap``)."""
    kinds = {"preloaded" if r.bootstrapped else "joined" for r in results}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


TABLE_COLUMNS = (
    ("n", "N"),
    ("cond", "network"),
    ("detected", "victims detected by all"),
    ("p50", "detect p50 s"),
    ("p99", "detect p99 s"),
    ("gap", "first-to-last gap p50 s"),
    ("fs", "false SUSPECT nodes (median)"),
    ("fd", "false DEAD nodes (median)"),
    ("fd_total", "false DEAD marks (all seeds)"),
    ("start", "start"),
    ("conv", "convergence after joins s"),
    ("bps", "B/s/node"),
    ("mps", "msg/s/node"),
    ("wall", "wall s/run"),
)


def markdown(rows: list[dict[str, str]], columns: Sequence[tuple[str, str]]) -> str:
    head = "| " + " | ".join(t for _, t in columns) + " |"
    rule = "|" + "|".join(" --- " for _ in columns) + "|"
    return "\n".join(
        [head, rule, *("| " + " | ".join(r[k] for k, _ in columns) + " |" for r in rows)]
    )


# ------------------------------------------------------------------ targets


def target_jobs(seeds: int, quick: bool) -> list[Job]:
    jobs: list[Job] = []
    # 30 seeds x 3 victims: with fewer, "p99" is just the slowest of a few dozen.
    kill_seeds = max(3, seeds * (2 if quick else 10))
    for seed in range(1, kill_seeds + 1):
        # SIGKILL at N=100 with 1 % loss, memberlist's published scenario.
        scenario = Scenario(nodes=100, duration_s=60, seed=seed, loss=0.01, kill=3)
        jobs.append(Job(("kill100",), scenario))
        # The same with classic SWIM's per-node shuffled probing, to show what the
        # coordinated schedule (relaymesh/membership/schedule.py) buys.
        classic = replace(scenario, overrides={"probe_schedule": "random"})
        jobs.append(Job(("kill100random",), classic))
    if not quick:
        # Convergence after a simultaneous join of 1,000 nodes (the table's N=1000 cells
        # start converged, via Swim.preload).
        jobs.append(Job(("join1000",), Scenario(nodes=1000, duration_s=40, seed=1, kill=0)))
    for seed in range(1, max(3, seeds * 2) + 1):
        # 2 s event-loop stalls: 5 nodes at different times, 1 % loss; Lifeguard on.
        freezes = tuple(Freeze(node=10 + 7 * k, at_s=20.0 + 9.0 * k, for_s=2.0) for k in range(5))
        jobs.append(
            Job(
                ("stall100",),
                Scenario(nodes=100, duration_s=75, seed=seed, loss=0.01, kill=0, freezes=freezes),
            )
        )
        # Traffic at 50 nodes, no failures.
        jobs.append(Job(("traffic50",), Scenario(nodes=50, duration_s=90, seed=seed, kill=0)))
    return jobs


def check_targets(
    target_cells: dict[tuple[Any, ...], Cell], table: dict[tuple[Any, ...], Cell]
) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, how, met) rows."""
    rows: list[tuple[str, str, str, bool | None]] = []
    kill = target_cells.get(("kill100",))
    if kill:
        lasts, gaps, detected, total = detection_samples(kill.results)
        p50, p99, gap = percentile(lasts, 50), percentile(lasts, 99), percentile(gaps, 50)
        runs = len(kill.results)
        how = f"N=100, 1 % loss, {runs} seeds x 3 kills; {detected}/{total} detected by all"
        rows.append(
            ("SIGKILL N=100 1 % loss: p50 <= 10 s", _fmt(p50), how, _le(p50, 10.0)),
        )
        rows.append(("... p99 <= 12.5 s", _fmt(p99), how, _le(p99, 12.5)))
        rows.append(("... first-to-last gap p50 <= 0.4 s", _fmt(gap), how, _le(gap, 0.4)))
        rows.append(
            ("... detected by every node", f"{detected}/{total}", how, detected == total),
        )
    classic = target_cells.get(("kill100random",))
    if classic:
        lasts, gaps, detected, total = detection_samples(classic.results)
        rows.append(
            (
                "(for comparison) the same, classic random probe schedule: p50 / p99",
                f"{_fmt(percentile(lasts, 50))} / {_fmt(percentile(lasts, 99))}",
                f"same seeds, gossip.probe_schedule = random; {detected}/{total} detected by all",
                None,
            )
        )
    joins = target_cells.get(("join1000",))
    if joins:
        conv = _median_or_none([r.converged_at_s for r in joins.results])
        rows.append(
            (
                "(for information) convergence after 1,000 nodes join at once",
                f"{_fmt(conv)} s",
                f"every node joins through 3 seeds at t = 0, no loss; {len(joins.results)} seed",
                None,
            )
        )
    low_loss = [
        r
        for (n, cond, lifeguard), cell in table.items()
        if lifeguard and cond in ("loss 0 %", "loss 5 %")
        for r in cell.results
    ]
    if kill:
        low_loss += kill.results
    if low_loss:
        false_dead = sum(r.false_dead for r in low_loss)
        rows.append(
            (
                "zero false DEAD at <= 5 % loss (Lifeguard on)",
                str(false_dead),
                f"{len(low_loss)} runs: table rows loss 0/5 %, all N, and the N=100 1 % runs",
                false_dead == 0,
            )
        )
    stall = target_cells.get(("stall100",))
    if stall:
        frozen_dead = sum(r.frozen_dead for r in stall.results)
        suspected = statistics.median(r.false_suspect_nodes for r in stall.results)
        rows.append(
            (
                "2 s event-loop stall never declared DEAD",
                f"{frozen_dead} DEAD marks",
                f"N=100, 1 % loss, 5 nodes frozen 2 s each, {len(stall.results)} seeds "
                f"(median {suspected:.0f} healthy nodes suspected a run)",
                frozen_dead == 0,
            )
        )
    traffic = target_cells.get(("traffic50",))
    if traffic:
        bps = statistics.median(r.bytes_per_node_s for r in traffic.results)
        counted = traffic.results[0].pushpull_counted
        rows.append(
            (
                "traffic <= 250 B/s/node at 50 nodes",
                f"{bps:.0f} B/s",
                f"steady, no failures, {len(traffic.results)} seeds; "
                + (
                    "datagrams + push/pull" if counted else "datagrams only (push/pull not counted)"
                ),
                bps <= 250,
            )
        )
    big = table.get((1000, "loss 0 %", True))
    if big:
        bps = statistics.median(r.bytes_per_node_s for r in big.results)
        counted = big.results[0].pushpull_counted
        rows.append(
            (
                "traffic <= 1.7 KB/s/node at 1,000 nodes",
                f"{bps:.0f} B/s",
                f"steady from 10 s after convergence, 5 kills included, "
                f"{len(big.results)} seed(s); "
                + (
                    "datagrams + push/pull" if counted else "datagrams only (push/pull not counted)"
                ),
                bps <= 1700,
            )
        )
    return rows


def _bytes_note(counted: bool) -> str:
    return "datagrams + push/pull" if counted else "datagrams only (push/pull not counted)"


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


# ------------------------------------------------------------------ main


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.membership_sim", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N=10,100 only; fewer seeds")
    parser.add_argument("--seeds", type=int, help="seeds per cell [3; quick 1]")
    parser.add_argument("--big-seeds", type=int, default=1, help="seeds per N=1000 cell [1]")
    parser.add_argument("--sizes", help="comma-separated sizes for the tables [10,100,1000]")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-targets", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "membership_sim.md")
    parser.add_argument("--raw", type=Path, help="append every run here (JSON lines)")
    parser.add_argument(
        "--render", type=Path, nargs="+", help="no runs: build the tables from --raw files"
    )
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    sizes = [int(s) for s in (args.sizes or ("10,100" if args.quick else "10,100,1000")).split(",")]
    for n in sizes:
        KILLS.setdefault(n, max(1, n // 100))

    started = time.monotonic()
    commit = _commit()  # the code the workers import now, not whatever lands meanwhile
    load_before = _loadavg()
    print(
        f"membership_sim: sizes {sizes}, {seeds} seed(s) per cell, {args.workers} worker(s), "
        f"loadavg before {load_before}",
        flush=True,
    )
    jobs = [
        Job((n, name, lifeguard), table_scenario(n, cond, lifeguard, seed))
        for n in sizes
        for name, cond in CONDITIONS
        for lifeguard in (True, False)
        for seed in range(1, (args.big_seeds if n >= 1000 else seeds) + 1)
    ]
    if not args.no_targets:
        jobs += [Job(("target", *j.key), j.scenario) for j in target_jobs(seeds, args.quick)]
    if args.render:
        cells = load_raw(args.render)
        sizes = sorted({k[0] for k in cells if isinstance(k[0], int)})
        seeds = max(
            (len(c.results) for k, c in cells.items() if isinstance(k[0], int) and k[0] < 1000),
            default=seeds,
        )
    else:
        cells = run_jobs(jobs, args.workers, args.raw)
    table = {k: c for k, c in cells.items() if k[0] != "target"}
    target_cells = {k[1:]: c for k, c in cells.items() if k[0] == "target"}

    sections: list[str] = []
    for lifeguard in (True, False):
        rows = []
        for n in sizes:
            for name, _ in CONDITIONS:
                cell = table.get((n, name, lifeguard))
                if cell:
                    rows.append({"n": str(n), "cond": name, **cell_row(cell.results)})
        title = f"Lifeguard {'on' if lifeguard else 'off'}"
        text = markdown(rows, TABLE_COLUMNS)
        print(f"\n{title}\n{text}", flush=True)
        sections.append(f"## {title}\n\n{text}\n")

    if target_cells:
        target_rows = check_targets(target_cells, table)
        lines = [
            "| target | measured | how | met |",
            "| --- | --- | --- | --- |",
            *(
                f"| {t} | {m} | {h} | {'yes' if ok else 'no' if ok is not None else '-'} |"
                for t, m, h, ok in target_rows
            ),
        ]
        text = "\n".join(lines)
        print(f"\nTargets\n{text}", flush=True)
        sections.append(f"## Targets (hashicorp/memberlist LAN profile)\n\n{text}\n")

    elapsed = time.monotonic() - started
    load_after = _loadavg()
    any_result = next(iter(cells.values())).results[0]
    header = [
        "# membership_sim",
        "",
        f"Command: `python -m bench.membership_sim {' '.join(argv)}`",
        "",
        f"Core at commit {commit}. Sizes {sizes}; {seeds} seed(s) per table cell "
        f"({args.big_seeds} at N=1000); kills per run {KILLS}; "
        f"{args.workers} worker process(es); {elapsed:.0f} s wall; "
        f"loadavg before {load_before}, after {load_after} "
        "(simulated results do not depend on load).",
        "Network delay 1-5 ms; memberlist LAN timings (probe 1 s, timeout 500 ms, 3 indirect, "
        "suspicion mult 4 / max 6, gossip 200 ms to 3, retransmit mult 4, push/pull 30 s). "
        "Byte counts: "
        + (
            "datagrams + push/pull streams."
            if any_result.pushpull_counted
            else "datagrams only (the in-memory network does not count push/pull streams yet)."
        ),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + sections))
    print(f"\nmembership_sim: {elapsed:.0f} s; wrote {args.out}", flush=True)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %cI", "--", "relaymesh/membership"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    main(sys.argv[1:])
