"""`make bench`: every benchmark in turn, each printing medians of several runs.

Each module in ``SUITES`` has ``main(argv: list[str]) -> None`` that prints its
tables to stdout and writes them (Markdown) to ``bench/results/<suite>.md``.
``python -m bench.run_all --only membership_sim --quick`` runs a subset, smaller.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import subprocess
import sys
import time

SUITES = ("membership_sim", "membership_real", "work_throughput", "retention_bigstore")


def describe_machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = subprocess.run(["nproc"], check=False, capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {cores} cores, Python {platform.python_version()}, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=SUITES)
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller sizes")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}", flush=True)
    for name in args.only or SUITES:
        started = time.monotonic()
        print(f"\n=== {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        module.main(["--quick"] if args.quick else [])
        print(f"=== {name} took {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
