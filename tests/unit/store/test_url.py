from __future__ import annotations

import pytest

from relaymesh.exceptions import StoreError
from relaymesh.store.url import parse_store_url, per_host_urls, redact_url


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


MULTI = "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write"


def test_multi_host_url_is_postgres_and_kept_whole() -> None:
    parsed = parse_store_url(MULTI)
    assert (parsed.backend, parsed.target, parsed.display) == ("postgresql", MULTI, MULTI)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql://u:***@h1:5432,h2:5433/db?target_session_attrs=read-write",
        ),
        (
            "postgresql://u@h1,h2/db?password=secret&target_session_attrs=primary",
            "postgresql://u@h1,h2/db?password=***&target_session_attrs=primary",
        ),
        (
            "postgres://u:p%40ss@[::1]:5432,h2/db?sslpassword=k&PASSWORD=x&sslmode=require#f",
            "postgres://u:***@[::1]:5432,h2/db?sslpassword=***&PASSWORD=***&sslmode=require#f",
        ),
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h1:1,h2:2/db", "postgresql://h1:1,h2:2/db"),
        ("sqlite:////var/lib/rm/x.db", "sqlite:////var/lib/rm/x.db"),
    ],
)
def test_redact_multi_host_and_query_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in parse_store_url(url).display


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://u:pw@h1:5432,h2:x/db", "bad port 'x'"),
        ("postgresql://u@h1:5432,/db", "empty host"),
        ("postgresql://u:pw@h1,h2/db?target_session_attrs=writable", "target_session_attrs"),
    ],
)
def test_bad_multi_host_url_is_one_clear_error(url: str, words: str) -> None:
    with pytest.raises(StoreError, match=words) as raised:
        parse_store_url(url)
    assert "pw" not in str(raised.value).replace("***", "")


def test_per_host_urls_keep_user_path_and_query() -> None:
    assert per_host_urls("postgresql://u:pw@h1:1,[::1]:2/db?target_session_attrs=primary") == [
        "postgresql://u:pw@h1:1/db?target_session_attrs=primary",
        "postgresql://u:pw@[::1]:2/db?target_session_attrs=primary",
    ]
    assert per_host_urls("postgresql://u@h/db") == ["postgresql://u@h/db"]
