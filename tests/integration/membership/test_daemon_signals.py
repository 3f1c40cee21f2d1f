"""SIGTERM never kills a daemon: at start-up it is held, after the leave it is ignored.

A ``relaymesh gossip`` in the chaos churn exited -15 (killed by SIGTERM) where 0 was
expected. Two windows had SIGTERM's default action: from process start to the moment the
event loop's handlers were installed, and from the end of the shutdown (the handlers put
back to SIG_DFL; then CPython's own finalization does the same) to the process's exit.
The child pauses at an exact moment (``pausehook/sitecustomize.py``) so the signal lands
inside a window every time, not by luck.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.membership.conftest import (
    GossipFactory,
    GossipProc,
    free_port,
    wait_for,
    write_seeds,
)

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 30.0
"""Three Python processes on a loaded 2-core machine."""
EXIT_TIMEOUT_S = 15.0
"""SIGTERM to exit: the leave is bounded by LEAVE_TIMEOUT_S (3 s), a node's drain is empty."""


def sees(observer: GossipProc, expected: dict[str, str]) -> bool:
    view = observer.members()
    return view is not None and all(view.get(n) == s for n, s in expected.items())


@pytest.mark.parametrize("daemon", ["gossip", "node"])
def test_repeated_sigterm_during_and_after_the_leave_exits_0(
    gossip_procs: GossipFactory, tmp_path: Path, daemon: str
) -> None:
    ports = [free_port() for _ in range(3)]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    leaver = gossip_procs("leaver", seeds, port=ports[0], daemon=daemon, pause_at="exit")
    stayers = [gossip_procs(f"s{i}", seeds, port=p) for i, p in enumerate(ports[1:])]
    procs = [leaver, *stayers]
    everyone = {p.name: "ALIVE" for p in procs}
    wait_for(lambda: all(sees(p, everyone) for p in procs), START_TIMEOUT_S, "convergence", procs)

    # systemd's stop, then a harness's terminate: the second lands during the leave or
    # just after it, both of which the process must take in its stride.
    leaver.signal(signal.SIGTERM)
    leaver.signal(signal.SIGTERM)
    # Paused in its last atexit callback: every line of the shutdown has run. Until the
    # fix this SIGTERM found the default action here and killed the process (-15).
    leaver.wait_paused(EXIT_TIMEOUT_S)
    leaver.signal(signal.SIGTERM)
    leaver.resume()
    assert leaver.wait(EXIT_TIMEOUT_S) == 0, leaver.log_text()[-2000:]

    # The LEAVE went out before all that: LEFT, not DEAD, everywhere.
    wait_for(lambda: all(sees(s, {"leaver": "LEFT"}) for s in stayers), 5, "LEFT", stayers)
    stopped = '"gossip_stopped"' if daemon == "gossip" else '"node_stopped"'
    assert leaver.log_text().count('"shutdown_requested"') == 1
    assert stopped in leaver.log_text()


def test_sigterm_while_starting_stops_before_joining_and_exits_0(
    gossip_procs: GossipFactory, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(2)]
    seeds = write_seeds(tmp_path / "seeds.txt", ports)
    stayer = gossip_procs("stayer", seeds, port=ports[1])
    # Paused while the gossip command reads its settings file, before its event loop
    # (and so its signal handlers) exists. Until the fix: killed by this SIGTERM (-15).
    starter = gossip_procs("starter", seeds, port=ports[0], pause_at="open:starter.toml")
    starter.wait_paused(START_TIMEOUT_S)
    starter.signal(signal.SIGTERM)
    starter.resume()
    assert starter.wait(EXIT_TIMEOUT_S) == 0, starter.log_text()[-2000:]

    log = starter.log_text()
    assert '"shutdown_requested"' in log and '"gossip_stopped"' in log, log[-2000:]
    # Asked to stop before it started: it never bound, joined or announced itself.
    assert '"membership_started"' not in log, log[-2000:]
    wait_for(lambda: stayer.members() is not None, START_TIMEOUT_S, "the stayer's HTTP", [stayer])
    assert stayer.members() == {"stayer": "ALIVE"}
