"""SQLite outages under real ``relaymesh node run`` processes and real files.

* the file locked by another process for 10 s (``BEGIN EXCLUSIVE``),
* the disk full (a small tmpfs; root and ``mount`` needed: skipped with the reason
  otherwise, a failure when ``RELAYMESH_REQUIRE_MOUNT=1``),
* the file moved away and back, and deleted, under a running node.

Every step is held by a node while the fault starts: its agent waits on a gate file
and then returns a result, so the commit lands in the outage. Each case counts store
errors, logs them clearly, loses no step and, where the file can come back, recovers
by itself; a file that is gone is refused (``/healthz`` 503 with the reason) and
never written to behind the operator's back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import Cluster
from tests.e2e.test_health import healthz, hold_lock, release_lock, wait_healthz

pytestmark = pytest.mark.slow

REQUIRE_MOUNT = os.environ.get("RELAYMESH_REQUIRE_MOUNT") == "1"

GATE_AGENT = """
import json, os, sys, time
step = json.load(sys.stdin)
args = step["input"]
while not os.path.exists(args["gate"]):
    time.sleep(0.02)
print(json.dumps({"step": step["step_id"], "pad": "x" * args.get("pad", 0)}))
"""

LONG_LEASE = {"worker": {"lease_ms": 120_000, "heartbeat_ms": 1_000, "slots": 4}}


def gated_cluster(
    make_cluster: ClusterFactory,
    root: Path,
    *,
    store_url: str | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> tuple[Cluster, Path]:
    c = make_cluster(settings={**LONG_LEASE, **(settings or {})}, store_url=store_url)
    agent = root / "gate_agent.py"
    agent.write_text(GATE_AGENT)
    with c.config.open("a") as fh:
        command = json.dumps([sys.executable, str(agent)])
        fh.write(f"[agents.gate]\ncommand = {command}\nconcurrency = 8\n")
    return c, root / "gate.open"


def submit_gated(c: Cluster, gate: Path, n: int, pad: int = 0) -> str:
    steps = [
        {"name": f"s{i}", "agent": "gate", "input": {"gate": str(gate), "pad": pad}}
        for i in range(n)
    ]
    return c.submit({"name": "outage", "steps": steps})


def wait_running(c: Cluster, wid: str, n: int) -> None:
    def running() -> bool:
        steps = c.status(wid)["steps"]
        return sum(s["status"] == "RUNNING" for s in steps) == n

    wait_until(running, 30, interval_s=0.1, what=f"{n} steps RUNNING")


def store_errors(c: Cluster, name: str) -> float:
    """``relaymesh_store_errors_total`` summed over its labels, from ``/metrics``."""
    import urllib.request

    url = f"http://127.0.0.1:{c.nodes[name].http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^relaymesh_store_errors_total\{[^}]*\} (\S+)$", text, re.M)
    )


def assert_all_succeeded_once(c: Cluster, wid: str, n: int, pad: int = 0) -> None:
    doc = c.wait_workflow(wid, {"SUCCEEDED"}, 60)
    steps = doc["steps"]
    assert len(steps) == n
    for s in steps:
        assert s["status"] == "SUCCEEDED", s
        assert s["attempt"] == 1, s  # committed by the run that started before the fault
        assert s["result"] == {"step": s["id"], "pad": "x" * pad}


# -- locked ----------------------------------------------------------------------------


def test_file_locked_by_another_process_for_ten_seconds(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    db = tmp_path / "locked.db"
    c, gate = gated_cluster(make_cluster, tmp_path, store_url=f"sqlite:///{db}")
    c.add_nodes("n1", "n2")
    c.start("n1", "n2")
    wid = submit_gated(c, gate, 4)
    wait_running(c, wid, 4)
    errors_before = store_errors(c, "n1") + store_errors(c, "n2")

    locker = hold_lock(db)
    try:
        gate.touch()  # the agents finish now: their commits meet the lock
        locked_until = time.monotonic() + 10.0
        while time.monotonic() < locked_until:
            assert c.nodes["n1"].running() and c.nodes["n2"].running()
            assert healthz(c, "n1")[0] == 200  # 10 s < node.store_unhealthy_after_s
        errors = store_errors(c, "n1") + store_errors(c, "n2")
    finally:
        release_lock(locker)

    assert errors > errors_before
    logs = c.log_tail("n1", 2000) + c.log_tail("n2", 2000)
    assert '"event": "store_error"' in logs
    assert "database is locked" in logs
    assert_all_succeeded_once(c, wid, 4)


# -- disk full ---------------------------------------------------------------------------


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    why = ""
    if shutil.which("mount") is None:
        why = "no mount command"
    else:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        why = result.stderr.strip() if result.returncode != 0 else ""
    if why:
        reason = f"cannot mount a small tmpfs for the disk-full case: {why}"
        if REQUIRE_MOUNT:
            pytest.fail(reason + " (RELAYMESH_REQUIRE_MOUNT=1 makes this a failure)")
        pytest.skip(reason)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    return filler


def test_disk_full_then_space_freed(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    volume = tmp_path / "small"
    mount_tmpfs(volume, "8m")
    pad = 512 * 1024  # each result needs new pages: no room for them once full
    c, gate = gated_cluster(make_cluster, tmp_path, store_url=f"sqlite:///{volume / 'store.db'}")
    try:
        c.add_nodes("n1")
        c.start("n1")
        wid = submit_gated(c, gate, 3, pad=pad)
        wait_running(c, wid, 3)
        errors_before = store_errors(c, "n1")

        filler = fill(volume)
        gate.touch()
        wait_until(
            lambda: "disk is full" in c.log_tail("n1", 400),
            30,
            interval_s=0.1,
            what="the commit to fail with a full disk",
        )
        assert store_errors(c, "n1") > errors_before
        # A submit meets the same wall: one clear line, exit 1, nothing half-written.
        big = {"name": "w", "steps": [{"name": "a", "agent": "echo", "input": "x" * pad}]}
        refused = c.cli("submit", "-", stdin=json.dumps(big), check=False)
        assert refused.returncode != 0
        assert "disk is full" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert c.nodes["n1"].running()
        assert c.status(wid)["workflow"]["status"] == "RUNNING"

        filler.unlink()  # space again: the pending commits go through by themselves
        assert_all_succeeded_once(c, wid, 3, pad=pad)
        assert len(c.cli_json("tasks")) == 3  # the refused submit left nothing
    finally:
        c.close()  # before the unmount: a node holding the file keeps the mount busy
        subprocess.run(["umount", str(volume)], check=False)


# -- moved away, deleted -----------------------------------------------------------------


def wal_state(db: Path) -> tuple[int, int]:
    st = os.stat(f"{db}-wal")
    return st.st_size, st.st_mtime_ns


def test_file_moved_away_is_refused_and_recovers_when_it_is_back(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    db = tmp_path / "moved.db"
    c, gate = gated_cluster(
        make_cluster,
        tmp_path,
        store_url=f"sqlite:///{db}",
        settings={"node": {"state_dir": str(tmp_path)}},
    )
    c.add_nodes("n1")
    c.start("n1")
    wid = submit_gated(c, gate, 2)
    wait_running(c, wid, 2)

    aside = tmp_path / "moved.db.aside"
    os.rename(db, aside)
    doc = wait_healthz(c, "n1", 503, 15)
    [reason] = doc["reasons"]
    assert reason.startswith("store refused: sqlite store file ")
    assert "was deleted or moved away under this node" in reason
    assert '"event": "store_refused"' in c.log_tail("n1", 400)

    gate.touch()  # the agents finish; their commits must not go anywhere yet
    before = wal_state(db)
    wait_until(lambda: store_errors(c, "n1") >= 3, 15, interval_s=0.1, what="refused store calls")
    assert wal_state(db) == before  # nothing written to the file while it was away
    assert c.nodes["n1"].running()

    os.rename(aside, db)
    doc = wait_healthz(c, "n1", 200, 15)
    assert doc["reasons"] == []
    assert_all_succeeded_once(c, wid, 2)


def test_file_deleted_under_a_running_node_is_refused_without_a_crash(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    db = tmp_path / "deleted.db"
    c, gate = gated_cluster(
        make_cluster,
        tmp_path,
        store_url=f"sqlite:///{db}",
        settings={"node": {"state_dir": str(tmp_path)}},
    )
    c.add_nodes("n1")
    c.start("n1")
    wid = submit_gated(c, gate, 2)
    wait_running(c, wid, 2)
    pid = c.nodes["n1"].pid

    db.unlink()
    doc = wait_healthz(c, "n1", 503, 15)
    assert "was deleted or moved away under this node" in doc["reasons"][0]
    gate.touch()
    before = wal_state(db)
    errors = store_errors(c, "n1")
    wait_until(
        lambda: store_errors(c, "n1") >= errors + 3, 15, interval_s=0.1, what="more refusals"
    )
    # Still the same process, still refusing: no crash loop, no write to the unlinked
    # file (its WAL is untouched) and no new file made at the path behind our back.
    assert c.nodes["n1"].running() and c.nodes["n1"].pid == pid
    assert wal_state(db) == before
    assert not db.exists()
    assert healthz(c, "n1")[0] == 503
    # It still stops cleanly when told to: the drain cannot release, and is bounded.
    c.signal("n1", signal.SIGTERM)
    assert c.wait_exit("n1", 30) == 0
    assert wid
