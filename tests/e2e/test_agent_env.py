"""A script agent run by a real ``relaymesh node run`` sees a minimal environment: PATH,
HOME, LANG, its ``env`` and ``pass_env``, the step variables, and nothing of the
node's own settings or secrets (gossip keys, the store URL with its password)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import RELAYMESH

DUMP = "import json, os, sys; json.load(sys.stdin); print(json.dumps(dict(os.environ)))\n"
STEP_VARS = {
    "RELAYMESH_STEP_ID",
    "RELAYMESH_WORKFLOW_ID",
    "RELAYMESH_ATTEMPT",
    "RELAYMESH_LEASE_EPOCH",
    "RELAYMESH_NODE",
}


def with_password(url: str | None) -> str | None:
    if url is None:
        return None
    return url.replace("postgresql://postgres@", "postgresql://postgres:store-pw-53cr3t@", 1)


def test_script_agent_sees_only_its_environment(
    make_cluster: ClusterFactory,
    store_backend: str | None,
    tmp_path: Path,
) -> None:
    key = subprocess.run([RELAYMESH, "keygen"], check=True, capture_output=True, text=True)
    gossip_key = key.stdout.strip()
    cluster = make_cluster(store_url=with_password(store_backend))
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP)
    with cluster.config.open("a") as fh:
        fh.write(
            "[agents.envdump]\n"
            f"command = [{json.dumps(sys.executable)}, {json.dumps(str(script))}]\n"
            'env = { GREETING = "hello" }\n'
            'pass_env = ["PASSED_ON"]\n'
        )
    cluster.env.update(
        {
            "RELAYMESH_GOSSIP__KEYS": json.dumps([gossip_key]),
            "RELAYMESH_GOSSIP__LABEL": "label-53cr3t",
            "CLOUD_API_SECRET": "cloud-53cr3t",
            "PASSED_ON": "yes",
        }
    )
    cluster.add_nodes("n1")
    cluster.start("n1")
    wid = cluster.submit({"name": "env", "steps": [{"name": "dump", "agent": "envdump"}]})
    doc = cluster.wait_workflow(wid, {"SUCCEEDED", "FAILED"}, 60)
    step = doc["steps"][0]
    assert step["status"] == "SUCCEEDED", step["error"]
    env: dict[str, str] = step["result"]

    assert env["GREETING"] == "hello"
    assert env["PASSED_ON"] == "yes"
    assert env["RELAYMESH_STEP_ID"] == step["id"]
    assert env["RELAYMESH_WORKFLOW_ID"] == wid
    assert env["RELAYMESH_NODE"] == "n1"
    assert env["PATH"] == cluster.env["PATH"]
    inherited = {n for n in ("HOME", "LANG") if n in cluster.env}
    # LC_CTYPE: the script's own Python may set it (PEP 538 locale coercion).
    allowed = {"PATH", "GREETING", "PASSED_ON", "LC_CTYPE", *inherited, *STEP_VARS}
    assert set(env) <= allowed, sorted(set(env) - allowed)
    assert {"PATH", "GREETING", "PASSED_ON", *inherited, *STEP_VARS} <= set(env)
    for secret in (gossip_key, "store-pw-53cr3t", "label-53cr3t", "cloud-53cr3t"):
        assert all(secret not in value for value in env.values()), secret
    assert os.environ.get("RELAYMESH_STEP_ID") is None
