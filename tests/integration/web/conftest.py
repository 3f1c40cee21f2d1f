"""A real HTTP server (``HttpServer`` on an ephemeral loopback port, with the ``Host``
guard and the API routes) over a real store, and settings a test may swap as a
reload would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from relaymesh.ops.metrics import Metrics
from relaymesh.settings import Settings, TokenSettings, WebSettings
from relaymesh.store import Store, open_store
from relaymesh.web.api import Api, hash_token
from relaymesh.web.server import HttpServer
from tests.conftest import require_pg, wait_until
from tests.e2e.harness import RELAYMESH, free_port
from tests.pgutil import fresh_pg_database

ADMIN, READER, OTHER = "admin+secret/with=", "reader-secret", "other-reader"


def tokens_settings(*names: str, **web: Any) -> Settings:
    """Settings with the named tokens of ``TOKENS`` configured."""
    table = {
        "admin": TokenSettings(name="admin", token_sha256=hash_token(ADMIN), role="admin"),
        "reader": TokenSettings(name="reader", token_sha256=hash_token(READER), role="readonly"),
        "other": TokenSettings(name="other", token_sha256=hash_token(OTHER), role="readonly"),
    }
    return Settings(web=WebSettings(tokens=[table[n] for n in names], **web))


@dataclass
class Served:
    store: Store
    api: Api
    http: HttpServer
    settings: Settings = field(default_factory=Settings)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.http.port}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = await open_store(f"sqlite:///{tmp_path / 'web.db'}")
        try:
            yield opened
        finally:
            await opened.close()
        return
    async with fresh_pg_database(require_pg()) as url:
        opened = await open_store(url)
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'web.db'}")
    try:
        yield opened
    finally:
        await opened.close()


async def serve(store: Store, settings: Settings, *, sse_interval_s: float = 0.05) -> Served:
    holder: dict[str, Served] = {}
    api = Api(store, lambda: holder["s"].settings, sse_interval_s=sse_interval_s)
    http = HttpServer(
        "127.0.0.1:0",
        Metrics(),
        lambda: {"ok": True},
        allowed_hosts=lambda: holder["s"].settings.web.allowed_hosts,
    )
    http.add_routes(api.routes())
    served = Served(store=store, api=api, http=http, settings=settings)
    holder["s"] = served
    await http.start()
    return served


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe: keep cookies set by an IP-literal host (the login tests rely on the jar).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


# Tokens of the ``serve_web`` process, by role (the admin's has the characters that
# need care in a cookie).
WEB_TOKENS = {"admin": "web-admin+/=", "submitter": "web-submitter", "readonly": "web-reader"}


@pytest.fixture(scope="module")
def serve_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``relaymesh serve-web`` process over a fresh SQLite store, with one token
    per role of ``WEB_TOKENS``; its base URL. Its log must hold no traceback."""
    root = tmp_path_factory.mktemp("web")
    config = root / "relaymesh.toml"
    config.write_text(
        "".join(
            f'[[web.tokens]]\nname = "{role}"\nrole = "{role}"\n'
            f'token_sha256 = "{hash_token(token)}"\n'
            for role, token in WEB_TOKENS.items()
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")}
    env["RELAYMESH_STORE_URL"] = f"sqlite:///{root / 'store.db'}"
    subprocess.run([RELAYMESH, "store", "migrate"], env=env, cwd=root, check=True)
    port = free_port()
    log = (root / "web.log").open("wb")
    proc = subprocess.Popen(
        [RELAYMESH, "--config", str(config), "serve-web", "--bind", f"127.0.0.1:{port}"],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return proc.poll() is not None

    try:
        wait_until(up, 30, what="serve-web")
        assert proc.poll() is None, (root / "web.log").read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        text = (root / "web.log").read_text()
        assert "Traceback" not in text, text[-3000:]
