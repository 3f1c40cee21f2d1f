"""The pure rules behind the Host (421), Origin (403) and exposure refusals."""

from __future__ import annotations

import pytest

from relaymesh.exceptions import ConfigError
from relaymesh.exposure import check_gossip_exposure, check_http_exposure, is_loopback_host
from relaymesh.settings import GossipSettings, NodeSettings, Settings, TokenSettings, WebSettings
from relaymesh.web.origin import host_allowed, origin_allowed, split_host_header

KEY = "AAAAAAAAAAAAAAAAAAAAAA=="  # 16 zero bytes, base64


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("example.com:8701", ("example.com", 8701)),
        ("Example.COM.", ("example.com", None)),
        ("[::1]:80", ("::1", 80)),
        ("[::1]", ("::1", None)),
        ("[::1", ("::1", -1)),
        ("host:99999999", ("host", -1)),
        ("host:x", ("host", -1)),
    ],
)
def test_split_host_header(header: str, expected: tuple[str, int | None]) -> None:
    assert split_host_header(header) == expected


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (None, True),
        ("127.0.0.1:8701", True),
        ("127.9.9.9", True),
        ("localhost:1", True),
        ("app.localhost", True),
        ("[::1]:8701", True),
        ("10.1.2.3:8701", True),  # the address the connection came in on
        ("relay.example.com:8701", True),
        ("rebind.evil.example:8701", False),
        ("10.1.2.4:8701", False),
        ("", False),
    ],
)
def test_host_allowed(header: str | None, allowed: bool) -> None:
    got = host_allowed(header, local_addresses=["10.1.2.3"], allowed_hosts=["relay.example.com"])
    assert got is allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "127.0.0.1:8701", True),
        ("http://127.0.0.1:8701", "127.0.0.1:8701", True),
        ("https://relay.example.com", "relay.example.com", True),
        ("https://relay.example.com", "relay.example.com:443", True),
        ("http://relay.example.com", "relay.example.com:443", False),
        ("http://127.0.0.1:8702", "127.0.0.1:8701", False),
        ("http://evil.example", "127.0.0.1:8701", False),
        ("null", "127.0.0.1:8701", False),
        ("file://", "127.0.0.1:8701", False),
        ("http://127.0.0.1:notaport", "127.0.0.1:8701", False),
        ("http://127.0.0.1:8701", None, False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, host) is allowed


def test_loopback_names() -> None:
    assert is_loopback_host("::ffff:127.0.0.1")
    assert not is_loopback_host("::ffff:10.0.0.1")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("")
    assert not is_loopback_host("relay.example.com")


def settings(bind: str, *, keys: bool = False, plaintext: bool = False) -> Settings:
    return Settings(
        node=NodeSettings(bind=bind),
        gossip=GossipSettings(keys=[KEY] if keys else [], allow_plaintext=plaintext),
    )


def test_gossip_exposure() -> None:
    check_gossip_exposure(settings("127.0.0.1:7946"))
    check_gossip_exposure(settings("[::1]:7946"))
    check_gossip_exposure(settings("0.0.0.0:7946", keys=True))
    check_gossip_exposure(settings("0.0.0.0:7946", plaintext=True))
    for bind in ("0.0.0.0:7946", ":7946", "10.0.0.5:7946", "node-a:7946"):
        with pytest.raises(ConfigError, match="relaymesh keygen"):
            check_gossip_exposure(settings(bind))
    assert GossipSettings().allow_plaintext is False


def test_http_exposure() -> None:
    check_http_exposure("127.0.0.1:8701", Settings())
    with pytest.raises(ConfigError, match=r"\[web\] tokens"):
        check_http_exposure("0.0.0.0:8701", Settings())
    token = TokenSettings(name="ops", token_sha256="0" * 64, role="admin")
    check_http_exposure("0.0.0.0:8701", Settings(web=WebSettings(tokens=[token])))
