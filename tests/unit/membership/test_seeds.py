"""Seeds file parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymesh.exceptions import ConfigError
from relaymesh.membership.seeds import load_seeds, parse_address, parse_seeds


def test_comments_blanks_duplicates_and_ipv6() -> None:
    text = "# cluster\n\n10.0.0.1:7946\n  node-b:7000  # second\n[::1]:7946\n10.0.0.1:7946\n"
    assert parse_seeds(text) == ["10.0.0.1:7946", "node-b:7000", "[::1]:7946"]


def test_parse_address() -> None:
    assert parse_address("h:1") == ("h", 1)
    assert parse_address("[fe80::1]:7946") == ("fe80::1", 7946)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("hostonly", "expected host:port"),
        ("h:0", "port must be"),
        ("h:99999", "port must be"),
        ("h:abc", "port must be"),
        (":7946", "missing or malformed host"),
        ("::1:7946", "an IPv6 address needs brackets"),
        ("[::1]7946", "expected \\[ipv6\\]:port"),
    ],
)
def test_bad_line_names_the_line(line: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"seeds line 2: {why}"):
        parse_seeds(f"ok:1\n{line}\n")


def test_load_seeds(tmp_path: Path) -> None:
    path = tmp_path / "seeds.txt"
    path.write_text("a:1\nb:2\n")
    assert load_seeds(path) == ["a:1", "b:2"]
    path.write_text("a:1\nbad\n")
    with pytest.raises(ConfigError, match=f"seeds file {path} line 2"):
        load_seeds(path)
    with pytest.raises(ConfigError, match="cannot read seeds file"):
        load_seeds(tmp_path / "missing.txt")
