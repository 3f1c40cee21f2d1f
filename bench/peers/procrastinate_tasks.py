"""The procrastinate app its worker imports (``bench.peers.procrastinate_tasks.app``).

The PostgreSQL connection string comes from ``RELAYMESH_BENCH_PROCRASTINATE_DSN``
because the worker imports this module by name.
"""

from __future__ import annotations

import os

import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get(
            "RELAYMESH_BENCH_PROCRASTINATE_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        )
    )
)


@app.task(name="noop")
def noop() -> None:
    """The no-op step."""
    return None
