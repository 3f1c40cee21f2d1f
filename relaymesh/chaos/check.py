"""``python -m relaymesh.chaos.check``: verify the promises over a recorded history.

    python -m relaymesh.chaos.check --store URL [--journal FILE] [--events FILE]
        [--node-log FILE ...] [--settings relaymesh.toml] [--reclaim-bound-ms MS]
        [--claim-grace-ms MS] [--expect-success] [--json]

Reads the store (any URL ``relaymesh`` accepts) and the optional files described in
``history.py``, checks every promise of ``promises.py`` and prints a table (or one
JSON document with ``--json``). Exit status: 0 every promise held, 1 at least one
was broken (each violation names the promise, the step, the node and the history
that broke it), 2 a source could not be read or the arguments are wrong.

The reclaim bound defaults to the one the settings imply (``--settings``, else the
built-in defaults): see ``reclaim_bound_from_settings``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relaymesh.chaos.history import load_history
from relaymesh.chaos.promises import PROMISES, Bounds, Report, check_history, percentile
from relaymesh.exceptions import RelayMeshError
from relaymesh.membership.suspicion import suspicion_timeout_ms
from relaymesh.settings import Settings, load_settings

__all__ = ["main", "reclaim_bound_from_settings", "render_json", "render_table"]

SCHEDULING_SLACK_MS = 1000
"""Added to the reclaim bound: processes on a busy machine are not scheduled at once."""


def reclaim_bound_from_settings(settings: Settings, members: int) -> int:
    """The longest a killed node's steps may stay RUNNING: one probe round to notice it
    (probe interval + probe timeout), the longest suspicion timeout (Lifeguard starts
    at ``suspicion_max_timeout_mult`` times the minimum and only shrinks), one
    maintenance interval for the leader to act on the DEAD verdict, and
    ``SCHEDULING_SLACK_MS``. Never longer than the lease plus one maintenance interval,
    when expiry would reclaim anyway."""
    g, m = settings.gossip, settings.maintenance
    min_ms = suspicion_timeout_ms(g.suspicion_mult, members, g.probe_interval_ms)
    max_ms = g.suspicion_max_timeout_mult * min_ms if g.lifeguard else min_ms
    by_verdict = g.probe_interval_ms + g.probe_timeout_ms + max_ms + m.interval_ms
    by_expiry = settings.worker.lease_ms + m.interval_ms
    return min(by_verdict, by_expiry) + SCHEDULING_SLACK_MS


def _stats(values: list[int]) -> dict[str, int | None]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}


def render_json(report: Report, bounds: Bounds) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "steps": dict(report.steps),
        "faults": dict(report.faults),
        "promises": {
            p: {
                "checked": report.checked[p],
                "violations": sum(1 for v in report.violations if v.promise == p),
            }
            for p in PROMISES
        },
        "violations": [v.to_json() for v in report.violations],
        "reclaim_ms": _stats(report.reclaim_ms),
        "failover_recovery_ms": _stats(report.failover_recovery_ms),
        "minority_claims_while_alive": report.minority_claims,
        "bounds": {
            "reclaim_bound_ms": bounds.reclaim_bound_ms,
            "claim_grace_ms": bounds.claim_grace_ms,
        },
    }


def render_table(report: Report, bounds: Bounds) -> str:
    doc = render_json(report, bounds)
    lines = [f"{'promise':<20} {'checked':>8} {'broken':>7}  verdict"]
    for name, row in doc["promises"].items():
        verdict = "ok" if row["violations"] == 0 else "BROKEN"
        lines.append(f"{name:<20} {row['checked']:>8} {row['violations']:>7}  {verdict}")
    lines.append("")
    lines.append("steps:  " + ", ".join(f"{k} {v}" for k, v in sorted(doc["steps"].items())))
    faults = ", ".join(f"{k} {v}" for k, v in sorted(doc["faults"].items())) or "none recorded"
    lines.append(f"faults: {faults}")
    for key, label in (
        ("reclaim_ms", "reclaim after kill"),
        ("failover_recovery_ms", "primary stopped to first claim after promotion"),
    ):
        s = doc[key]
        if s["n"]:
            lines.append(f"{label}: n={s['n']} p50={s['p50']} ms p99={s['p99']} ms")
    lines.append(f"reclaim bound: {bounds.reclaim_bound_ms} ms")
    for v in report.violations:
        lines.append("")
        lines.append(f"BROKEN {v.promise}: step {v.step_id} node {v.node}: {v.message}")
        lines += [f"    {h}" for h in v.history]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m relaymesh.chaos.check",
        description="Check RelayMesh's promises over a recorded history.",
    )
    p.add_argument("--store", required=True, help="store URL (sqlite:///... or postgresql://...)")
    p.add_argument("--journal", type=Path, help="script agents' journal (JSON lines)")
    p.add_argument("--events", type=Path, help="the harness's events (JSON lines)")
    p.add_argument("--node-log", type=Path, action="append", default=[], help="a node's JSON log")
    p.add_argument("--settings", type=Path, help="the nodes' settings file (for the bounds)")
    p.add_argument("--reclaim-bound-ms", type=int, help="override the reclaim bound")
    p.add_argument("--claim-grace-ms", type=int, default=1000)
    p.add_argument("--expect-success", action="store_true", help="every step must SUCCEED")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        history = asyncio.run(
            load_history(
                args.store, journal=args.journal, events=args.events, node_logs=args.node_log
            )
        )
        if args.reclaim_bound_ms is not None:
            reclaim = int(args.reclaim_bound_ms)
        else:
            members = len({s.owner_node for s in history.steps if s.owner_node}) or 1
            reclaim = reclaim_bound_from_settings(load_settings(args.settings), members)
    except RelayMeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bounds = Bounds(reclaim, args.claim_grace_ms, args.expect_success)
    report = check_history(history, bounds)
    if args.json:
        print(json.dumps(render_json(report, bounds)))
    else:
        print(render_table(report, bounds))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
