"""Store URLs: which backend, and where.

``sqlite:///relative.db`` (relative to the working directory), ``sqlite:////abs/path.db``,
``postgresql://user:password@host:port/db`` (``postgres://`` too), and the multi-host form
``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write``: the driver
tries the hosts in order and keeps the first that matches ``target_session_attrs``, so
after a failover the node finds the new primary by itself. Pure parsing, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from relaymesh.exceptions import StoreError

__all__ = ["TARGET_SESSION_ATTRS", "StoreUrl", "parse_store_url", "per_host_urls", "redact_url"]

_SQLITE_PREFIX = "sqlite:///"
_MEMORY_PREFIX = "memory://"
_PG_SCHEMES = ("postgresql", "postgres")
_REDACTED = "***"
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
"""Query parameters whose value is a secret (libpq's names)."""
TARGET_SESSION_ATTRS = frozenset(
    {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}
)
"""What ``target_session_attrs`` may ask for (libpq's values, as asyncpg accepts them)."""


@dataclass(frozen=True, slots=True)
class StoreUrl:
    backend: str
    """``sqlite``, ``postgresql`` or ``memory``."""
    target: str
    """SQLite: the file path; PostgreSQL: the DSN as given; memory: the data's name."""
    display: str
    """The URL with any password removed, for logs and ``Store.url``."""


def _split(url: str) -> tuple[str, str, str, str]:
    """(``scheme://``, netloc, path, ``?query#fragment``) without parsing the netloc, so a
    host list like ``h1:5432,h2:5433`` (which ``urlsplit().port`` rejects) passes."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url, ""
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if at != -1:
            end = min(end, at)
    netloc, tail = rest[:end], rest[end:]
    cut = len(tail)
    for mark in "?#":
        at = tail.find(mark)
        if at != -1:
            cut = min(cut, at)
    return scheme + sep, netloc, tail[:cut], tail[cut:]


def _redact_query(tail: str) -> str:
    if not tail.startswith("?"):
        return tail
    query, hash_mark, fragment = tail[1:].partition("#")
    parts = []
    for item in query.split("&"):
        key, eq, _value = item.partition("=")
        secret = eq and unquote(key).strip().lower() in _SECRET_PARAMS
        parts.append(f"{key}={_REDACTED}" if secret else item)
    return "?" + "&".join(parts) + hash_mark + fragment


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***``: the one in the user part (also
    of a multi-host URL) and ``password`` / ``sslpassword`` in the query string."""
    scheme, netloc, path, tail = _split(url)
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:{_REDACTED}@{hosts}"
    return scheme + netloc + path + _redact_query(tail)


def _check_postgres(url: str) -> None:
    """A clear one-line error for a host list or option the driver would reject later."""
    _, netloc, _, tail = _split(url)
    hosts = netloc.rpartition("@")[2]
    for host in hosts.split(",") if hosts else []:
        name, port = host, ""
        if ":" in host and not host.endswith("]"):  # "[::1]" alone has no port
            name, _, port = host.rpartition(":")
        if port and not port.isdigit():
            raise StoreError(f"store URL {redact_url(url)!r}: bad port {port!r} in {host!r}")
        if not (name or port) and len(hosts.split(",")) > 1:
            raise StoreError(f"store URL {redact_url(url)!r}: empty host in the host list")
    query = tail[1:].partition("#")[0] if tail.startswith("?") else ""
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if unquote(key) == "target_session_attrs" and unquote(value) not in TARGET_SESSION_ATTRS:
            raise StoreError(
                f"store URL {redact_url(url)!r}: target_session_attrs must be one of "
                + ", ".join(sorted(TARGET_SESSION_ATTRS))
            )


def parse_store_url(url: str) -> StoreUrl:
    """Raises ``StoreError`` for an unknown scheme, an empty path, a bad port in the host
    list or an unknown ``target_session_attrs``."""
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        if not path:
            raise StoreError(f"store URL {url!r} names no database file")
        return StoreUrl("sqlite", path, redact_url(url))
    if url.startswith(_MEMORY_PREFIX):
        # This process's memory (store/memory.py): tests and one-process demos only.
        return StoreUrl("memory", url[len(_MEMORY_PREFIX) :], url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _PG_SCHEMES:
        _check_postgres(url)
        return StoreUrl("postgresql", url, redact_url(url))
    raise StoreError(
        f"unsupported store URL {redact_url(url)!r}: use sqlite:///relative.db, "
        "sqlite:////abs/path.db or postgresql://user@host:port/db "
        "(several hosts: postgresql://user@h1:port,h2:port/db?target_session_attrs=read-write)"
    )


def per_host_urls(url: str) -> list[str]:
    """A multi-host URL as one single-host URL per host, in order (the same user, path
    and query). A single-host URL is returned as it is. Lets a connector give each host
    its own connect timeout, as libpq does, where asyncpg spends one timeout on the list."""
    scheme, netloc, path, tail = _split(url)
    userinfo, at, hosts = netloc.rpartition("@")
    names = hosts.split(",")
    if len(names) < 2:
        return [url]
    return [f"{scheme}{userinfo}{at}{host}{path}{tail}" for host in names]
