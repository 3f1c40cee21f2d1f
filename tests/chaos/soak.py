"""The soak's resource samples: node RSS, open file descriptors, store connections.

``SoakSampler`` writes one JSON line per node every ``RELAYMESH_SOAK_SAMPLE_S`` (10 s):
``{"t_s", "node", "pid", "rss_kb", "fds", "store_conns"}``; ``store_conns`` counts the
PostgreSQL client sessions from the node's host address on the current primary.
``growth(path)`` compares, per node and metric, the median of the first window after
the warm-up with the median of the last window: growth beyond 10 % fails (for the
small integer counts, fds and connections, a difference of at most 2 is allowed too:
a connection pool breathes with the load). ``tests/chaos/plot_soak.py`` draws them.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.chaos.hosts import HostCluster
from tests.pgcluster import PgCluster

METRICS = ("rss_kb", "fds", "store_conns")
ALLOWED_GROWTH = 0.10
ABSOLUTE_SLACK = {"rss_kb": 0, "fds": 2, "store_conns": 2}


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class SoakSampler(threading.Thread):
    def __init__(self, cluster: HostCluster, pg: PgCluster | None, out: Path) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.cluster = cluster
        self.pg = pg
        self.out = out
        self.interval_s = float(os.environ.get("RELAYMESH_SOAK_SAMPLE_S", "10"))
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def _conns(self) -> Counter[str]:
        if self.pg is None:
            return Counter()
        from tests.chaos.schedule import pg_sessions

        try:
            sessions = pg_sessions(self.pg.server_url(self.pg.primary))
        except Exception:
            return Counter()
        return Counter(str(s["addr"]) for s in sessions)

    def sample(self) -> None:
        conns = self._conns()
        t_s = round(time.monotonic() - self.t0, 1)
        with self.out.open("a", encoding="utf-8") as fh:
            for name, node in self.cluster.nodes.items():
                if not node.running():
                    continue
                try:
                    rss = _rss_kb(node.pid)
                    fds = len(os.listdir(f"/proc/{node.pid}/fd"))
                except OSError:
                    continue
                address = self.cluster.host_node(name).address
                line = {
                    "t_s": t_s,
                    "node": name,
                    "pid": node.pid,
                    "rss_kb": rss,
                    "fds": fds,
                    "store_conns": conns.get(address, 0),
                }
                fh.write(json.dumps(line) + "\n")

    def run(self) -> None:
        self.sample()
        while not self.halt.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(timeout=30)


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def growth(path: Path, warmup_frac: float = 1 / 6, window_frac: float = 1 / 6) -> dict[str, Any]:
    """Per ``node/metric``: baseline (median of the first window after warm-up), final
    (median of the last window), growth and ``ok``. A node whose pid changed (it was
    restarted) is measured over its last process only."""
    samples = load(path)
    end_s = max(s["t_s"] for s in samples)
    warm_s, window_s = end_s * warmup_frac, end_s * window_frac
    report: dict[str, Any] = {}
    for node in sorted({s["node"] for s in samples}):
        mine = [s for s in samples if s["node"] == node]
        last_pid = mine[-1]["pid"]
        mine = [s for s in mine if s["pid"] == last_pid]
        for metric in METRICS:
            base = [s[metric] for s in mine if warm_s <= s["t_s"] < warm_s + window_s]
            final = [s[metric] for s in mine if s["t_s"] >= end_s - window_s]
            if not base or not final:
                continue
            b, f = statistics.median(base), statistics.median(final)
            grew = (f - b) / b if b else 0.0
            ok = f <= b * (1 + ALLOWED_GROWTH) or f - b <= ABSOLUTE_SLACK[metric]
            report[f"{node}/{metric}"] = {
                "baseline": b,
                "final": f,
                "growth": round(grew, 4),
                "ok": ok,
            }
    return report
