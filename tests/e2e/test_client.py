"""``relaymesh.client`` against a real ``relaymesh node run --http`` process (both
stores): submit with an idempotency key, status, wait with a deadline, cancel, replay,
list with paging, and the typed error carrying the server's one line."""

from __future__ import annotations

import pytest

from relaymesh.client import ApiError, Client, WaitTimeout
from relaymesh.web.api import hash_token
from tests.conftest import wait_until
from tests.e2e.conftest import ClusterFactory
from tests.e2e.harness import free_port

ADMIN, SUBMITTER = "client-admin", "client-submitter"
FAILS_ONCE = {
    "name": "flaky",
    "steps": [
        {
            "name": "once",
            "agent": "fail",
            "input": {"kind": "permanent", "times": 1},
            "retry": {"max_attempts": 1},
        }
    ],
}
SLOW = {"name": "slow", "steps": [{"name": "nap", "agent": "sleep", "input": {"seconds": 60}}]}


def api_open(client: Client) -> bool:
    try:
        client.workflows(limit=1)
    except ApiError as exc:
        if exc.status == 503:
            return False
        raise
    return True


def test_client_against_a_node(make_cluster: ClusterFactory, store_backend: str | None) -> None:
    cluster = make_cluster(store_url=store_backend)
    with cluster.config.open("a") as fh:
        for name, role, token in (("ops", "admin", ADMIN), ("ci", "submitter", SUBMITTER)):
            fh.write(
                f'[[web.tokens]]\nname = "{name}"\nrole = "{role}"\n'
                f'token_sha256 = "{hash_token(token)}"\n'
            )
    cluster.add_nodes("n1")
    cluster.start("n1")
    base = f"http://127.0.0.1:{cluster.nodes['n1'].http_port}"
    ci, ops = Client(base, SUBMITTER), Client(base, ADMIN)
    wait_until(lambda: api_open(ci), 30, what="the node's store to be open (not 503)")

    first = ci.submit(FAILS_ONCE, idempotency_key="nightly-1")
    again = ci.submit(FAILS_ONCE, idempotency_key="nightly-1")
    assert first.created and not again.created and again.id == first.id

    failed = ci.wait(first.id, timeout_s=60, poll_s=0.1)
    assert failed.status == "FAILED" and failed.final
    dead = failed.step("once")
    assert dead.status == "DEAD_LETTER" and dead.error

    with pytest.raises(ApiError) as refused:
        ci.replay(dead.id)
    assert refused.value.status == 403 and "admin" in refused.value.message
    replayed = ops.replay(dead.id)
    assert replayed.id == dead.id and replayed.status in ("READY", "RUNNING", "SUCCEEDED")
    assert replayed.raw["replays"][0]["from_attempt"] == 1
    # The attempt counter goes on: run 2 is past the agent's one failing run.
    again = ci.wait(first.id, timeout_s=60, poll_s=0.1)
    assert again.status == "SUCCEEDED" and again.step("once").attempt == 2

    slow = ci.submit(SLOW)
    assert slow.created
    with pytest.raises(WaitTimeout) as late:
        ci.wait(slow.id, timeout_s=0.3, poll_s=0.1)
    assert late.value.last is not None and late.value.last.status == "RUNNING"
    cancelled = ops.cancel(slow.id, mode="hard")
    assert cancelled["cancelled"] == 1
    assert ci.wait(slow.id, timeout_s=60, poll_s=0.1).status == "CANCELLED"

    page = ci.workflows(limit=1)
    assert [w.id for w in page.items] == [slow.id] and page.next_cursor
    assert [w.id for w in ci.iter_workflows(page_size=1)] == [slow.id, first.id]
    assert [w.id for w in ci.workflows(status="CANCELLED").items] == [slow.id]
    assert ci.workflows(name="flaky").items[0].idempotency_key == "nightly-1"

    with pytest.raises(ApiError) as bad:
        ci.submit({"name": "x", "steps": []})
    assert bad.value.status == 400 and "\n" not in bad.value.message and bad.value.message
    with pytest.raises(ApiError) as missing:
        ci.status("no-such-workflow")
    assert missing.value.status == 404 and "no-such-workflow" in missing.value.message
    with pytest.raises(ApiError) as wrong:
        Client(base, "not-a-token").status(first.id)
    assert wrong.value.status == 401
    with pytest.raises(ApiError) as down:
        Client(f"http://127.0.0.1:{free_port()}", ADMIN, timeout_s=2).status(first.id)
    assert down.value.status is None and "cannot reach" in down.value.message
