"""``relaymesh submit --idempotency-key`` from 20 processes at once, and ``workflows``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import RELAYMESH

pytestmark = pytest.mark.slow

WORKFLOW = {"name": "nightly", "steps": [{"name": "a", "agent": "echo"}]}


def test_twenty_concurrent_submits_with_one_key_make_one_workflow(
    make_cluster: ClusterFactory, store_backend: str | None, tmp_path: Path
) -> None:
    cluster = make_cluster(store_url=store_backend)
    cluster.cli("store", "migrate")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    procs = [
        subprocess.Popen(
            [RELAYMESH, "submit", str(wf), "--idempotency-key", "nightly-2026-12-02"],
            env=cluster.env,
            cwd=cluster.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, [err for _, err in outputs]
    ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(ids) == 1
    repeats = [err for _, err in outputs if "already submitted" in err]
    assert len(repeats) == 19
    listed = cluster.cli_json("workflows")
    assert [(w["id"], w["idempotency_key"]) for w in listed] == [(ids.pop(), "nightly-2026-12-02")]
    assert listed[0]["steps"] == {"READY": 1} and listed[0]["schedule"] is None


def test_workflows_filters_and_pages(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    cluster = make_cluster()
    cluster.cli("store", "migrate")
    first = cluster.submit(WORKFLOW)
    second = cluster.submit({**WORKFLOW, "name": "other"})
    assert [w["id"] for w in cluster.cli_json("workflows")] == [second, first]
    assert [w["id"] for w in cluster.cli_json("workflows", "--name", "nightly")] == [first]
    assert cluster.cli_json("workflows", "--status", "succeeded") == []
    page = cluster.cli("workflows", "--limit", "1", "--json")
    assert [w["id"] for w in json.loads(page.stdout)] == [second]
    cursor = page.stderr.split("--cursor", 1)[1].strip()
    rest = cluster.cli_json("workflows", "--limit", "1", "--cursor", cursor)
    assert [w["id"] for w in rest] == [first]
    table = cluster.cli("workflows").stdout
    assert first in table and "READY=1" in table
    bad = cluster.cli("workflows", "--cursor", "garbage", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")
