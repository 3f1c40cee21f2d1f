"""The huey instance and tasks the huey consumer imports (``bench.peers.huey_tasks.huey``).

SqliteHuey with its defaults (WAL, default ``synchronous``); the database file comes
from ``RELAYMESH_BENCH_HUEY_DB`` because the consumer imports this module by name.
"""

from __future__ import annotations

import os
import time

from huey import SqliteHuey

huey = SqliteHuey(
    "relaymesh-bench", filename=os.environ.get("RELAYMESH_BENCH_HUEY_DB", "huey-bench.db")
)


@huey.task()
def noop() -> None:
    """The no-op step: nothing to run, nothing stored."""
    return None


@huey.task()
def stamp(enqueued_s: float) -> float:
    """Submit-to-start latency in ms (one host, one clock: wall time is fine here)."""
    return (time.time() - enqueued_s) * 1000.0
