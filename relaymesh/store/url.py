"""Store URLs: which backend, and where.

``sqlite:///relative.db`` (relative to the working directory), ``sqlite:////abs/path.db``,
``postgresql://user:password@host:port/db`` (``postgres://`` too). Pure parsing, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from relaymesh.exceptions import StoreError

__all__ = ["StoreUrl", "parse_store_url", "redact_url"]

_SQLITE_PREFIX = "sqlite:///"
_PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class StoreUrl:
    backend: str
    """``sqlite`` or ``postgresql``."""
    target: str
    """SQLite: the file path; PostgreSQL: the DSN as given."""
    display: str
    """The URL with any password removed, for logs and ``Store.url``."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_store_url(url: str) -> StoreUrl:
    """Raises ``StoreError`` for an unknown scheme or an empty path."""
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        if not path:
            raise StoreError(f"store URL {url!r} names no database file")
        return StoreUrl("sqlite", path, url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _PG_SCHEMES:
        return StoreUrl("postgresql", url, redact_url(url))
    raise StoreError(
        f"unsupported store URL {redact_url(url)!r}: use sqlite:///relative.db, "
        "sqlite:////abs/path.db or postgresql://user@host:port/db"
    )
