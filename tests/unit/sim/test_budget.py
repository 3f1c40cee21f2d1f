"""The simulator refuses, in one line, a cluster that cannot fit in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymesh.exceptions import ConfigError
from relaymesh.sim.__main__ import main
from relaymesh.sim.budget import available_bytes, check_memory, estimated_bytes


def test_memory_grows_with_the_square_of_the_cluster() -> None:
    assert estimated_bytes(10_000) - estimated_bytes(0) == 100 * (
        estimated_bytes(1_000) - estimated_bytes(0)
    )


def test_a_cluster_too_big_for_memory_is_refused_with_the_sizes() -> None:
    check_memory(1_000, available=2**30)
    with pytest.raises(ConfigError, match=r"10000 simulated nodes need about 22\.9 GiB"):
        check_memory(10_000, available=16 * 2**30)


def test_meminfo_is_read_and_its_absence_allows_the_run(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:    2048 kB\n")
    assert available_bytes(meminfo) == 2048 * 1024
    assert available_bytes(tmp_path / "missing") is None


def test_the_command_prints_one_line_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "1000000", "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1000000 simulated nodes need") and err.count("\n") == 1
