"""Schemathesis against a real ``relaymesh serve-web`` process, from the API's own
``/api/openapi.json``, with an admin, a submitter and a readonly token and with no
token: no input the schema allows (and none it does not, in negative mode) gives a 5xx,
and no write is accepted below the role the route names (``x-role``).

A short run here (``RELAYMESH_FUZZ_EXAMPLES``, default 3 per operation and role); a
long one with ``make fuzz``. ``/api/events`` is left out: it streams until the client
leaves, which ``tests/integration/web/test_events.py`` covers.
"""

from __future__ import annotations

import os
import sys

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from relaymesh.web.api import OPENAPI
from tests.integration.web.conftest import WEB_TOKENS

EXAMPLES = int(os.environ.get("RELAYMESH_FUZZ_EXAMPLES", "3"))
TOKENS: dict[str, str | None] = {**WEB_TOKENS, "none": None}
SESSION_ROUTES = ("/api/login", "/api/logout")
RANK = {"none": -1, "readonly": 0, "submitter": 1, "admin": 2}

schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path="/api/events")
# Values the schema allows and values it does not (wrong types, out of range, NULs).
schema.config.generation.update(
    modes=list(schemathesis.GenerationMode), allow_x00=True, database="none"
)


@pytest.mark.parametrize("role", sorted(TOKENS))
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_fuzz(case: schemathesis.Case, role: str, serve_web: str) -> None:
    token = TOKENS[role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=serve_web, headers=headers, timeout=10)
    where = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if case.method.upper() == "POST" and case.path not in SESSION_ROUTES:
        # Negative mode also tries methods a path does not have (405): need admin then.
        need = OPENAPI["paths"][case.path].get("post", {}).get("x-role", "admin")
        if RANK[role] < RANK[need]:
            assert not 200 <= response.status_code < 300, f"{role} write accepted: {where}"
    if role == "none" and case.path not in SESSION_ROUTES:
        assert response.status_code in (400, 401, 403, 404, 405, 415), where


def test_schema_covers_every_route() -> None:
    from relaymesh.web.api import Api

    routes = {r.path for r in Api(None, lambda: None).routes()}  # type: ignore[arg-type,return-value]
    documented = set(OPENAPI["paths"])
    assert routes - {"/", "/api/openapi.json"} == documented, sys.version
