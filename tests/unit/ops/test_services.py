"""Operator services over a real (temporary) SQLite store: each change audited with
its actor, reads shaped for the CLI and the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaymesh.exceptions import InvalidStateError, NotFoundError
from relaymesh.model import MemberStatus, MeshNode, StepStatus
from relaymesh.ops import services
from relaymesh.settings import Settings
from relaymesh.store import Store, open_store
from relaymesh.work.workflow import parse_workflow

ACTOR = "cli:tester"
WORKFLOW = """{"name": "wf", "steps": [
  {"name": "a", "agent": "echo", "input": {"x": 1}},
  {"name": "b", "agent": "echo", "depends_on": ["a"]}]}"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path / 'ops.db'}")
    try:
        yield s
    finally:
        await s.close()


def spec():
    settings = Settings()
    return parse_workflow(WORKFLOW, known_agents=services.known_agents(settings), settings=settings)


async def test_submit_status_and_audit(store: Store) -> None:
    wid = await services.submit_workflow(store, spec(), ACTOR)
    wf, steps = await services.workflow_status(store, wid)
    assert wf.name == "wf"
    assert [s.status for s in steps] == [StepStatus.READY, StepStatus.PENDING]
    audit = await services.query_audit(store, task_id=wid)
    assert [(r.actor, r.action) for r in audit] == [(ACTOR, "submit")]


async def test_cancel_rejects_unknown_mode_and_unknown_workflow(store: Store) -> None:
    wid = await services.submit_workflow(store, spec(), ACTOR)
    with pytest.raises(InvalidStateError):
        await services.cancel_workflow(store, wid, "sideways", ACTOR)
    with pytest.raises(NotFoundError):
        await services.cancel_workflow(store, "nope", "soft", ACTOR)
    result = await services.cancel_workflow(store, wid, "soft", ACTOR)
    assert result.cancelled == 2
    actions = [r.action for r in await services.query_audit(store, task_id=wid)]
    assert actions == ["cancel", "submit"]  # the refused cancels wrote nothing


async def test_replay_batch_is_idempotent(store: Store) -> None:
    wid = await services.submit_workflow(store, spec(), ACTOR)
    await services.cancel_workflow(store, wid, "soft", ACTOR)
    first = await services.replay_batch(
        store, status=StepStatus.CANCELLED, limit=10, actor=ACTOR, workflow_id=wid
    )
    second = await services.replay_batch(
        store, status=StepStatus.CANCELLED, limit=10, actor=ACTOR, workflow_id=wid
    )
    assert first == 2  # both steps of the soft-cancelled workflow
    assert second == 0
    _, steps = await services.workflow_status(store, wid)
    assert [s.status for s in steps] == [StepStatus.READY, StepStatus.PENDING]


async def test_replay_batch_refuses_live_statuses(store: Store) -> None:
    with pytest.raises(InvalidStateError):
        await services.replay_batch(store, status=StepStatus.RUNNING, limit=1, actor=ACTOR)


async def test_reload_requests_are_polled_per_node(store: Store) -> None:
    now = await store.now_ms()
    members = [
        MeshNode(n, f"127.0.0.1:{i + 1}", MemberStatus.ALIVE, 1, {}, now)
        for i, n in enumerate("ab")
    ]
    await store.upsert_mesh_nodes("a", members)
    with pytest.raises(NotFoundError, match="'c' is not in the mesh"):
        await services.request_reload(store, node="c", actor=ACTOR)
    start = await services.latest_audit_id(store)
    since = await store.now_ms() - 1000
    everyone = await services.request_reload(store, node=None, actor=ACTOR)
    only_b = await services.request_reload(store, node="b", actor=ACTOR)
    assert everyone.target == services.RELOAD_ALL
    for_a = await services.pending_reload_requests(store, node="a", after_id=start, since_ms=since)
    for_b = await services.pending_reload_requests(store, node="b", after_id=start, since_ms=since)
    assert [r.id for r in for_a] == [everyone.id]
    assert [r.id for r in for_b] == [everyone.id, only_b.id]
    assert not await services.pending_reload_requests(
        store, node="b", after_id=only_b.id, since_ms=since
    )


async def test_stats_and_members(store: Store) -> None:
    now = await store.now_ms()
    await store.upsert_mesh_nodes(
        "a",
        [
            MeshNode("a", "127.0.0.1:1", MemberStatus.ALIVE, 1, {}, now),
            MeshNode("b", "127.0.0.1:2", MemberStatus.SUSPECT, 1, {}, now),
        ],
    )
    stats = await services.stats(store)
    assert stats.members == {"alive": 1, "suspect": 1, "dead": 0, "left": 0}
    assert set(stats.steps) == {s.value for s in StepStatus}
    assert [m.name for m in await services.list_members(store)] == ["a", "b"]


async def test_settings_history_records_field_names(store: Store) -> None:
    await services.record_settings_change(store, node="n1", fields=["worker.slots"])
    rows = await services.settings_history(store, limit=5)
    assert rows[0].node == "n1"
    assert rows[0].fields == ("worker.slots",)


def test_parse_time_accepts_iso_and_epoch_ms() -> None:
    assert services.parse_time_ms("1700000000000") == 1_700_000_000_000
    assert services.parse_time_ms("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert services.parse_time_ms("2023-11-14T22:13:20") == 1_700_000_000_000
    assert services.parse_time_ms("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    with pytest.raises(ValueError, match="ISO-8601"):
        services.parse_time_ms("yesterday")


def test_actors() -> None:
    assert services.cli_actor().startswith("cli:")
    assert services.web_actor("ops", "10.0.0.1") == "web:ops@10.0.0.1"
