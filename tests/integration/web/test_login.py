"""The console's session: ``POST /api/login`` sets an HttpOnly, SameSite=Strict cookie
(whatever characters the token has), ``POST /api/logout`` clears it, and the console
page never writes a cookie from JavaScript."""

from __future__ import annotations

import aiohttp

from relaymesh.store import Store
from relaymesh.web.api import COOKIE_NAME
from tests.integration.web.conftest import ADMIN, READER, serve, tokens_settings


async def test_login_cookie_is_httponly_and_works_for_any_token(
    sqlite_store: Store, client: aiohttp.ClientSession
) -> None:
    served = await serve(sqlite_store, tokens_settings("admin", "reader"))
    try:
        stats = f"{served.base}/api/stats"
        assert (await client.get(stats)).status == 401
        login = await client.post(f"{served.base}/api/login", json={"token": ADMIN})
        assert login.status == 200
        assert await login.json() == {"name": "admin", "role": "admin"}
        header = login.headers["Set-Cookie"]
        assert header.startswith(f"{COOKIE_NAME}=")
        assert "HttpOnly" in header
        assert "SameSite=Strict" in header
        assert ADMIN not in header  # the raw token (with + / =) is encoded, never quoted
        assert (await client.get(stats)).status == 200  # the cookie alone authenticates
        # A write with the session cookie works like a bearer token.
        write = await client.post(f"{served.base}/api/reload-settings", json={})
        assert write.status == 200

        logout = await client.post(f"{served.base}/api/logout")
        assert logout.status == 200
        assert COOKIE_NAME in logout.headers["Set-Cookie"]
        assert (await client.get(stats)).status == 401

        form = await client.post(f"{served.base}/api/login", data={"token": READER})
        assert form.status == 200
        assert (await form.json())["role"] == "readonly"
        assert (await client.get(stats)).status == 200
        denied = await client.post(f"{served.base}/api/reload-settings", json={})
        assert denied.status == 403
    finally:
        await served.http.stop()


async def test_login_refusals(sqlite_store: Store, client: aiohttp.ClientSession) -> None:
    served = await serve(sqlite_store, tokens_settings("admin"))
    try:
        url = f"{served.base}/api/login"
        wrong = await client.post(url, json={"token": "guess"})
        assert wrong.status == 401
        assert "Set-Cookie" not in wrong.headers
        for body in ({}, {"token": 7}, {"token": ""}, {"token": ADMIN, "extra": 1}):
            resp = await client.post(url, json=body)
            assert resp.status == 400, body
            assert "\n" not in (await resp.json())["error"]
        assert (
            await client.post(url, data=b"token", headers={"Content-Type": "text/x"})
        ).status == 400
        # A login form posted from another site (login CSRF) is refused.
        csrf = await client.post(
            url, data={"token": ADMIN}, headers={"Origin": "http://evil.example"}
        )
        assert csrf.status == 403
        assert "Set-Cookie" not in csrf.headers
    finally:
        await served.http.stop()


async def test_console_uses_the_login_endpoint(
    sqlite_store: Store, client: aiohttp.ClientSession
) -> None:
    served = await serve(sqlite_store, tokens_settings("admin"))
    try:
        page = await (await client.get(served.base + "/")).text()
        script = await (await client.get(served.base + "/static/console.js")).text()
        assert 'src="/static/console.js"' in page
        for text in (page, script):
            assert "document.cookie" not in text
        assert '"/api/login"' in script and '"/api/logout"' in script
    finally:
        await served.http.stop()
