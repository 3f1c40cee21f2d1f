"""The operations assets under deploy/: Prometheus rules (checked and unit-tested by
promtool), the scrape config, the Grafana dashboard (valid JSON, only metric names a
node exports) and the systemd unit (``systemd-analyze verify``).

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it and sets
``RELAYMESH_REQUIRE_PROMTOOL=1``, which turns a missing promtool into a failure)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relaymesh.ops.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "relaymesh-rules.yml"
RULE_TESTS = PROMETHEUS / "relaymesh-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "relaymesh.json"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))

ALERTS = {
    "RelayMeshNodeDead",
    "RelayMeshDeadLetterGrowth",
    "RelayMeshQueueLag",
    "RelayMeshLeaseConflictsRising",
    "RelayMeshBreakerOpen",
    "RelayMeshLowDispatchSuccessRate",
    "RelayMeshStoreErrors",
}
"""The alerts operators were promised (issue 11); more may exist."""
PROMETHEUS_BUILTINS = {"up"}
_METRIC_RE = re.compile(r"\b(relaymesh_[a-z0-9_]+)")
_ALERT_RE = re.compile(r"^\s*- alert:\s*(\w+)\s*$", re.MULTILINE)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not installed (Debian package prometheus)"
        if os.environ.get("RELAYMESH_REQUIRE_PROMTOOL") == "1":
            pytest.fail(reason + " (RELAYMESH_REQUIRE_PROMTOOL=1 makes this a failure)")
        pytest.skip(reason)
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def exported_names() -> set[str]:
    """Every sample name a node's /metrics can carry, from its registry."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def dashboard_exprs(doc: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v.get("definition", "") for v in doc["templating"]["list"]]
    return exprs


def test_rules_pass_promtool_check() -> None:
    result = run(promtool(), "check", "rules", str(RULES), cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = run(promtool(), "test", "rules", str(RULE_TESTS), cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool_check() -> None:
    result = run(promtool(), "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_promised_alert_exists_and_is_unit_tested() -> None:
    defined = set(_ALERT_RE.findall(RULES.read_text()))
    assert defined >= ALERTS, f"missing alerts: {sorted(ALERTS - defined)}"
    tested = set(re.findall(r"alertname:\s*(\w+)", RULE_TESTS.read_text()))
    assert defined <= tested, f"alerts without a unit test: {sorted(defined - tested)}"


def test_rules_use_only_metrics_a_node_exports() -> None:
    used = set(_METRIC_RE.findall(RULES.read_text()))
    assert used, "no relaymesh_ metric in the rules"
    unknown = used - exported_names()
    assert not unknown, f"rules name metrics no node exports: {sorted(unknown)}"


def test_dashboard_is_valid_json_over_exported_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "relaymesh" and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    # Laid out on Grafana's 24-column grid without two panels on one cell.
    taken: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
    graphs = [p for p in doc["panels"] if p["type"] != "row"]
    assert all(p.get("targets") for p in graphs), "a panel without a query"
    used = {name for expr in dashboard_exprs(doc) for name in _METRIC_RE.findall(expr)}
    unknown = used - exported_names()
    assert not unknown, f"the dashboard names metrics no node exports: {sorted(unknown)}"
    # The dispatch statistics and the V2 mesh metrics are on it.
    for name in (
        "relaymesh_dispatch_success_rate",
        "relaymesh_dispatch_total",
        "relaymesh_mesh_nodes_total",
        "relaymesh_running_steps_by_owner_status",
        "relaymesh_oldest_dead_node_age_ms",
    ):
        assert name in used, name


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit_verifies(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    # The unit runs /opt/relaymesh/.venv/bin/relaymesh, which verify insists exists:
    # point it at this checkout's, nothing else changed.
    here = str(Path(sys.executable).with_name("relaymesh"))
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/relaymesh/.venv/bin/relaymesh", here))
    result = run(analyze, "verify", "--man=no", str(copy), cwd=tmp_path)
    # verify exits 0 on unknown keys too, with a warning naming the file: none allowed.
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not complaints, result.stderr
