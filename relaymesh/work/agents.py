"""Agents: what actually runs a step. Built-ins (``echo``, ``sleep``, ``fail``) and script
agents from ``[agents.NAME]`` settings.

An agent's ``run`` never raises for a failed run: it returns an ``AgentOutcome``
whose ``error`` says what went wrong and whether it is worth retrying. Cancelling
the task that awaits ``run`` (hard cancel, lost lease, drain) stops the agent; a
script agent then kills its whole process group before the cancellation goes on.

Script protocol (INTERFACE.md): the step as JSON on stdin (``step_id``,
``workflow_id``, ``attempt``, ``lease_epoch``, ``input``, ``upstream``), the result
as JSON on stdout, exit 0 for success. Environment (``script_environment``, and
nothing else of the node's): ``RELAYMESH_STEP_ID``, ``RELAYMESH_WORKFLOW_ID``,
``RELAYMESH_ATTEMPT``, ``RELAYMESH_LEASE_EPOCH``, ``RELAYMESH_NODE``, PATH, HOME, LANG,
the agent's ``env`` and the names in its ``pass_env``. Own process group; on timeout
SIGTERM to the group, then SIGKILL after ``term_grace_s``; once the script exits,
whatever it left in its group is killed. Empty stdout on success is a ``null`` result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from relaymesh.model import Claim
from relaymesh.settings import AgentSettings, Settings
from relaymesh.work.retry import ErrorKind, classify, explicit_error_kind

__all__ = [
    "BUILTIN_AGENTS",
    "Agent",
    "AgentOutcome",
    "AgentRegistry",
    "AgentRequest",
    "EchoAgent",
    "FailAgent",
    "ScriptAgent",
    "SleepAgent",
    "known_agents",
    "script_environment",
]

BUILTIN_AGENTS = frozenset({"echo", "sleep", "fail"})
INHERITED_ENV = ("PATH", "HOME", "LANG")
"""What a script inherits from the node without asking (``pass_env`` names more)."""
STDERR_TAIL_BYTES = 4096
SNIPPET_CHARS = 200
DEFAULT_TERM_GRACE_S = 2.0
_READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class AgentRequest:
    step_id: str
    workflow_id: str
    name: str
    attempt: int
    lease_epoch: int
    input: Any
    upstream: dict[str, Any]
    node: str

    @classmethod
    def from_claim(cls, claim: Claim, node: str) -> AgentRequest:
        return cls(
            step_id=claim.step_id,
            workflow_id=claim.workflow_id,
            name=claim.name,
            attempt=claim.attempt,
            lease_epoch=claim.lease_epoch,
            input=claim.input,
            upstream=claim.upstream,
            node=node,
        )


@dataclass(frozen=True, slots=True)
class AgentOutcome:
    """A finished run: ``ok`` with a JSON ``result``, or an ``error`` object
    ``{"kind": "transient"|"permanent", "reason": ..., "message": ..., ...}``."""

    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def kind(self) -> ErrorKind | None:
        if self.ok or self.error is None:
            return None
        return ErrorKind(self.error.get("kind", ErrorKind.PERMANENT.value))

    @classmethod
    def success(cls, result: Any) -> AgentOutcome:
        return cls(ok=True, result=result)

    @classmethod
    def failure(cls, kind: ErrorKind, reason: str, message: str, **extra: Any) -> AgentOutcome:
        return cls(
            ok=False,
            error={"kind": kind.value, "reason": reason, "message": message, **extra},
        )


class Agent(Protocol):
    name: str
    concurrency: int | None
    """Runs of this agent allowed at once on one node; None: only the worker's slots."""
    inline: bool
    """``run_now`` always answers (never None): the run finishes inside the claim round,
    so its steps take no slot and are claimed ``claim_batch`` at a time (worker.py)."""

    async def run(self, request: AgentRequest) -> AgentOutcome:
        """Run one step. Never raises for a failed run. Cancellable: cancelling stops
        the run (and kills any process it started) before ``CancelledError`` goes on."""
        ...

    def run_now(self, request: AgentRequest) -> AgentOutcome | None:
        """The whole run without waiting, for an agent that never waits (the worker then
        runs it inline, with no task); None: it must run as a task (``run``)."""
        ...


# -- built-ins ------------------------------------------------------------------------


class EchoAgent:
    """Returns its input."""

    name = "echo"
    concurrency: int | None = None
    inline = True

    async def run(self, request: AgentRequest) -> AgentOutcome:
        return self.run_now(request)

    def run_now(self, request: AgentRequest) -> AgentOutcome:
        """The same, without a coroutine: the worker runs it inline."""
        return AgentOutcome.success(request.input)


class SleepAgent:
    """``{"seconds": s}``: sleeps, then returns ``{"slept_s": s}``."""

    name = "sleep"
    concurrency: int | None = None
    inline = False

    async def run(self, request: AgentRequest) -> AgentOutcome:
        data = request.input
        seconds = data.get("seconds") if isinstance(data, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return AgentOutcome.failure(
                ErrorKind.PERMANENT,
                "bad_input",
                'sleep agent needs input {"seconds": <number >= 0>}',
            )
        await asyncio.sleep(seconds)
        return AgentOutcome.success({"slept_s": seconds})

    def run_now(self, request: AgentRequest) -> AgentOutcome | None:
        return None  # it waits: run as a task


class FailAgent:
    """``{"kind": "transient"|"permanent", "times": n}``: fails runs 1..n, then succeeds
    with ``{"attempt": k}``. Without ``times`` it always fails."""

    name = "fail"
    concurrency: int | None = None
    inline = False

    async def run(self, request: AgentRequest) -> AgentOutcome:
        data = request.input if isinstance(request.input, dict) else {}
        kind_raw = data.get("kind", ErrorKind.TRANSIENT.value)
        times = data.get("times")
        if kind_raw not in (ErrorKind.TRANSIENT.value, ErrorKind.PERMANENT.value) or (
            times is not None and (isinstance(times, bool) or not isinstance(times, int))
        ):
            return AgentOutcome.failure(
                ErrorKind.PERMANENT,
                "bad_input",
                'fail agent needs input {"kind": "transient"|"permanent", "times": <int>}',
            )
        if times is None or request.attempt <= times:
            return AgentOutcome.failure(
                ErrorKind(kind_raw),
                "agent_error",
                f"fail agent: {kind_raw} failure on attempt {request.attempt}"
                + (f" of {times}" if times is not None else ""),
            )
        return AgentOutcome.success({"attempt": request.attempt})

    def run_now(self, request: AgentRequest) -> AgentOutcome | None:
        return None  # it waits: run as a task


# -- script agents --------------------------------------------------------------------


class ScriptAgent:
    """A short-lived process per step, in its own process group."""

    def __init__(
        self, name: str, spec: AgentSettings, *, term_grace_s: float = DEFAULT_TERM_GRACE_S
    ) -> None:
        self.name = name
        self.spec = spec
        self.concurrency: int | None = spec.concurrency
        self.inline = False
        self.term_grace_s = term_grace_s

    def run_now(self, request: AgentRequest) -> AgentOutcome | None:
        return None  # a process: run as a task

    async def run(self, request: AgentRequest) -> AgentOutcome:
        payload = json.dumps(
            {
                "step_id": request.step_id,
                "workflow_id": request.workflow_id,
                "attempt": request.attempt,
                "lease_epoch": request.lease_epoch,
                "input": request.input,
                "upstream": request.upstream,
            }
        ).encode()
        env = script_environment(self.spec, request, os.environ)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(loop),
                *self.spec.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return AgentOutcome.failure(
                ErrorKind.PERMANENT,
                "spawn",
                f"cannot start {self.spec.command[0]!r}: {exc.strerror or exc}",
            )
        proc = asyncio.subprocess.Process(transport, protocol, loop)
        run = _Run(proc, protocol.exited, self.spec.max_output_bytes)
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                await run.communicate(payload)
        except TimeoutError:
            await asyncio.shield(_terminate_group(proc, self.term_grace_s))
            return AgentOutcome.failure(
                ErrorKind.TRANSIENT,
                "timeout",
                f"timed out after {self.spec.timeout_s:g}s; process group killed",
                stderr_tail=run.stderr_tail(),
            )
        except asyncio.CancelledError:
            # Hard cancel, lost lease or drain: nothing of this run may go on.
            await asyncio.shield(_kill_group(proc))
            raise
        return self._outcome(proc, run)

    def _outcome(self, proc: asyncio.subprocess.Process, run: _Run) -> AgentOutcome:
        code = proc.returncode
        stderr_tail = run.stderr_tail()
        if run.overflowed:
            return AgentOutcome.failure(
                ErrorKind.PERMANENT,
                "output_too_large",
                f"output too large: more than {self.spec.max_output_bytes} bytes on stdout; "
                "process group killed",
                stderr_tail=stderr_tail,
            )
        raw = bytes(run.stdout)
        output, parse_error = _parse_output(raw)
        if code == 0:
            if parse_error is not None:
                return AgentOutcome.failure(
                    ErrorKind.PERMANENT,
                    "bad_output",
                    f"output is not JSON ({parse_error}): {_snippet(raw)!r}",
                    stderr_tail=stderr_tail,
                )
            explicit = explicit_error_kind(output)
            if explicit is not None:
                return AgentOutcome.failure(
                    explicit,
                    "agent_error",
                    _explicit_message(output),
                    output=output,
                    stderr_tail=stderr_tail,
                )
            return AgentOutcome.success(output)
        kind = classify(
            exit_code=code,
            transient_exit_codes=self.spec.transient_exit_codes,
            output=output if parse_error is None else None,
        )
        if code is not None and code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
            message = f"killed by {signame}"
            reason = "killed"
        else:
            message = f"exited with code {code}"
            reason = "exit_code"
        extra: dict[str, Any] = {"exit_code": code, "stderr_tail": stderr_tail}
        if parse_error is None and output is not None:
            extra["output"] = output
        return AgentOutcome.failure(kind, reason, message, **extra)


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol of ``create_subprocess_exec``, plus ``exited``: done when the
    script itself exits. ``Process.wait()`` also waits for every pipe to close, which a
    child the script left behind can hold open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class _Run:
    """The pipes of one script process: stdin written, stdout capped, stderr's tail."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        exited: asyncio.Future[None],
        max_output_bytes: int,
    ) -> None:
        self.proc = proc
        self.exited = exited
        self.max_output_bytes = max_output_bytes
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflowed = False

    async def communicate(self, payload: bytes) -> None:
        await asyncio.gather(
            self._write(payload), self._read_stdout(), self._read_stderr(), self._end_group()
        )
        await self.proc.wait()

    async def _end_group(self) -> None:
        # Once the script exits, whatever it left running in its group is killed, success
        # or not (INTERFACE.md); that also closes the pipes a leftover child still holds,
        # so the reads above end instead of waiting for the timeout.
        await asyncio.shield(self.exited)
        _signal_group(self.proc, signal.SIGKILL)

    def stderr_tail(self) -> str:
        text = bytes(self.stderr[-STDERR_TAIL_BYTES:]).decode("utf-8", errors="replace")
        return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL

    async def _write(self, payload: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(payload)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # The script did not read its input; that is its business.
        finally:
            stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await stdin.wait_closed()

    async def _read_stdout(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while chunk := await stdout.read(_READ_CHUNK):
            self.stdout += chunk
            if len(self.stdout) > self.max_output_bytes:
                self.overflowed = True
                del self.stdout[self.max_output_bytes :]
                _signal_group(self.proc, signal.SIGKILL)
                # Keep draining (and discarding) until every holder of the pipe is gone.
                while await stdout.read(_READ_CHUNK):
                    pass
                return

    async def _read_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        while chunk := await stderr.read(_READ_CHUNK):
            self.stderr += chunk
            if len(self.stderr) > 2 * STDERR_TAIL_BYTES:
                del self.stderr[:-STDERR_TAIL_BYTES]


def script_environment(
    spec: AgentSettings, request: AgentRequest, node_env: Mapping[str, str]
) -> dict[str, str]:
    """The whole environment a script sees: PATH, HOME and LANG from the node, the names
    in ``pass_env``, the agent's ``env``, and the step variables. Nothing else: the
    node's own environment holds its settings and secrets (``RELAYMESH_GOSSIP__KEYS``,
    a store URL with a password), which a script must never see."""
    env = {name: node_env[name] for name in INHERITED_ENV if name in node_env}
    env.setdefault("PATH", os.defpath)
    env.update({name: node_env[name] for name in spec.pass_env if name in node_env})
    env.update(spec.env)
    env.update(
        {
            "RELAYMESH_STEP_ID": request.step_id,
            "RELAYMESH_WORKFLOW_ID": request.workflow_id,
            "RELAYMESH_ATTEMPT": str(request.attempt),
            "RELAYMESH_LEASE_EPOCH": str(request.lease_epoch),
            "RELAYMESH_NODE": request.node,
        }
    )
    return env


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    # start_new_session=True made the child the leader of a group whose id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _terminate_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the group, wait up to ``grace_s`` for the leader, then SIGKILL the group
    anyway (members that ignored SIGTERM die too) and reap the leader."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace_s)
    await _kill_group(proc)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    _signal_group(proc, signal.SIGKILL)
    await proc.wait()


def _parse_output(raw: bytes) -> tuple[Any, str | None]:
    try:
        text = raw.decode("utf-8")
        if not text.strip():
            return None, None
        return json.loads(text, parse_constant=_reject_constant), None
    except json.JSONDecodeError as exc:
        return None, f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, str(exc) if isinstance(exc, ValueError) else type(exc).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd").strip()
    return text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS else "")


def _explicit_message(output: Any) -> str:
    error = output.get("error", {}) if isinstance(output, dict) else {}
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else "the agent reported an error"


# -- registry -------------------------------------------------------------------------


def known_agents(settings: Settings) -> frozenset[str]:
    """Agent names a workflow may use: the built-ins and every ``[agents.NAME]``."""
    return BUILTIN_AGENTS | frozenset(settings.agents)


class AgentRegistry:
    """Agents by name; a configured agent with a built-in's name replaces the built-in."""

    def __init__(
        self, agents: Mapping[str, AgentSettings], *, term_grace_s: float = DEFAULT_TERM_GRACE_S
    ) -> None:
        self.specs = dict(agents)
        builtins: list[Agent] = [EchoAgent(), SleepAgent(), FailAgent()]
        self._agents: dict[str, Agent] = {a.name: a for a in builtins}
        for name, spec in agents.items():
            self._agents[name] = ScriptAgent(name, spec, term_grace_s=term_grace_s)

    def get(self, name: str) -> Agent | None:
        return self._agents.get(name)

    def names(self) -> frozenset[str]:
        return frozenset(self._agents)
