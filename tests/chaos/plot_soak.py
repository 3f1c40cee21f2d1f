"""Draw a soak's samples (tests/chaos/soak.py) as one PNG: RSS, open fds and store
connections per node over time.

    .venv/bin/python -m tests.chaos.plot_soak SAMPLES.jsonl docs/reliability-soak.png

Needs matplotlib (``pip install -e '.[chaos]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.chaos.soak import growth, load


def plot(samples_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = load(samples_path)
    nodes = sorted({s["node"] for s in samples})
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    labels = (
        ("rss_kb", "RSS (MiB)", 1 / 1024),
        ("fds", "open fds", 1.0),
        ("store_conns", "store connections", 1.0),
    )
    for ax, (metric, label, scale) in zip(axes, labels, strict=True):
        for node in nodes:
            mine = [s for s in samples if s["node"] == node]
            ax.plot([s["t_s"] / 60 for s in mine], [s[metric] * scale for s in mine], label=node)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="lower right", ncol=len(nodes))
    axes[-1].set_xlabel("minutes")
    report = growth(samples_path)
    worst_rss = max((v["growth"] for k, v in report.items() if k.endswith("/rss_kb")), default=0.0)
    verdict = "pass" if all(v["ok"] for v in report.values()) else "FAIL"
    fig.suptitle(
        f"soak: {len(nodes)} nodes, {verdict}; worst RSS growth after warm-up {worst_rss:+.1%}"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    plot(Path(sys.argv[1]), Path(sys.argv[2]))
