"""``python -m relaymesh.sim``: one simulation run, printed as text or one JSON document.

Example: ``python -m relaymesh.sim --nodes 1000 --loss 0.05 --kill 1 --duration 300``.
The same options as ``relaymesh sim``.
"""

from __future__ import annotations

import argparse
import json
import sys

from relaymesh.exceptions import ConfigError
from relaymesh.sim.budget import check_memory
from relaymesh.sim.report import render_text
from relaymesh.sim.runner import run_scenario
from relaymesh.sim.scenario import Scenario, parse_freeze, parse_partition, parse_range_ms


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m relaymesh.sim",
        description="Simulate N membership nodes on a lossy network on a virtual clock.",
    )
    parser.add_argument("--nodes", type=int, default=100, help="cluster size [100]")
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds [60]")
    parser.add_argument("--loss", type=float, default=0.0, help="packet loss, 0..1 [0]")
    parser.add_argument("--delay-ms", default="1-5", help="network delay MS or MS-MS [1-5]")
    parser.add_argument("--kill", type=int, default=1, help="nodes SIGKILLed [1]")
    parser.add_argument(
        "--kill-at", type=float, default=None, help="kill time, s [10 s after convergence]"
    )
    parser.add_argument("--slow-frac", type=float, default=0.0, help="fraction of slow nodes [0]")
    parser.add_argument(
        "--slow-delay-ms", default="500-2500", help="how late slow nodes handle packets [500-2500]"
    )
    parser.add_argument(
        "--freeze", action="append", default=[], metavar="NODE:AT_S:FOR_S", help="stall a node"
    )
    parser.add_argument(
        "--partition",
        action="append",
        default=[],
        metavar="AT_S:FOR_S:FRACTION",
        help="cut a random fraction of the nodes off",
    )
    parser.add_argument("--join-spread", type=float, default=0.0, help="spread joins over S [0]")
    parser.add_argument(
        "--bootstrap",
        action="store_true",
        help="start every node with the converged view (no join storm; convergence not measured)",
    )
    parser.add_argument("--no-lifeguard", action="store_true", help="switch Lifeguard off")
    parser.add_argument("--seed", type=int, default=1, help="random seed [1]")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    return Scenario(
        nodes=args.nodes,
        duration_s=args.duration,
        seed=args.seed,
        loss=args.loss,
        delay_ms=parse_range_ms(args.delay_ms),
        kill=args.kill,
        kill_at_s=args.kill_at,
        slow_frac=args.slow_frac,
        slow_delay_ms=parse_range_ms(args.slow_delay_ms),
        freezes=tuple(parse_freeze(f) for f in args.freeze),
        partitions=tuple(parse_partition(p) for p in args.partition),
        lifeguard=not args.no_lifeguard,
        join_spread_s=args.join_spread,
        bootstrap=args.bootstrap,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = scenario_from_args(args)
        check_memory(scenario.nodes)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = run_scenario(scenario)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(render_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
