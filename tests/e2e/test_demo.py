"""``relaymesh demo`` (what ``make run`` runs) works from a fresh directory."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.harness import RELAYMESH

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_demo_runs_the_sample_workflow_and_stops(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")}
    result = subprocess.run(
        [RELAYMESH, "demo", "--exit-when-done", "--timeout-s", "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    if result.returncode != 0:
        for log in sorted((tmp_path / "demo-data").glob("node-*.log")):
            lines = log.read_text(errors="replace").splitlines()
            print(f"--- {log.name} ---\n" + "\n".join(lines[-25:]))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "http://127.0.0.1:" in out
    assert "workflow SUCCEEDED" in out
    assert "one-time admin token" in out and "console: http://127.0.0.1:" in out
    assert "demo-dead-letter" in out and "/#/dead" in out
    assert "stopped" in out
    assert (tmp_path / "demo-data" / "demo.db").exists()
    for name in ("node-1.log", "node-2.log", "node-3.log"):
        assert "node_stopped" in (tmp_path / "demo-data" / name).read_text()
