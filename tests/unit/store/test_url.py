from __future__ import annotations

import pytest

from relaymesh.exceptions import StoreError
from relaymesh.store.url import parse_store_url, redact_url


@pytest.mark.parametrize(
    ("url", "backend", "target"),
    [
        ("sqlite:///relaymesh.db", "sqlite", "relaymesh.db"),
        ("sqlite:///./relaymesh.db", "sqlite", "./relaymesh.db"),
        ("sqlite:////var/lib/rm/x.db", "sqlite", "/var/lib/rm/x.db"),
        ("postgresql://u@h:5432/db", "postgresql", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql", "postgres://u@h/db"),
    ],
)
def test_parse(url: str, backend: str, target: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.backend, parsed.target) == (backend, target)


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://x.db", "sqlite:///", "", "x.db"])
def test_unknown_scheme(url: str) -> None:
    with pytest.raises(StoreError):
        parse_store_url(url)


def test_password_is_redacted() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert parse_store_url("postgresql://u:secret@h/db").display == "postgresql://u:***@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
