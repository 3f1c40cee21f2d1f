#!/usr/bin/env python3
"""Script agent: count the words of the upstream ``fetch`` step's text.

Protocol (INTERFACE.md): the step as JSON on stdin, the result as JSON on stdout,
exit 0 for success, exit 75 for a transient failure worth retrying.
"""

import json
import sys

step = json.load(sys.stdin)
text = ""
for result in (step.get("upstream") or {}).values():
    if isinstance(result, dict):
        text += " " + str(result.get("text", ""))
words = text.split()
json.dump({"words": len(words), "distinct": len({w.lower() for w in words})}, sys.stdout)
