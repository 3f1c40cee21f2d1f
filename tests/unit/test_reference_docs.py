"""The reference pages under docs/ are generated from the code and must match it."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

GENERATOR = Path(__file__).resolve().parents[2] / "tools" / "gen_reference.py"


@pytest.fixture(scope="module")
def generator() -> dict[str, object]:
    return runpy.run_path(str(GENERATOR))


@pytest.mark.parametrize("page", ["cli.md", "settings.md", "metrics.md", "api.md"])
def test_committed_reference_page_matches_the_code(
    generator: dict[str, object], page: str
) -> None:
    make = generator["PAGES"][page]  # type: ignore[index]
    committed = (Path(generator["DOCS"]) / page).read_text(encoding="utf-8")  # type: ignore[arg-type]
    assert committed == make(), f"docs/{page} is stale: run `make docs`"
