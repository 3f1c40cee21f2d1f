"""The simulator on small clusters: deterministic, detects kills, spares stalled nodes."""

from __future__ import annotations

from typing import Any

from relaymesh.sim import Freeze, Scenario, run_scenario


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc.pop("wall_s")
    return doc


def test_same_seed_same_result() -> None:
    scenario = Scenario(nodes=12, duration_s=40, seed=7, loss=0.05, kill=1)
    first = run_scenario(scenario).to_json()
    second = run_scenario(scenario).to_json()
    assert _comparable(first) == _comparable(second)


def test_different_seed_different_run() -> None:
    a = run_scenario(Scenario(nodes=12, duration_s=40, seed=1, loss=0.05))
    b = run_scenario(Scenario(nodes=12, duration_s=40, seed=2, loss=0.05))
    assert _comparable(a.to_json()) != _comparable(b.to_json())


def test_killed_node_is_detected_by_every_survivor() -> None:
    result = run_scenario(Scenario(nodes=16, duration_s=45, seed=3, kill=1))
    assert result.converged_at_s is not None
    [det] = result.detections
    assert det.detected, det
    assert det.marked_by == 15
    assert det.first_s is not None and det.last_s is not None
    # memberlist LAN timings: probe 1 s, suspicion 4 * log10(16) s at least, 6x at most.
    assert 1.0 < det.first_s <= det.last_s < 30.0
    assert result.false_dead == 0


def test_frozen_node_is_not_declared_dead_under_lifeguard() -> None:
    scenario = Scenario(
        nodes=16,
        duration_s=40,
        seed=5,
        kill=0,
        freezes=(Freeze(node=4, at_s=15.0, for_s=2.0),),
        lifeguard=True,
    )
    result = run_scenario(scenario)
    assert result.converged_at_s is not None
    assert result.frozen_dead == 0
    assert result.false_dead == 0


def test_traffic_and_convergence_are_reported() -> None:
    result = run_scenario(Scenario(nodes=10, duration_s=30, seed=1, kill=0))
    assert result.converged_at_s is not None and result.converged_at_s < 10
    assert result.messages_per_node_s > 0
    assert result.bytes_per_node_s > 0
    assert result.bytes_per_node_s_total >= result.bytes_per_node_s * 0.5
    assert result.events > 0


def test_bootstrap_starts_converged_and_still_detects_kills() -> None:
    scenario = Scenario(nodes=16, duration_s=45, seed=3, kill=1, bootstrap=True)
    result = run_scenario(scenario)
    assert result.bootstrapped
    assert result.converged_at_s == 0
    [det] = result.detections
    assert det.killed_at_s == 10.0  # the usual 10 s after convergence
    assert det.detected, det
    assert result.false_dead == 0
    # Only the kill produced events: no join storm (16 x 15 "new member" events).
    assert result.events < 16 * 15
    assert _comparable(result.to_json()) == _comparable(run_scenario(scenario).to_json())


def test_without_bootstrap_convergence_is_measured_from_real_joins() -> None:
    result = run_scenario(Scenario(nodes=16, duration_s=30, seed=3, kill=0))
    assert not result.bootstrapped
    assert result.converged_at_s is not None and result.converged_at_s > 0
    assert result.events >= 16 * 15


def test_run_scenario_restores_the_garbage_collector() -> None:
    import gc

    assert gc.isenabled()
    run_scenario(Scenario(nodes=4, duration_s=5, seed=1, kill=0))
    assert gc.isenabled()
    gc.disable()
    try:
        run_scenario(Scenario(nodes=4, duration_s=5, seed=1, kill=0))
        assert not gc.isenabled()
    finally:
        gc.enable()
