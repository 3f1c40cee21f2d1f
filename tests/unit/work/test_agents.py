from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from relaymesh.settings import AgentSettings, Settings
from relaymesh.work.agents import (
    AgentOutcome,
    AgentRegistry,
    AgentRequest,
    EchoAgent,
    FailAgent,
    ScriptAgent,
    SleepAgent,
    known_agents,
)
from relaymesh.work.retry import ErrorKind
from tests.conftest import async_wait_until


def request(input: Any = None, attempt: int = 1) -> AgentRequest:
    return AgentRequest(
        step_id="step-1",
        workflow_id="wf-1",
        name="s",
        attempt=attempt,
        lease_epoch=7,
        input=input,
        upstream={"up": {"v": 1}},
        node="node-a",
    )


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 in a container may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# A script that starts a grandchild (``sleep``, its stdio not on our pipes unless
# ``inherit``) and records both pids in ``pids`` before doing ``then``: the process-group
# tests assert the grandchild dies too, not only the script they started.
def forking(then: str, *, inherit: bool = False) -> str:
    stdio = "" if inherit else ", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL"
    return f"""
import os, subprocess, sys, time, pathlib
child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL{stdio})
here = pathlib.Path(sys.argv[0])
here.with_name("pids.tmp").write_text(f"{{os.getpid()}} {{child.pid}}")
here.with_name("pids.tmp").rename(here.with_name("pids"))
{then}
"""


def recorded_pids(tmp_path: Path) -> list[int]:
    return [int(p) for p in (tmp_path / "pids").read_text().split()]


async def wait_all_gone(pids: list[int], what: str) -> None:
    async def gone() -> bool:
        return not any(pid_alive(p) for p in pids)

    await async_wait_until(gone, timeout_s=5, what=what)


def script(tmp_path: Path, body: str, **settings: Any) -> ScriptAgent:
    path = tmp_path / "agent.py"
    path.write_text(textwrap.dedent(body))
    spec = AgentSettings(command=[sys.executable, str(path)], **settings)
    return ScriptAgent("tool", spec, term_grace_s=0.3)


# -- built-ins ---------------------------------------------------------------------------


async def test_echo_returns_its_input() -> None:
    outcome = await EchoAgent().run(request({"a": [1, 2]}))
    assert outcome == AgentOutcome.success({"a": [1, 2]})


async def test_sleep_sleeps_and_is_cancellable() -> None:
    outcome = await SleepAgent().run(request({"seconds": 0}))
    assert outcome.ok and outcome.result == {"slept_s": 0}
    task = asyncio.create_task(SleepAgent().run(request({"seconds": 60})))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("bad", [None, {}, {"seconds": "1"}, {"seconds": -1}, {"seconds": True}])
async def test_sleep_bad_input_is_permanent(bad: Any) -> None:
    outcome = await SleepAgent().run(request(bad))
    assert outcome.kind is ErrorKind.PERMANENT
    assert outcome.error is not None and outcome.error["reason"] == "bad_input"


async def test_fail_fails_n_attempts_then_succeeds() -> None:
    agent = FailAgent()
    inp = {"kind": "transient", "times": 2}
    first = await agent.run(request(inp, attempt=1))
    second = await agent.run(request(inp, attempt=2))
    third = await agent.run(request(inp, attempt=3))
    assert first.kind is ErrorKind.TRANSIENT and second.kind is ErrorKind.TRANSIENT
    assert third.ok and third.result == {"attempt": 3}
    perm = await agent.run(request({"kind": "permanent", "times": 1}))
    assert perm.kind is ErrorKind.PERMANENT
    always = await agent.run(request({"kind": "permanent"}, attempt=99))
    assert not always.ok
    bad = await agent.run(request({"kind": "sometimes"}))
    assert bad.error is not None and bad.error["reason"] == "bad_input"


def test_registry_and_known_agents() -> None:
    settings = Settings(agents={"tool": AgentSettings(command=["true"], concurrency=3)})
    assert known_agents(settings) == {"echo", "sleep", "fail", "tool"}
    registry = AgentRegistry(settings.agents)
    assert registry.names() == {"echo", "sleep", "fail", "tool"}
    tool = registry.get("tool")
    assert isinstance(tool, ScriptAgent) and tool.concurrency == 3
    echo = registry.get("echo")
    assert echo is not None and echo.concurrency is None
    assert registry.get("nope") is None
    # A configured agent may replace a built-in.
    override = AgentRegistry({"echo": AgentSettings(command=["true"])})
    assert isinstance(override.get("echo"), ScriptAgent)


# -- script agents -------------------------------------------------------------------------


async def test_script_success_gets_protocol_and_env(tmp_path: Path) -> None:
    agent = script(
        tmp_path,
        """
        import json, os, sys
        step = json.load(sys.stdin)
        env = {k: v for k, v in os.environ.items() if k.startswith("RELAYMESH_") or k == "EXTRA"}
        print(json.dumps({"step": step, "env": env, "pgid_is_pid": os.getpgid(0) == os.getpid()}))
        """,
        env={"EXTRA": "yes"},
    )
    outcome = await agent.run(request({"x": 1}, attempt=2))
    assert outcome.ok, outcome.error
    step = outcome.result["step"]
    assert step == {
        "step_id": "step-1",
        "workflow_id": "wf-1",
        "attempt": 2,
        "lease_epoch": 7,
        "input": {"x": 1},
        "upstream": {"up": {"v": 1}},
    }
    env = outcome.result["env"]
    assert env["RELAYMESH_STEP_ID"] == "step-1"
    assert env["RELAYMESH_WORKFLOW_ID"] == "wf-1"
    assert env["RELAYMESH_ATTEMPT"] == "2"
    assert env["RELAYMESH_LEASE_EPOCH"] == "7"
    assert env["RELAYMESH_NODE"] == "node-a"
    assert env["EXTRA"] == "yes"
    assert outcome.result["pgid_is_pid"] is True  # its own process group


async def test_script_empty_output_is_null(tmp_path: Path) -> None:
    outcome = await script(tmp_path, "pass\n").run(request())
    assert outcome == AgentOutcome.success(None)


async def test_script_non_json_is_permanent_with_snippet(tmp_path: Path) -> None:
    outcome = await script(tmp_path, "print('hello, not json')\n").run(request())
    assert outcome.kind is ErrorKind.PERMANENT
    assert outcome.error is not None
    assert outcome.error["reason"] == "bad_output"
    assert "hello, not json" in outcome.error["message"]


async def test_script_invalid_utf8_is_permanent(tmp_path: Path) -> None:
    outcome = await script(tmp_path, "import sys; sys.stdout.buffer.write(b'\\xff\\xfe')\n").run(
        request()
    )
    assert outcome.error is not None and outcome.error["reason"] == "bad_output"


async def test_script_huge_output_is_permanent_and_killed(tmp_path: Path) -> None:
    agent = script(
        tmp_path,
        """
        import os, sys, pathlib
        pathlib.Path(sys.argv[0]).with_name("pid").write_text(str(os.getpid()))
        while True:
            sys.stdout.write("x" * 65536)
            sys.stdout.flush()
        """,
        max_output_bytes=100_000,
        timeout_s=20,
    )
    outcome = await agent.run(request())
    assert outcome.kind is ErrorKind.PERMANENT
    assert outcome.error is not None
    assert outcome.error["reason"] == "output_too_large"
    assert "output too large" in outcome.error["message"]
    assert not pid_alive(int((tmp_path / "pid").read_text()))


async def test_script_exit_75_is_transient(tmp_path: Path) -> None:
    outcome = await script(
        tmp_path, "import sys; sys.stderr.write('busy, try later'); sys.exit(75)\n"
    ).run(request())
    assert outcome.kind is ErrorKind.TRANSIENT
    assert outcome.error is not None
    assert outcome.error["exit_code"] == 75
    assert "busy, try later" in outcome.error["stderr_tail"]


async def test_script_permanent_exit_keeps_stderr_tail(tmp_path: Path) -> None:
    outcome = await script(
        tmp_path,
        "import sys; sys.stderr.write('noise\\n' * 5000 + 'the real cause'); sys.exit(2)\n",
    ).run(request())
    assert outcome.kind is ErrorKind.PERMANENT
    assert outcome.error is not None
    assert outcome.error["reason"] == "exit_code"
    assert outcome.error["message"] == "exited with code 2"
    assert outcome.error["stderr_tail"].endswith("the real cause")
    assert len(outcome.error["stderr_tail"]) <= 4096


async def test_script_custom_transient_codes(tmp_path: Path) -> None:
    agent = script(tmp_path, "import sys; sys.exit(3)\n", transient_exit_codes=[3])
    assert (await agent.run(request())).kind is ErrorKind.TRANSIENT


async def test_script_explicit_error_kind(tmp_path: Path) -> None:
    body = """
    import json
    print(json.dumps({"error": {"kind": "transient", "message": "rate limited"}}))
    """
    outcome = await script(tmp_path, body).run(request())
    assert outcome.kind is ErrorKind.TRANSIENT
    assert outcome.error is not None and outcome.error["message"] == "rate limited"
    body_exit = """
    import json, sys
    print(json.dumps({"error": {"kind": "permanent"}}))
    sys.exit(75)
    """
    assert (await script(tmp_path, body_exit).run(request())).kind is ErrorKind.PERMANENT


async def test_script_killed_by_signal_is_transient(tmp_path: Path) -> None:
    outcome = await script(
        tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
    ).run(request())
    assert outcome.kind is ErrorKind.TRANSIENT
    assert outcome.error is not None
    assert outcome.error["reason"] == "killed" and "SIGKILL" in outcome.error["message"]


async def test_script_missing_program_is_permanent(tmp_path: Path) -> None:
    agent = ScriptAgent("tool", AgentSettings(command=[str(tmp_path / "nope")]))
    outcome = await agent.run(request())
    assert outcome.kind is ErrorKind.PERMANENT
    assert outcome.error is not None and outcome.error["reason"] == "spawn"


async def test_script_that_ignores_stdin_is_fine(tmp_path: Path) -> None:
    agent = script(tmp_path, "print('{\"ok\": true}')\n")
    outcome = await agent.run(request({"big": "y" * 1_000_000}))
    assert outcome == AgentOutcome.success({"ok": True})


async def test_script_hang_past_timeout_is_killed(tmp_path: Path) -> None:
    agent = script(tmp_path, forking("time.sleep(60)"), timeout_s=0.5)
    outcome = await agent.run(request())
    assert outcome.kind is ErrorKind.TRANSIENT
    assert outcome.error is not None and outcome.error["reason"] == "timeout"
    script_pid, grandchild = recorded_pids(tmp_path)
    assert not pid_alive(script_pid)
    await wait_all_gone([grandchild], "the script's own child to die with its group")


async def test_script_ignoring_sigterm_still_dies_with_its_children(tmp_path: Path) -> None:
    agent = script(
        tmp_path,
        """
        import os, signal, subprocess, sys, time, pathlib
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        here = pathlib.Path(sys.argv[0])
        here.with_name("pids").write_text(f"{os.getpid()} {child.pid}")
        while True:
            time.sleep(0.05)
        """,
        timeout_s=1.0,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await agent.run(request())
    elapsed = loop.time() - started
    assert outcome.error is not None and outcome.error["reason"] == "timeout"
    assert elapsed < 1.0 + 0.3 + 2.0  # timeout + grace + slack
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]

    async def none_alive() -> bool:
        return not any(pid_alive(p) for p in pids)

    await async_wait_until(none_alive, timeout_s=5, what="the whole process group to die")


async def test_script_cancel_kills_the_group(tmp_path: Path) -> None:
    agent = script(tmp_path, forking("time.sleep(60)"), timeout_s=30)
    task = asyncio.create_task(agent.run(request()))
    pid_file = tmp_path / "pids"

    async def started() -> bool:
        return pid_file.exists()

    await async_wait_until(started, timeout_s=10, what="the script to start")
    script_pid, grandchild = recorded_pids(tmp_path)
    assert pid_alive(grandchild)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pid_alive(script_pid)
    await wait_all_gone([grandchild], "the script's own child to die with its group")


@pytest.mark.parametrize("inherit", [False, True], ids=["own-stdio", "holds-our-pipes"])
async def test_script_success_kills_what_it_left_in_its_group(
    tmp_path: Path, inherit: bool
) -> None:
    """Exit 0 with a background child still running: the run is a success and the
    child is killed with the group (INTERFACE: the whole group after every run). A
    child that still holds stdout does not hold the run open until the timeout."""
    agent = script(tmp_path, forking("print('{\"ok\": 1}')", inherit=inherit), timeout_s=20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await agent.run(request())
    assert outcome == AgentOutcome.success({"ok": 1}), outcome.error
    assert loop.time() - started < 10  # not the 20 s timeout
    await wait_all_gone(recorded_pids(tmp_path), "the left-behind child to be killed")


async def test_script_result_json_round_trip(tmp_path: Path) -> None:
    agent = script(
        tmp_path,
        """
        import json, sys
        step = json.load(sys.stdin)
        json.dump({"sum": sum(step["input"])}, sys.stdout)
        """,
    )
    outcome = await agent.run(request([1, 2, 3]))
    assert outcome.ok and json.dumps(outcome.result) == '{"sum": 6}'
    assert os.environ.get("RELAYMESH_STEP_ID") is None  # never leaks into our process


async def test_script_nan_output_is_not_json(tmp_path: Path) -> None:
    outcome = await script(tmp_path, "print('{\"x\": NaN}')\n").run(request())
    assert outcome.error is not None and outcome.error["reason"] == "bad_output"
    assert "NaN" in outcome.error["message"]


async def test_script_stderr_nul_bytes_are_replaced(tmp_path: Path) -> None:
    outcome = await script(tmp_path, "import sys; sys.stderr.write('a\\x00b'); sys.exit(1)\n").run(
        request()
    )
    assert outcome.error is not None
    assert "\x00" not in outcome.error["stderr_tail"]
    assert outcome.error["stderr_tail"] == "a\ufffdb"
