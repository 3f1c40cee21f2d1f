"""The composition root in one process: lifecycle, mesh view written to the store,
DEAD verdicts forwarded at once, settings reloads recorded, reload requests polled."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from relaymesh import node as node_module
from relaymesh.membership.protocol import MemberChanged
from relaymesh.model import MemberStatus
from relaymesh.node import Node
from relaymesh.ops import services
from relaymesh.settings import Settings, load_settings
from tests.conftest import async_wait_until


def make_settings(tmp_path: Path, **worker: object) -> Settings:
    return load_settings(
        None,
        {
            "node": {
                "name": "unit-node",
                "bind": "127.0.0.1:0",
                "http": "127.0.0.1:0",
                "store_url": f"sqlite:///{tmp_path / 'node.db'}",
                "state_dir": str(tmp_path),
            },
            "worker": {"poll_ms": 50, **worker},
            "maintenance": {"interval_ms": 100},
        },
    )


async def test_lifecycle_mesh_view_and_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "RELOAD_POLL_S", 0.1)
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_path)
    settings = make_settings(tmp_path)
    fresh = {"settings": settings}
    node = Node(settings, reload=lambda: fresh["settings"])
    await node.startup()
    try:
        assert node.http is not None and node.http.port != 0
        await async_wait_until(lambda: _ready(node), 10, what="store ready")
        store = node.store
        assert store is not None

        async def written() -> bool:
            return [m.name for m in await store.list_mesh_nodes()] == ["unit-node"]

        await async_wait_until(written, 10, what="the mesh view in the store")
        assert node.health()["ok"] is True

        fresh["settings"] = make_settings(tmp_path, slots=7)
        changed = await node.reload_settings("test")
        assert changed == ["worker.slots"]
        assert node.settings.worker.slots == 7
        history = await services.settings_history(store)
        assert history[0].fields == ("worker.slots",)

        # An operator's request (reload-settings --node unit-node) is picked up by polling.
        fresh["settings"] = make_settings(tmp_path, slots=9)
        await services.request_reload(store, node="unit-node", actor="cli:test")

        async def reloaded() -> bool:
            return node.settings.worker.slots == 9

        await async_wait_until(reloaded, 10, what="the polled reload")
    finally:
        node.request_stop()
        await node.shutdown()
    messages = []
    while True:
        try:
            messages.append(notify.recv(4096).decode())
        except BlockingIOError:
            break
    notify.close()
    assert messages[0].startswith("READY=1")
    assert any(m.startswith("RELOADING=1") for m in messages)
    assert messages[-1].startswith("STOPPING=1")


async def _ready(node: Node) -> bool:
    return node.store is not None and node.maintenance is not None


async def test_dead_verdict_reaches_maintenance_at_once(tmp_path: Path) -> None:
    node = Node(make_settings(tmp_path))
    seen: list[str] = []

    class FakeMaintenance:
        async def notify_member_dead(self, name: str) -> list[str]:
            seen.append(name)
            return []

    def event(name: str, status: MemberStatus) -> MemberChanged:
        return MemberChanged(
            name=name,
            address=("127.0.0.1", 1),
            status=status,
            previous=MemberStatus.ALIVE,
            incarnation=1,
            metadata={},
            at_ms=1,
        )

    # Before the store is open, verdicts are kept and forwarded once maintenance exists.
    node._on_member_changed(event("early", MemberStatus.DEAD))
    assert node._dead_pending == {"early"}
    node.maintenance = FakeMaintenance()
    node._on_member_changed(event("peer", MemberStatus.DEAD))
    node._on_member_changed(event("leaver", MemberStatus.LEFT))
    node._on_member_changed(event("flaky", MemberStatus.SUSPECT))
    node._on_member_changed(event("unit-node", MemberStatus.DEAD))  # ourselves: never

    async def forwarded() -> bool:
        return sorted(seen) == ["leaver", "peer"]

    await async_wait_until(forwarded, 5, what="DEAD/LEFT forwarded")
    for task in node._tasks:
        task.cancel()


async def test_dispatch_window_reaches_the_store_after_a_failed_write(tmp_path: Path) -> None:
    from relaymesh.exceptions import StoreUnavailableError
    from relaymesh.work.workflow import parse_workflow

    settings = load_settings(
        None,
        {
            **{k: v for k, v in make_settings(tmp_path).model_dump().items() if k == "node"},
            "worker": {"poll_ms": 50},
            # Written by hand below, and at shutdown; never by the timer during the test.
            "dispatch": {"summary_interval_ms": 3_600_000},
        },
    )
    node = Node(settings)
    await node.startup()
    try:
        await async_wait_until(lambda: _ready(node), 10, what="store ready")
        store = node.store
        assert store is not None
        spec = parse_workflow(
            '{"name": "w", "steps": [{"name": "a", "agent": "echo"},'
            ' {"name": "b", "agent": "echo"}]}',
            known_agents=services.known_agents(settings),
            settings=settings,
        )
        await services.submit_workflow(store, spec, "cli:test")

        async def counted() -> bool:
            return bool(node.worker.dispatch.node_stats().success == 2)

        await async_wait_until(counted, 10, what="2 outcomes in the window")
        real = store.write_dispatch_stats
        failures = []

        async def failing(*args: object, **kwargs: object) -> None:
            failures.append(1)
            raise StoreUnavailableError("injected")

        store.write_dispatch_stats = failing  # type: ignore[method-assign]
        await node._write_dispatch()
        assert failures == [1]
        assert node.metrics.store_errors.labels(op="dispatch_stats")._value.get() == 1
        store.write_dispatch_stats = real  # type: ignore[method-assign]
        await node._write_dispatch()  # the rows the failed write lost are sent again
        doc = await services.dispatch_summary(store)
        assert (doc["total"], doc["success"]) == (2, 2)
        assert doc["nodes"]["unit-node"]["rate"] == 1.0
        assert doc["agents"]["echo"]["success"] == 2
    finally:
        node.request_stop()
        await node.shutdown()
