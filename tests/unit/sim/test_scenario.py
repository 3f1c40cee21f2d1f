"""Scenario specs from the command line, and the command line itself."""

from __future__ import annotations

import json

import pytest

from relaymesh.exceptions import ConfigError
from relaymesh.sim import Freeze, Partition, Scenario, parse_freeze, parse_partition, parse_range_ms
from relaymesh.sim.__main__ import main
from relaymesh.sim.report import percentile


def test_parse_specs() -> None:
    assert parse_range_ms("500-2500") == (500, 2500)
    assert parse_range_ms("7") == (7, 7)
    assert parse_freeze("3:30:2") == Freeze(3, 30.0, 2.0)
    assert parse_partition("60:20:0.3") == Partition(60.0, 20.0, 0.3)


@pytest.mark.parametrize("bad", ["x", "5-1", "-3"])
def test_bad_range(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_range_ms(bad)


@pytest.mark.parametrize("bad", ["3:30", "a:1:2", "3:30:0", "3:30:2:1"])
def test_bad_freeze(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_freeze(bad)


def test_scenario_checks() -> None:
    with pytest.raises(ConfigError):
        Scenario(nodes=1)
    with pytest.raises(ConfigError):
        Scenario(nodes=5, kill=4)
    with pytest.raises(ConfigError):
        Scenario(nodes=5, loss=1.0)
    with pytest.raises(ConfigError):
        Scenario(nodes=5, freezes=(Freeze(9, 1, 1),))


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_command_line_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "8", "--duration", "30", "--kill", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"]["nodes"] == 8
    assert doc["detected_all"] is True
    assert doc["detections"][0]["gap_s"] is not None


def test_command_line_text_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "6", "--duration", "20", "--freeze", "2:5:2", "--loss", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "first DEAD" in out and "false SUSPECT" in out
    assert main(["--nodes", "1"]) == 1
    assert "error:" in capsys.readouterr().err


def test_relaymesh_sim_command() -> None:
    from click.testing import CliRunner

    from relaymesh.cli.main import main as relaymesh

    result = CliRunner().invoke(relaymesh, ["sim", "--nodes", "6", "--duration", "20", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["scenario"]["nodes"] == 6
    bad = CliRunner().invoke(relaymesh, ["sim", "--nodes", "1"])
    assert bad.exit_code == 1


def test_bootstrap_option_on_both_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from relaymesh.cli.main import main as relaymesh

    args = ["--nodes", "8", "--duration", "20", "--kill", "1", "--bootstrap", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bootstrapped"] is True and doc["scenario"]["bootstrap"] is True
    result = CliRunner().invoke(relaymesh, ["sim", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["bootstrapped"] is True
    assert main(["--nodes", "8", "--duration", "20", "--bootstrap"]) == 0
    assert "(bootstrapped)" in capsys.readouterr().out
