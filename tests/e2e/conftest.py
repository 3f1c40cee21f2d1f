"""Fixtures for end-to-end tests: a ``Cluster`` factory on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Cluster

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """``make_cluster(settings=..., store_url=...)``: every cluster made is cleaned up."""
    made: list[Cluster] = []

    def make(
        *, settings: dict[str, dict[str, Any]] | None = None, store_url: str | None = None
    ) -> Cluster:
        root = tmp_path / f"cluster{len(made)}"
        url = store_url or f"sqlite:///{root / 'store.db'}"
        cluster = Cluster(root, url, settings or {})
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.pg),
    ]
)
def store_backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` (SQLite in the cluster's directory) or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        yield None
        return
    from tests.conftest import require_pg
    from tests.pgutil import fresh_pg_database_sync

    with fresh_pg_database_sync(require_pg()) as url:
        yield url
