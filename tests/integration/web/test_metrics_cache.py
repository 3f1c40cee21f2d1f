"""``/metrics`` needs no token, so a running node serves cached store figures: a burst
of scrapes reads the store once, and the figures catch up within the cache's TTL."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from relaymesh import node as node_module
from relaymesh.node import Node
from relaymesh.ops import services
from relaymesh.settings import Settings, load_settings
from relaymesh.work.workflow import parse_workflow
from tests.conftest import async_wait_until


def node_settings(tmp_path: Path) -> Settings:
    return load_settings(
        None,
        {
            "node": {
                "name": "metrics-node",
                "bind": "127.0.0.1:0",
                "http": "127.0.0.1:0",
                "store_url": f"sqlite:///{tmp_path / 'node.db'}",
                "state_dir": str(tmp_path),
            },
            "worker": {"enabled": False},
        },
    )


def ready_steps(text: str) -> float | None:
    found = re.search(r'^relaymesh_steps\{status="READY"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


async def test_scrapes_read_the_store_at_most_once_per_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "METRICS_STORE_TTL_S", 1.0)
    node = Node(node_settings(tmp_path))
    await node.startup()
    try:

        async def store_open() -> bool:
            return node.store is not None

        await async_wait_until(store_open, 10, what="the store")
        url = f"http://127.0.0.1:{node.http.port}/metrics"
        async with aiohttp.ClientSession() as session:

            async def scrape() -> str:
                async with session.get(url) as resp:
                    assert resp.status == 200
                    return await resp.text()

            first = await asyncio.gather(*(scrape() for _ in range(40)))
            assert node.metrics_store_refreshes == 1
            assert {ready_steps(t) for t in first} == {0.0}

            settings = Settings()
            spec = parse_workflow(
                '{"name": "w", "steps": [{"name": "a", "agent": "echo"}]}',
                known_agents=services.known_agents(settings),
                settings=settings,
            )
            assert node.store is not None
            await services.submit_workflow(node.store, spec, "cli:test")
            assert ready_steps(await scrape()) == 0.0  # cached: not read again yet
            assert node.metrics_store_refreshes == 1

            async def caught_up() -> bool:
                return ready_steps(await scrape()) == 1.0

            await async_wait_until(caught_up, 10, interval_s=0.1, what="the cached figures")
            # About one read per TTL, however many scrapes came in between.
            assert 2 <= node.metrics_store_refreshes <= 3
    finally:
        await node.shutdown()
