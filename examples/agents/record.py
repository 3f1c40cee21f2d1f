#!/usr/bin/env python3
"""Script agent: an external side effect fenced by the lease epoch.

Appends ``start`` and ``done`` lines (step id, attempt, lease epoch, node) to the
journal file named by ``input.journal``, sleeping ``input.seconds`` in between
(``input.first_run_seconds`` instead when the journal has no earlier start of this
step: a run that is slow the first time and quick once retried elsewhere). A
real agent would send the epoch along with its side effect (``RELAYMESH_LEASE_EPOCH``)
so that the receiving system can refuse writes from an older epoch: the same fencing
the store applies to commits. The end-to-end tests use this journal as evidence of
which worker did what.
"""

import json
import os
import sys
import time

step = json.load(sys.stdin)
args = step.get("input") or {}
journal = args.get("journal")
me = {
    "step_id": os.environ.get("RELAYMESH_STEP_ID"),
    "attempt": int(os.environ.get("RELAYMESH_ATTEMPT", "0")),
    "epoch": int(os.environ.get("RELAYMESH_LEASE_EPOCH", "0")),
    "node": os.environ.get("RELAYMESH_NODE"),
    "pid": os.getpid(),
}


def note(phase: str) -> None:
    if journal:
        with open(journal, "a", encoding="utf-8") as fh:
            line = {"phase": phase, **me, "at_ms": time.time_ns() // 1_000_000}
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def started_before() -> bool:
    try:
        with open(journal, encoding="utf-8") as fh:
            return any(
                json.loads(line).get("step_id") == me["step_id"] for line in fh if line.strip()
            )
    except (OSError, ValueError, TypeError):
        return False


seconds = float(args.get("seconds", 0))
if "first_run_seconds" in args and not started_before():
    seconds = float(args["first_run_seconds"])
note("start")
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    time.sleep(0.05)
note("done")
json.dump(me, sys.stdout)
