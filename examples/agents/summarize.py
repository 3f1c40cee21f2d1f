#!/usr/bin/env python3
"""Script agent: merge every upstream result into one report.

Shows what a step receives: ``upstream`` maps each dependency's step name to its
result; ``RELAYMESH_NODE`` and ``RELAYMESH_ATTEMPT`` say where and which run this is.
"""

import json
import os
import sys

step = json.load(sys.stdin)
upstream = step.get("upstream") or {}
report = {
    "title": (step.get("input") or {}).get("title", "report"),
    "parts": sorted(upstream),
    "upstream": upstream,
    "node": os.environ.get("RELAYMESH_NODE"),
    "attempt": int(os.environ.get("RELAYMESH_ATTEMPT", "0")),
}
json.dump(report, sys.stdout)
