"""DNS rebinding and cross-site writes, over real HTTP: a foreign ``Host`` gets 421 on
every route, a write with a foreign ``Origin`` gets 403, and neither writes anything."""

from __future__ import annotations

import aiohttp

from relaymesh.ops import services
from relaymesh.settings import Settings, WebSettings
from relaymesh.store import Store
from tests.integration.web.conftest import serve


async def reload_requests(store: Store) -> int:
    return len(await services.query_audit(store, action=services.RELOAD_REQUEST_ACTION))


async def test_rebound_host_is_refused_everywhere(
    sqlite_store: Store, client: aiohttp.ClientSession
) -> None:
    served = await serve(sqlite_store, Settings())  # no tokens: loopback clients are admin
    try:
        port = served.http.port
        evil = {"Host": f"rebind.evil.example:{port}"}
        resp = await client.post(f"{served.base}/api/reload-settings", json={}, headers=evil)
        assert resp.status == 421
        assert "allowed_hosts" in (await resp.json())["error"]
        for path in ("/api/stats", "/metrics", "/healthz", "/", "/api/openapi.json"):
            assert (await client.get(served.base + path, headers=evil)).status == 421, path
        assert await reload_requests(sqlite_store) == 0

        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            ok = await client.post(
                f"{served.base}/api/reload-settings", json={}, headers={"Host": host}
            )
            assert ok.status == 200, host
        assert await reload_requests(sqlite_store) == 4

        for bad in (f"127.0.0.1:{port}x", "[::1", "name:with:colons:x"):
            got = await client.get(f"{served.base}/api/stats", headers={"Host": bad})
            assert got.status == 421, bad

        # An operator's own name for the node, added by a reload, is accepted at once.
        named = {"Host": f"relay.internal:{port}"}
        assert (await client.get(f"{served.base}/api/stats", headers=named)).status == 421
        served.settings = Settings(web=WebSettings(allowed_hosts=["relay.internal"]))
        assert (await client.get(f"{served.base}/api/stats", headers=named)).status == 200
        assert (await client.get(f"{served.base}/api/stats", headers=evil)).status == 421
    finally:
        await served.http.stop()


async def test_cross_origin_write_is_refused(
    sqlite_store: Store, client: aiohttp.ClientSession
) -> None:
    served = await serve(sqlite_store, Settings())
    try:
        url = f"{served.base}/api/reload-settings"
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{served.http.port + 1}"):
            resp = await client.post(url, json={}, headers={"Origin": origin})
            assert resp.status == 403, origin
            assert "cross-origin" in (await resp.json())["error"]
        assert await reload_requests(sqlite_store) == 0
        # The console's own origin, and no Origin at all (curl, scripts), are fine.
        own = await client.post(url, json={}, headers={"Origin": served.base})
        assert own.status == 200
        assert (await client.post(url, json={})).status == 200
        # Reads do not change anything, so a foreign Origin on a GET is no threat.
        read = await client.get(f"{served.base}/api/stats", headers={"Origin": "http://x.example"})
        assert read.status == 200
        assert await reload_requests(sqlite_store) == 2
    finally:
        await served.http.stop()
