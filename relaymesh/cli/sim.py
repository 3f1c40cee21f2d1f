"""``relaymesh sim``: the membership simulator, with the options of ``python -m relaymesh.sim``.

Parses, builds a ``Scenario``, runs it, renders: no logic here. Every option is also a
``RELAYMESH_SIM_<OPTION>`` environment variable (``--slow-frac``: ``RELAYMESH_SIM_SLOW_FRAC``).
"""

from __future__ import annotations

import click

from relaymesh.cli.common import echo_json, fail
from relaymesh.exceptions import ConfigError

__all__ = ["register", "sim"]


def register(main: click.Group) -> None:
    main.add_command(sim)


@click.command("sim")
@click.option("--nodes", type=int, default=100, show_default=True, envvar="RELAYMESH_SIM_NODES")
@click.option(
    "--duration",
    type=float,
    default=60.0,
    show_default=True,
    help="Simulated seconds.",
    envvar="RELAYMESH_SIM_DURATION",
)
@click.option(
    "--loss",
    type=float,
    default=0.0,
    show_default=True,
    help="Packet loss, 0..1.",
    envvar="RELAYMESH_SIM_LOSS",
)
@click.option(
    "--delay-ms",
    default="1-5",
    show_default=True,
    help="Network delay MS or MS-MS.",
    envvar="RELAYMESH_SIM_DELAY_MS",
)
@click.option(
    "--kill",
    type=int,
    default=1,
    show_default=True,
    help="Nodes SIGKILLed.",
    envvar="RELAYMESH_SIM_KILL",
)
@click.option(
    "--kill-at",
    type=float,
    default=None,
    help="Kill time, s [10 s after convergence].",
    envvar="RELAYMESH_SIM_KILL_AT",
)
@click.option(
    "--slow-frac", type=float, default=0.0, show_default=True, envvar="RELAYMESH_SIM_SLOW_FRAC"
)
@click.option(
    "--slow-delay-ms", default="500-2500", show_default=True, envvar="RELAYMESH_SIM_SLOW_DELAY_MS"
)
@click.option(
    "--freeze",
    multiple=True,
    metavar="NODE:AT_S:FOR_S",
    help="Stall a node.",
    envvar="RELAYMESH_SIM_FREEZE",
)
@click.option(
    "--partition",
    multiple=True,
    metavar="AT_S:FOR_S:FRACTION",
    help="Cut nodes off a while.",
    envvar="RELAYMESH_SIM_PARTITION",
)
@click.option(
    "--join-spread", type=float, default=0.0, show_default=True, envvar="RELAYMESH_SIM_JOIN_SPREAD"
)
@click.option(
    "--bootstrap",
    is_flag=True,
    help="Start every node with the converged view (no join storm; convergence not measured).",
    envvar="RELAYMESH_SIM_BOOTSTRAP",
)
@click.option(
    "--no-lifeguard",
    is_flag=True,
    help="Switch Lifeguard off.",
    envvar="RELAYMESH_SIM_NO_LIFEGUARD",
)
@click.option("--seed", type=int, default=1, show_default=True, envvar="RELAYMESH_SIM_SEED")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON document on stdout.",
    envvar="RELAYMESH_SIM_JSON",
)
def sim(
    *,
    nodes: int,
    duration: float,
    loss: float,
    delay_ms: str,
    kill: int,
    kill_at: float | None,
    slow_frac: float,
    slow_delay_ms: str,
    freeze: tuple[str, ...],
    partition: tuple[str, ...],
    join_spread: float,
    bootstrap: bool,
    no_lifeguard: bool,
    seed: int,
    as_json: bool,
) -> None:
    """Simulate N membership nodes on a lossy network on a virtual clock."""
    from relaymesh.sim import (
        Scenario,
        parse_freeze,
        parse_partition,
        parse_range_ms,
        render_text,
        run_scenario,
    )
    from relaymesh.sim.budget import check_memory

    try:
        scenario = Scenario(
            nodes=nodes,
            duration_s=duration,
            seed=seed,
            loss=loss,
            delay_ms=parse_range_ms(delay_ms),
            kill=kill,
            kill_at_s=kill_at,
            slow_frac=slow_frac,
            slow_delay_ms=parse_range_ms(slow_delay_ms),
            freezes=tuple(parse_freeze(f) for f in freeze),
            partitions=tuple(parse_partition(p) for p in partition),
            lifeguard=not no_lifeguard,
            join_spread_s=join_spread,
            bootstrap=bootstrap,
        )
        check_memory(scenario.nodes)
    except ConfigError as exc:
        fail(str(exc))
        return
    result = run_scenario(scenario)
    if as_json:
        echo_json(result.to_json())
    else:
        click.echo(render_text(result))
