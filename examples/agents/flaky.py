#!/usr/bin/env python3
"""Script agent: fails its first run, succeeds once replayed or retried.

The first run of a step (no marker file ``<input.marker_dir>/<step id>`` yet) writes
the marker, prints a traceback-like message on stderr and exits 3, a permanent
failure: with ``retry.max_attempts = 1`` the step becomes a dead letter whose error
carries that stderr tail. Any later run finds the marker and succeeds. The demo and
the console's browser tests use it to show a dead letter and its replay.
"""

import json
import os
import sys
from pathlib import Path

step = json.load(sys.stdin)
args = step.get("input") or {}
marker_dir = Path(args.get("marker_dir") or ".")
marker = marker_dir / f"flaky-{os.environ.get('RELAYMESH_STEP_ID', 'step')}"
if not marker.exists():
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("failed once\n")
    print("connecting to the report service...", file=sys.stderr)
    print("error: report service refused the upload (HTTP 503)", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"ok": True, "note": "succeeded after a replay"}))
