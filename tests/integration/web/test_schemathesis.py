"""Schemathesis against a real ``relaymesh serve-web`` process, from the API's own
``/api/openapi.json``, with an admin token, a readonly token and no token: no input
the schema allows (and none it does not, in negative mode) gives a 5xx, and no write
is accepted below admin.

A short run here (``RELAYMESH_FUZZ_EXAMPLES``, default 3 per operation and role); a
long one with ``make fuzz``. ``/api/events`` is left out: it streams until the client
leaves, which ``tests/integration/web/test_events.py`` covers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from relaymesh.web.api import OPENAPI, hash_token
from tests.conftest import wait_until
from tests.e2e.harness import RELAYMESH, free_port

ADMIN, READER = "fuzz-admin+/=", "fuzz-reader"
EXAMPLES = int(os.environ.get("RELAYMESH_FUZZ_EXAMPLES", "3"))
TOKENS = {"admin": ADMIN, "readonly": READER, "none": None}
SESSION_ROUTES = ("/api/login", "/api/logout")

schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path="/api/events")
# Values the schema allows and values it does not (wrong types, out of range, NULs).
schema.config.generation.update(
    modes=list(schemathesis.GenerationMode), allow_x00=True, database="none"
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "relaymesh.toml"
    config.write_text(
        "[[web.tokens]]\n"
        f'name = "admin"\nrole = "admin"\ntoken_sha256 = "{hash_token(ADMIN)}"\n'
        "[[web.tokens]]\n"
        f'name = "reader"\nrole = "readonly"\ntoken_sha256 = "{hash_token(READER)}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMESH_")}
    env["RELAYMESH_STORE_URL"] = f"sqlite:///{root / 'store.db'}"
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
        text = Path(root / "web.log").read_text()
        assert "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize("role", sorted(TOKENS))
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_fuzz(case: schemathesis.Case, role: str, base_url: str) -> None:
    token = TOKENS[role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=base_url, headers=headers, timeout=10)
    where = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if case.method.upper() == "POST" and case.path not in SESSION_ROUTES and role != "admin":
        assert not 200 <= response.status_code < 300, f"{role} write accepted: {where}"
    if role == "none" and case.path not in SESSION_ROUTES:
        assert response.status_code in (400, 401, 403, 404, 405, 415), where


def test_schema_covers_every_route() -> None:
    from aiohttp import web

    from relaymesh.web.api import Api

    # /static/ (scripts, styles, vendored libraries) is files, not API.
    defined = Api(None, lambda: None).routes()  # type: ignore[arg-type,return-value]
    routes = {r.path for r in defined if isinstance(r, web.RouteDef)}
    documented = set(OPENAPI["paths"])
    assert routes - {"/", "/api/openapi.json"} == documented, sys.version
