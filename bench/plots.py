"""The two PNG plots of docs/benchmarks.md, from ``bench/results/work_throughput.json``.

``python -m bench.plots`` redraws them from the last run's JSON (``make bench`` draws
them at the end of the run). Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "bench" / "results" / "work_throughput.json"
COLORS = {"sqlite": "tab:blue", "postgresql": "tab:orange"}


def throughput_plot(data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rm = data.get("relaymesh") or {"drain": []}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, backend in zip(axes, ("sqlite", "postgresql"), strict=True):
        color = COLORS[backend]
        rows = sorted(
            (r for r in rm["drain"] if r["backend"] == backend and r["config"] == "defaults"),
            key=lambda r: r["nodes"],
        )
        if rows:
            ax.plot(
                [r["nodes"] for r in rows],
                [r["median_per_s"] for r in rows],
                "o-",
                color=color,
                label="RelayMesh, default settings",
            )
        tuned = [r for r in rm["drain"] if r["backend"] == backend and r["config"] == "tuned"]
        if tuned:
            ax.plot(
                [r["nodes"] for r in tuned],
                [r["median_per_s"] for r in tuned],
                "s",
                color="black",
                label="RelayMesh, tuned",
            )
        ceiling = (data.get("ceilings") or {}).get(backend)
        if ceiling:
            ax.axhline(
                ceiling["median_per_s"],
                color="gray",
                linestyle="--",
                label=f"batched store ceiling ({ceiling['clients']} client(s))",
            )
            ax.axhline(
                0.45 * ceiling["median_per_s"],
                color="gray",
                linestyle=":",
                label="0.45x the ceiling (target)",
            )
        peers = data.get("peers") or {}
        if backend == "sqlite" and "huey_drain" in peers:
            ax.axhline(
                peers["huey_drain"]["median_per_s"], color="tab:green", label="huey (SqliteHuey)"
            )
        if backend == "postgresql" and "procrastinate_drain" in peers:
            ax.axhline(
                peers["procrastinate_drain"]["median_per_s"],
                color="tab:red",
                label="procrastinate",
            )
        ax.set_title(f"{backend}: no-op steps drained")
        ax.set_xlabel("nodes")
        ax.set_ylabel("steps/s (median of runs)")
        ax.set_xticks(sorted({r["nodes"] for r in rm["drain"]} or {1, 2, 4}))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def idle_plot(data: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idle = data["idle"]
    names = [f"n{i + 1}" for i in range(len(idle["cpu_pct"]))]
    fig, (cpu_ax, rss_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    cpu_ax.bar(names, idle["cpu_pct"], color="tab:blue")
    cpu_ax.axhline(0.5, color="gray", linestyle="--", label="target 0.5 %")
    cpu_ax.set_title("idle node CPU")
    cpu_ax.set_ylabel("% of one core")
    cpu_ax.legend(fontsize=8)
    rss_ax.bar(names, idle["rss_mb"], color="tab:orange")
    rss_ax.axhline(50, color="gray", linestyle="--", label="target 50 MB")
    rss_ax.set_title("idle node RSS")
    rss_ax.set_ylabel("MB")
    rss_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(data: dict[str, Any], directory: Path) -> list[Path]:
    out = []
    if data.get("relaymesh"):
        out.append(throughput_plot(data, directory / "bench-throughput.png"))
    if data.get("idle"):
        out.append(idle_plot(data, directory / "bench-idle.png"))
    return out


def main() -> None:
    data = json.loads(RESULTS_JSON.read_text())
    for path in write_all(data, REPO / "docs"):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
