"""Membership under churn: 8 ``relaymesh gossip`` processes on loopback while a seeded
chaos loop SIGKILLs, restarts (same name, port and state dir) and SIGTERMs (graceful
leave) random ones. Once the churn stops every live node's ``/api/members`` view must
agree: the same ALIVE set, which is exactly the running processes, and every stopped
node DEAD or LEFT.

One refinement: a node that (re)joined after another one stopped may not list that one
at all. Like memberlist, a node ignores DEAD/LEFT news about a member it never knew
(``Protocol._apply_down``), and a push/pull snapshot is merged the same way. So a
stopped node must be DEAD or LEFT or absent in every live view, never ALIVE or
SUSPECT, and DEAD or LEFT in at least one."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from tests.chaos.conftest import REPORT, chaos_seed
from tests.integration.membership.conftest import (
    GossipFactory,
    GossipProc,
    free_port,
    wait_for,
    write_seeds,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(300)]

N = 8
ACTIONS = 16
MIN_RUNNING = 4
# A loaded 2-core machine starts 8 Python processes at once slowly.
CONVERGE_TIMEOUT_S = 90.0


def views(procs: list[GossipProc]) -> dict[str, dict[str, str] | None]:
    return {p.name: p.members() for p in procs}


def test_views_agree_after_kill_restart_leave_churn(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    seed = chaos_seed()
    rng = random.Random(seed)
    t0 = time.monotonic()
    schedule: list[str] = []

    def log(message: str) -> None:
        line = f"[{time.monotonic() - t0:7.2f}s] {message}"
        schedule.append(line)
        print(line, flush=True)

    log(f"gossip churn: chaos seed {seed} (RELAYMESH_CHAOS_SEED={seed} replays the schedule)")
    ports = [free_port() for _ in range(N)]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    procs = {f"g{i}": gossip_procs(f"g{i}", seeds, port=p) for i, p in enumerate(ports)}
    state = dict.fromkeys(procs, "running")  # running | killed | left

    def running() -> list[GossipProc]:
        return [p for n, p in procs.items() if state[n] == "running"]

    def all_alive() -> bool:
        return all(
            (v := p.members()) is not None and all(v.get(n) == "ALIVE" for n in procs)
            for p in procs.values()
        )

    wait_for(all_alive, CONVERGE_TIMEOUT_S, f"{N} nodes to converge", list(procs.values()))
    log(f"{N} nodes converged")

    def kill(name: str) -> None:
        procs[name].signal(signal.SIGKILL)
        procs[name].wait(10)
        state[name] = "killed"
        log(f"SIGKILL {name}")

    def leave(name: str) -> None:
        procs[name].signal(signal.SIGTERM)
        code = procs[name].wait(15)  # a graceful leave is bounded in time
        assert code == 0, procs[name].log_text()[-2000:]
        state[name] = "left"
        log(f"SIGTERM {name} (left, exit {code})")

    def restart(name: str) -> None:
        was = state[name]
        procs[name].start()
        # SIGTERM before the interpreter has even loaded the command (a few hundred ms)
        # still ends the process by the signal's default action (clean to systemd, but
        # not an exit 0): stop only nodes that are up, as an operator's systemd would.
        wait_for(lambda: procs[name].members() is not None, 30, f"{name} to answer HTTP", [])
        state[name] = "running"
        log(f"restart {name} under its old name (it was {was})")

    counts = {"kill": 0, "leave": 0, "restart": 0}
    for _ in range(ACTIONS):
        up = sorted(n for n, s in state.items() if s == "running")
        down = sorted(n for n, s in state.items() if s != "running")
        choices = (["kill", "leave"] if len(up) > MIN_RUNNING else []) + (
            ["restart"] if down else []
        )
        action = rng.choice(choices)
        counts[action] += 1
        if action == "kill":
            kill(rng.choice(up))
        elif action == "leave":
            leave(rng.choice(up))
        else:
            restart(rng.choice(down))
        time.sleep(rng.uniform(0.2, 2.0))  # the injected fault schedule's gap

    # End with at least one node of each kind stopped, so both verdicts are checked.
    if "killed" not in state.values():
        kill(rng.choice(sorted(n for n, s in state.items() if s == "running")))
    if "left" not in state.values():
        leave(rng.choice(sorted(n for n, s in state.items() if s == "running")))
    log(f"churn over: {counts}; final state {state}")

    churn_end = time.monotonic()
    live = running()
    alive_set = {p.name for p in live}
    stopped = sorted(set(procs) - alive_set)

    def agreed() -> bool:
        for p in live:
            view = p.members()
            if view is None or not alive_set <= set(view):
                return False
            if {n for n, s in view.items() if s == "ALIVE"} != alive_set:
                return False
            if any(view.get(n, "LEFT") not in ("DEAD", "LEFT") for n in stopped):
                return False
        return True

    wait_for(agreed, CONVERGE_TIMEOUT_S, "every live view to agree", list(procs.values()))
    agree_s = time.monotonic() - churn_end
    final = views(live)
    log(f"views agree {agree_s:.1f}s after the churn: {json.dumps(final, sort_keys=True)}")
    stopped_seen = {
        n: sorted({v.get(n, "absent") for v in final.values() if v is not None}) for n in stopped
    }
    for name, seen in stopped_seen.items():
        assert {"DEAD", "LEFT"} & set(seen), (name, final)
    (tmp_path / "chaos-schedule.log").write_text("\n".join(schedule) + "\n")
    REPORT.append(
        "gossip churn: "
        + json.dumps(
            {
                "seed": seed,
                "actions": counts,
                "alive": sorted(alive_set),
                "stopped_seen_as": stopped_seen,
                "expected": {n: s for n, s in state.items() if s != "running"},
                "agree_after_churn_s": round(agree_s, 1),
                "wall_s": round(time.monotonic() - t0, 1),
            }
        )
    )
