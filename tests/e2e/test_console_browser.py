"""The console in a real headless Chromium against a real ``relaymesh node run --http``.

One node (SQLite) with admin, readonly (and, once the role exists, submitter) tokens
serves every test in this module; each test opens its own browser context (cookies
are per context). Workflows are submitted over the HTTP API, the page is never
reloaded while a change is awaited (a marker on ``window`` proves it), and screenshots
go to this module's temporary directory, and also to ``RELAYMESH_SCREENSHOT_DIR``
when set (``make screenshots`` copies them to docs/img/ for the README).

Without Chromium or Playwright the module skips, saying which is missing;
``RELAYMESH_REQUIRE_BROWSER=1`` (set by .ci/run) turns that into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.e2e.harness import REPO, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("RELAYMESH_CHROMIUM", "/usr/bin/chromium")
ADMIN = "console-admin-token-0123456789"
READONLY = "console-readonly-token-0123456789"
SUBMITTER = "console-submitter-token-0123456789"
FLAKY_AGENT = REPO / "examples" / "agents" / "flaky.py"
WAIT_MS = 60_000


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def _tokens_toml() -> str:
    from relaymesh.web.api import hash_token

    tokens = [
        ("admin", ADMIN, "admin"),
        ("viewer", READONLY, "readonly"),
        ("submitter", SUBMITTER, "submitter"),
    ]
    out = []
    for name, token, role in tokens:
        out += [
            "[[web.tokens]]",
            f'name = "{name}"',
            f'token_sha256 = "{hash_token(token)}"',
            f'role = "{role}"',
            "",
        ]
    out += [
        "[agents.flaky]",
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(FLAKY_AGENT))}]",
        "timeout_s = 30",
        "",
    ]
    return "\n".join(out)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("RELAYMESH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RELAYMESH_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("console")
    cluster = Cluster(root / "cluster", f"sqlite:///{root / 'store.db'}", extra_toml=_tokens_toml())
    try:
        cluster.add_nodes("console-1")
        cluster.start("console-1")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def base(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.nodes['console-1'].http_port}"


def api(cluster: Cluster, method: str, path: str, body: Any = None, token: str = ADMIN) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base(cluster) + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def submit(cluster: Cluster, workflow: dict[str, Any]) -> str:
    return str(api(cluster, "POST", "/api/workflows", workflow)["id"])


def screenshot(page: Any, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("RELAYMESH_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def open_console(chromium: Any, cluster: Cluster, token: str, **context: Any) -> Any:
    """A fresh context (no cookies), logged in through the login form."""
    ctx = chromium.new_context(**{"viewport": {"width": 1280, "height": 860}, **context})
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(base(cluster) + "/")
    page.locator("#login").wait_for(state="visible")
    page.fill("#token", token)
    page.click("#login button[type=submit]")
    page.locator("#nav").wait_for(state="visible")
    return page


def mark_no_reload(page: Any) -> None:
    page.evaluate("window.__noReload = 1")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__noReload") == 1, "the page was reloaded"


def node_status(page: Any, step: str) -> str:
    return str(page.get_attribute(f'#dag .node[data-step="{step}"]', "data-status"))


def wait_node(page: Any, step: str, status: str) -> None:
    page.locator(f'#dag .node[data-step="{step}"][data-status="{status}"]').wait_for()


def live_workflow() -> dict[str, Any]:
    return {
        "name": "console-live",
        "steps": [
            {"name": "fetch", "agent": "echo", "input": {"text": "hi"}},
            {"name": "crunch", "agent": "sleep", "input": {"seconds": 3}, "depends_on": ["fetch"]},
            {"name": "index", "agent": "sleep", "input": {"seconds": 1}, "depends_on": ["fetch"]},
            {"name": "publish", "agent": "echo", "input": {}, "depends_on": ["crunch", "index"]},
        ],
    }


def failing_workflow(marker_dir: Path) -> dict[str, Any]:
    return {
        "name": "nightly-upload",
        "steps": [
            {"name": "extract", "agent": "echo", "input": {"rows": 120}},
            {"name": "transform", "agent": "echo", "input": {}, "depends_on": ["extract"]},
            {
                "name": "upload",
                "agent": "flaky",
                "input": {"marker_dir": str(marker_dir)},
                "retry": {"max_attempts": 1},
                "depends_on": ["transform"],
            },
            {"name": "archive", "agent": "echo", "input": {}, "depends_on": ["transform"]},
            {"name": "notify", "agent": "echo", "input": {}, "depends_on": ["upload", "archive"]},
        ],
    }


# -- the tests (in file order: later ones reuse what earlier ones made) ---------------------


def test_login_form_sets_the_session_and_logout_clears_it(chromium: Any, node: Cluster) -> None:
    page = open_console(chromium, node, ADMIN)
    assert page.text_content("#who") == "admin (admin)"
    page.locator("#cards .card").first.wait_for()
    # The session cookie is HttpOnly: the page's script cannot see it.
    assert "relaymesh_session" not in page.evaluate("document.cookie")
    page.click("#logout")
    page.locator("#login").wait_for(state="visible")
    assert page.evaluate("fetch('/api/me').then(r => r.status)") == 401
    page.fill("#token", "wrong-token")
    page.click("#login button[type=submit]")
    page.locator("#login-error:has-text('invalid token')").wait_for()
    page.context.close()


def test_dag_turns_green_live_without_reload(chromium: Any, node: Cluster, shots: Path) -> None:
    page = open_console(chromium, node, ADMIN)
    workflow_id = submit(node, live_workflow())
    page.goto(f"{base(node)}/#/workflow/{workflow_id}")
    page.locator('#dag .node[data-step="publish"]').wait_for()
    mark_no_reload(page)
    first = node_status(page, "publish")
    assert first != "SUCCEEDED", "the workflow finished before the page showed it"
    for step in ("fetch", "crunch", "index", "publish"):
        wait_node(page, step, "SUCCEEDED")
    page.locator("#wf-status .s-SUCCEEDED").wait_for()
    assert_not_reloaded(page)
    assert page.text_content("#live") == "live"
    # The box says attempt/max, and the owner once it ran.
    assert "1/" in (page.text_content('#dag .node[data-step="crunch"]') or "")
    page.click('#dag .node[data-step="crunch"]')
    page.locator("#step-detail :text('Ownership history')").wait_for()
    page.locator("#step-detail td:text-is('claimed')").wait_for()
    page.context.close()


def test_failed_step_shows_its_error_and_stderr(
    chromium: Any, node: Cluster, shots: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    marker_dir = tmp_path_factory.mktemp("flaky")
    workflow_id = submit(node, failing_workflow(marker_dir))
    # A second, plain dead letter so the dead-letter page has more than one row.
    submit(
        node,
        {
            "name": "resize-images",
            "steps": [{"name": "resize", "agent": "fail", "input": {"kind": "permanent"}}],
        },
    )
    page = open_console(chromium, node, ADMIN)
    page.goto(f"{base(node)}/#/workflow/{workflow_id}")
    wait_node(page, "upload", "DEAD_LETTER")
    page.click('#dag .node[data-step="upload"]')
    error = page.locator("#step-error")
    error.wait_for()
    assert "exited with code 3" in (error.text_content() or "")
    assert "HTTP 503" in (page.text_content("#step-stderr") or "")
    assert page.text_content("#step-attempts") == "1 of 1"
    screenshot(page, shots, "console-workflow")
    page.context.close()


def test_replay_a_dead_letter_from_the_page(chromium: Any, node: Cluster, shots: Path) -> None:
    page = open_console(chromium, node, ADMIN)
    page.goto(f"{base(node)}/#/dead")
    row = page.locator('#page-dead tr[data-step="upload"]')
    row.wait_for()
    page.locator('#page-dead tr[data-step="resize"]').wait_for()
    screenshot(page, shots, "console-dead-letters")
    mark_no_reload(page)
    row.locator("button.replay-one").click()
    row.wait_for(state="detached")
    assert page.locator('#page-dead tr[data-step="resize"]').count() == 1
    # The replayed step runs again and succeeds: watch it on its workflow's graph.
    page.goto(f"{base(node)}/#/workflows")
    page.locator("#page-workflows tr:has(td:text-is('nightly-upload')) a").first.click()
    wait_node(page, "upload", "SUCCEEDED")
    wait_node(page, "notify", "SUCCEEDED")
    page.locator("#wf-status .s-SUCCEEDED").wait_for()
    assert_not_reloaded(page)
    page.context.close()


def test_cancel_a_running_workflow_with_confirmation(chromium: Any, node: Cluster) -> None:
    workflow_id = submit(
        node,
        {
            "name": "long-export",
            "steps": [
                {"name": "export", "agent": "sleep", "input": {"seconds": 120}},
                {"name": "after", "agent": "echo", "input": {}, "depends_on": ["export"]},
            ],
        },
    )
    page = open_console(chromium, node, ADMIN)
    page.goto(f"{base(node)}/#/workflow/{workflow_id}")
    wait_node(page, "export", "RUNNING")
    mark_no_reload(page)
    # Backing out of the confirmation changes nothing.
    page.click("#cancel-hard")
    page.locator("#confirm[open]").wait_for()
    page.click("#confirm-no")
    assert api(node, "GET", f"/api/workflows/{workflow_id}")["workflow"]["status"] == "RUNNING"
    page.click("#cancel-hard")
    page.locator("#confirm[open]").wait_for()
    assert "HARD" in (page.text_content("#confirm-text") or "")
    page.click("#confirm-yes")
    page.locator("#wf-status .s-CANCELLED").wait_for()
    wait_node(page, "export", "CANCELLED")
    assert_not_reloaded(page)
    assert page.locator("#cancel-hard").count() == 0
    page.context.close()


def test_readonly_sees_no_write_controls_and_is_refused(chromium: Any, node: Cluster) -> None:
    workflow_id = submit(
        node,
        {
            "name": "readonly-view",
            "steps": [{"name": "wait", "agent": "sleep", "input": {"seconds": 60}}],
        },
    )
    page = open_console(chromium, node, READONLY)
    assert page.text_content("#who") == "viewer (readonly)"
    page.goto(f"{base(node)}/#/workflow/{workflow_id}")
    wait_node(page, "wait", "RUNNING")
    page.click('#dag .node[data-step="wait"]')
    page.locator("#step-detail dl").wait_for()
    for route in ("workflow/" + workflow_id, "dead", "workflows", "overview", "members"):
        page.goto(f"{base(node)}/#/{route}")
        page.locator(f"#page-{route.split('/')[0]}").wait_for()
        page.locator(
            f"#page-{route.split('/')[0]} table, #page-{route.split('/')[0]} svg"
        ).first.wait_for()
        assert page.locator(".write").count() == 0, route
        assert page.locator("button", has_text="Replay").count() == 0, route
        assert page.locator("button", has_text="Cancel").count() == 0, route
    # The server refuses a readonly write whatever the page shows.
    status = page.evaluate(
        """(id) => fetch('/api/cancel', {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify({workflow_id: id, mode: 'hard'})})
        .then(r => r.status)""",
        workflow_id,
    )
    assert status == 403
    api(node, "POST", "/api/cancel", {"workflow_id": workflow_id, "mode": "hard"})
    page.context.close()


def test_submitter_sees_no_replay_or_cancel(chromium: Any, node: Cluster) -> None:
    page = open_console(chromium, node, SUBMITTER)
    page.goto(f"{base(node)}/#/dead")
    page.locator("#page-dead table").wait_for()
    assert page.locator("button", has_text="Replay").count() == 0
    page.context.close()


def test_live_indicator_reconnects_after_a_node_restart(chromium: Any, node: Cluster) -> None:
    page = open_console(chromium, node, ADMIN)
    page.locator("#live[data-state='live']").wait_for()
    mark_no_reload(page)
    node.signal("console-1", signal.SIGTERM)
    node.wait_exit("console-1", 30)
    page.locator("#live[data-state='reconnecting']").wait_for()
    assert "reconnecting" in (page.text_content("#live") or "")
    node.start("console-1")
    page.locator("#live[data-state='live']").wait_for()
    assert_not_reloaded(page)
    page.context.close()


def test_screenshots_desktop_phone_and_dark(chromium: Any, node: Cluster, shots: Path) -> None:
    page = open_console(chromium, node, ADMIN)
    # The charts need two of the node's samples (one every 10 s).
    wait_until(
        lambda: len(api(node, "GET", "/api/samples")["samples"]) >= 2, 40, what="two samples"
    )
    page.goto(f"{base(node)}/#/overview")
    page.locator("#page-overview .uplot").first.wait_for()
    screenshot(page, shots, "console-overview")
    page.context.close()
    workflows = api(node, "GET", "/api/workflows?name=nightly-upload")
    phone = open_console(
        chromium, node, ADMIN, viewport={"width": 390, "height": 844}, color_scheme="dark"
    )
    phone.goto(f"{base(node)}/#/workflow/{workflows[0]['id']}")
    wait_node(phone, "notify", "SUCCEEDED")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width} px wide on a 390 px screen"
    screenshot(phone, shots, "console-phone-dark")
    phone.context.close()


def test_every_route_refuses_without_a_session(node: Cluster) -> None:
    req = urllib.request.Request(base(node) + "/api/steps/x/history")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 401
    err.value.close()
