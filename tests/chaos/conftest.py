"""Fixtures and reporting for the chaos scenarios (``make chaos``).

The clusters come from the end-to-end harness (``make_cluster``), the gossip processes
from the membership integration fixture (``gossip_procs``) and PostgreSQL databases
from ``tests.pgutil``: reused, not copied. Each scenario adds lines to ``REPORT`` (fault
schedule seed, counts, wall times); they are printed at the end of the run, so
``make chaos`` shows them without ``-s``.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.e2e.conftest import make_cluster
from tests.integration.membership.conftest import gossip_procs
from tests.pgutil import pg_store_url

__all__ = ["REPORT", "chaos_seed", "gossip_procs", "make_cluster", "pg_store_url"]

REPORT: list[str] = []


def chaos_seed() -> int:
    """The fault schedule's seed: ``RELAYMESH_CHAOS_SEED`` to replay one, else random."""
    env = os.environ.get("RELAYMESH_CHAOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 32)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("chaos report")
        for line in REPORT:
            terminalreporter.write_line(line)
