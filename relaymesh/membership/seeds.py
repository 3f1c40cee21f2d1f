"""The seeds file: where a starting node finds the cluster.

Owns the format: one ``host:port`` per line (``[v6addr]:port`` for IPv6), ``#``
starts a comment, blank lines are ignored. A bad line raises ``ConfigError``
naming the file, the line number and the line, so an operator fixes it at once.
"""

from __future__ import annotations

from pathlib import Path

from relaymesh.exceptions import ConfigError
from relaymesh.membership.state import Address

__all__ = ["load_seeds", "parse_address", "parse_seeds"]


def parse_address(text: str) -> Address:
    """``host:port`` (or ``[v6]:port``) as an ``Address``; ``ValueError`` when malformed."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected host:port")
        if ":" in host:
            raise ValueError("an IPv6 address needs brackets: [addr]:port")
    if not host or any(c.isspace() for c in host):
        raise ValueError("missing or malformed host")
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError("port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_seeds(text: str, source: str = "seeds") -> list[str]:
    """The ``host:port`` entries of a seeds file's text, in order, without duplicates."""
    seeds: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            host, port = parse_address(line)
        except ValueError as exc:
            raise ConfigError(f"{source} line {number}: {exc}: {raw.strip()!r}") from exc
        entry = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if entry not in seeds:
            seeds.append(entry)
    return seeds


def load_seeds(path: str | Path) -> list[str]:
    """``parse_seeds`` of a file; ``ConfigError`` when it cannot be read."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read seeds file {file}: {exc}") from exc
    return parse_seeds(text, source=f"seeds file {file}")
