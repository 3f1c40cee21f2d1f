"""Start-up refusals for configurations that expose a node without protection.

A node that listens beyond loopback is reachable by whoever shares its network, so:

* gossip (UDP + TCP push/pull) on a non-loopback address needs ``[gossip] keys``;
  without them anyone who can send a datagram can forge membership. An operator who
  really wants that says so with ``gossip.allow_plaintext = true``.
* the HTTP API on a non-loopback address needs ``[web] tokens``; without them it would
  serve nobody but loopback clients anyway, which is never what such an operator meant.

Each check raises ``ConfigError`` with one line saying how to fix it. Pure: no sockets,
no name resolution (a host name other than ``localhost`` counts as non-loopback).
"""

from __future__ import annotations

import ipaddress

from relaymesh.exceptions import ConfigError
from relaymesh.settings import Settings

__all__ = ["check_gossip_exposure", "check_http_exposure", "is_loopback_host", "split_host"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def split_host(address: str) -> str:
    """The host part of ``host:port`` / ``[v6]:port`` / ``:port`` (empty: every address)."""
    host, sep, _port = address.rpartition(":")
    if not sep:
        host = address
    return host.strip("[]")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1`` and the
    IPv4-mapped form of a loopback address)."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_gossip_exposure(settings: Settings) -> None:
    """Refuse a non-loopback gossip address without keys (unless plaintext is allowed)."""
    bind = settings.node.bind
    gossip = settings.gossip
    if gossip.keys or gossip.allow_plaintext or is_loopback_host(split_host(bind)):
        return
    raise ConfigError(
        f"gossip address {bind} is not loopback and [gossip] keys is empty, so anyone on "
        "the network could forge membership: put the output of `relaymesh keygen` in "
        "RELAYMESH_GOSSIP__KEYS='[\"<key>\"]' (or [gossip] keys), or set "
        "gossip.allow_plaintext = true to run unauthenticated anyway"
    )


def check_http_exposure(bind: str, settings: Settings) -> None:
    """Refuse the HTTP API on a non-loopback address without any token."""
    if settings.web.tokens or is_loopback_host(split_host(bind)):
        return
    raise ConfigError(
        f"HTTP address {bind} is not loopback and [web] tokens is empty: add a token "
        "([[web.tokens]] name, token_sha256 = sha256 of a secret, role; see docs/security.md) "
        "or bind HTTP to 127.0.0.1"
    )
