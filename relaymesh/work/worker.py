"""The lease-fenced worker: claim ready steps, run their agents, commit the results.

One ``Worker`` per node. Four asyncio loops share its state:

* claim loop: pauses (safe mode, resource guard), else claims in one transaction
  per class of agent, honouring per-agent concurrency, circuit breakers and the LOW
  anti-starvation guard, then starts the agents. Agents that run in a task (scripts,
  ``sleep``) are claimed up to the free ``slots`` (at most ``claim_batch``): slots
  bound what runs at once. Inline agents (``Agent.inline``: ``echo``) finish inside
  the claim round and occupy no slot: they are claimed ``claim_batch`` at a time,
  bounded only by the commit backlog (``INLINE_HELD_BATCHES`` batches), so a small
  ``slots`` never throttles claiming and committing;
* commit loop: commits finished runs, successes many per transaction;
* heartbeat loop: extends every held lease each ``heartbeat_ms`` in one call;
* watch loop: each ``poll_ms`` asks the store which running leases were lost
  (hard cancel, reclaim) and kills those agents at once.

A held step is in exactly one state: ``queued`` (claimed, waiting for its agent's
concurrency), ``running``, ``done`` (waiting to be committed), or ``releasing``.
Its slot is free again only when it is committed, released or dropped, so memory
and the commit backlog stay bounded by ``worker.slots`` (task agents) plus
``INLINE_HELD_BATCHES x worker.claim_batch`` (inline agents).

Fencing is the store's: every write carries the lease. A write the store rejects
means another worker owns the step now; the result is dropped, never retried.
The store being unavailable is never fatal: each loop backs off with jitter and
keeps its pending work, so nothing is lost.

Dispatch statistics (``work/dispatch.py``): every held step ends with one outcome
(``_Held.outcome``: ``ok``, ``agent_error``, ``lost_lease``, ...), recorded in
``self.dispatch`` when the step is forgotten; a pause and a breaker opening are
recorded when they begin.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relaymesh.clock import Clock
from relaymesh.exceptions import LeaseLostError, StoreError, StoreUnavailableError
from relaymesh.logging import get_logger
from relaymesh.model import Claim, Priority, StepStatus
from relaymesh.settings import (
    AgentSettings,
    BreakerSettings,
    DispatchSettings,
    Settings,
    WorkerSettings,
)
from relaymesh.store.base import Store
from relaymesh.telemetry import WorkMetrics
from relaymesh.work.agents import (
    DEFAULT_TERM_GRACE_S,
    AgentOutcome,
    AgentRegistry,
    AgentRequest,
)
from relaymesh.work.breaker import BreakerState, CircuitBreaker
from relaymesh.work.dispatch import OK, DispatchStats, outcome_reason
from relaymesh.work.guard import ResourceGuard
from relaymesh.work.retry import ErrorKind, backoff_ms, next_action

__all__ = ["COMMIT_BATCH", "INLINE_HELD_BATCHES", "ClaimPlan", "HeldState", "Worker", "plan_claims"]

log = get_logger("relaymesh.work.worker")

COMMIT_BATCH = 512
"""Most successes committed in one transaction."""
INLINE_HELD_BATCHES = 2
"""Inline steps held at once, in claim batches: the next claim overlaps the commit of
the previous batch, and a stalled store leaves at most this many batches to expire."""
STORE_BACKOFF_BASE_MS = 50
STORE_BACKOFF_MAX_MS = 5000
RELEASE_TRIES = 3
_RELEASE_OUTCOMES = {"unknown_agent": "unknown_agent"}
"""A released step's dispatch outcome by release reason; any other is ``draining``."""


class HeldState(StrEnum):
    """Where a held step is; it is in exactly one of these until its slot frees."""

    QUEUED = "queued"
    """Claimed, waiting for its agent's concurrency."""
    RUNNING = "running"
    DONE = "done"
    """The run ended; its verdict waits to be committed."""
    RELEASING = "releasing"
    """Being given back unfinished (drain, unknown agent, a claim that came in late)."""


_ACTIVE = (HeldState.RUNNING, HeldState.QUEUED)
"""States whose lease the watch loop checks: lost ones are killed or dropped."""


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """The claims of one round: ``exact`` agents one call each for exactly their room
    (a half-open breaker's probe, or an agent whose concurrency room is below the
    batch), then the ``general`` agents together in one batch of the rest."""

    limit: int
    exact: tuple[tuple[str, int], ...]
    general: tuple[str, ...]
    low_first: int
    """1 when the LOW anti-starvation guard forces a LOW pick first in the batch."""


def plan_claims(
    agents: Iterable[str],
    *,
    free: int,
    claim_batch: int,
    allowance: Callable[[str], int | None],
    room_cap: Callable[[str], int | None],
    non_low_streak: int,
    low_starvation_threshold: int,
) -> ClaimPlan:
    """Split the known ``agents`` for one claim round (pure, so it is tested alone).
    ``allowance``: a breaker's claims allowed now (None: no limit, 0: open); ``room_cap``:
    how many more of that agent this node may hold now (None: only the slots). An agent
    with no room or an open breaker is not claimed for at all, so this node never hoards
    steps it cannot start while other nodes idle."""
    limit = min(free, claim_batch)
    general: list[str] = []
    exact: list[tuple[str, int]] = []
    for name in sorted(agents):
        allowed = allowance(name)
        cap = room_cap(name)
        room = limit if cap is None else min(limit, cap)
        if allowed == 0 or room <= 0:
            continue
        if allowed == 1:
            exact.append((name, 1))
        elif room < limit:
            exact.append((name, room))
        else:
            general.append(name)
    low_first = 1 if non_low_streak >= low_starvation_threshold else 0
    return ClaimPlan(limit, tuple(exact), tuple(general), low_first)


@dataclass(eq=False, slots=True)
class _Held:
    claim: Claim
    state: HeldState = HeldState.QUEUED
    task: asyncio.Task[None] | None = None
    lost: bool = False
    drained: bool = False
    started_ms: int = 0
    inline: bool = False
    """Claimed for an inline agent: counted against the inline backlog, not a slot."""
    outcome: str | None = None
    """Its dispatch outcome (``ok`` or a failure reason), recorded when it is forgotten."""


class _Backoff:
    """Full-jitter backoff for store errors, reset by the first success."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._failures = 0

    def next_s(self) -> float:
        self._failures += 1
        ms = backoff_ms(self._failures, STORE_BACKOFF_BASE_MS, STORE_BACKOFF_MAX_MS, self._rng)
        return max(ms, 1) / 1000.0

    def reset(self) -> None:
        self._failures = 0


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        node: str,
        settings: Callable[[], Settings],
        metrics: WorkMetrics,
        clock: Clock,
        rng: random.Random,
        local_alive: Callable[[], bool] = lambda: True,
        guard: ResourceGuard | None = None,
        term_grace_s: float = DEFAULT_TERM_GRACE_S,
    ) -> None:
        self.store = store
        self.node = node
        self._settings = settings
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self._local_alive = local_alive
        self._guard = guard if guard is not None else ResourceGuard(now_ms=clock.monotonic_ms)
        self._term_grace_s = term_grace_s
        self._actor = f"node:{node}"

        self._held: dict[str, _Held] = {}
        self._inline_held = 0
        """How many of ``_held`` are ``inline``."""
        self._queued: deque[_Held] = deque()
        self._load: Counter[str] = Counter()
        """Held and not yet done, per agent: what per-agent concurrency counts for claims."""
        self._running: Counter[str] = Counter()
        self._successes: list[tuple[_Held, Any]] = []
        self._failures: list[tuple[_Held, AgentOutcome]] = []

        self._stop = asyncio.Event()
        self._commit_wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        """Set whenever a slot frees or a run ends: wakes the claim loop and drain."""
        self._write_lock = asyncio.Lock()
        """Commits and heartbeats never interleave, so a heartbeat never races the commit
        of the same step into a spurious conflict."""
        self._bg: set[asyncio.Task[Any]] = set()

        self._breakers: dict[str, CircuitBreaker] = {}
        self._breaker_settings: BreakerSettings | None = None
        self._agent_specs: Mapping[str, AgentSettings] | None = None
        self._registry = AgentRegistry({}, term_grace_s=term_grace_s)
        self._non_low_streak = 0
        self._paused: str | None = None
        self._claim_backoff = _Backoff(rng)
        self._claim_unsure = False
        """A claim failed with the store unavailable: it may have landed unseen."""
        self._commit_backoff = _Backoff(rng)
        self._loop_running = False
        self.last_round_ms: int | None = None
        """``clock.monotonic_ms()`` when the claim loop last began a round (None before
        ``run``): what the node's stall check (``/healthz``) watches."""
        self._starting = False
        self._closing = False
        self._drain_cut = False
        self._latency: dict[str, Any] = {}
        self.dispatch = DispatchStats(
            node, clock.monotonic_ms, wall_offset_ms=clock.wall_ms() - clock.monotonic_ms()
        )
        """The one-hour dispatch window (``work/dispatch.py``): every claimed step's
        outcome and every refusing claim decision."""
        self._dispatch_counters: dict[str, Any] = {}
        self._dispatch_settings: DispatchSettings | None = None

    # -- public API ---------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and run steps until ``stop()`` (or ``drain``); then finish what is held
        (commit or, after a drain, release) and return. Cancelling ``run`` kills every
        running agent; leases it held expire or are reclaimed."""
        if self._loop_running:
            raise RuntimeError("Worker.run is already running")
        self._loop_running = True
        self._closing = False
        helpers = [
            asyncio.create_task(self._commit_loop(), name="worker-commit"),
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._watch_loop(), name="worker-watch"),
        ]
        log.info("worker_started", node=self.node)
        try:
            await self._claim_loop()
            while self._held:
                self._changed.clear()
                await self._changed.wait()
        finally:
            self._closing = True  # nothing queued may start while we tear down
            for task in helpers:
                task.cancel()
            tasks = [h.task for h in self._held.values() if h.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*helpers, *tasks, return_exceptions=True)
            self._loop_running = False
            log.info("worker_stopped", node=self.node, abandoned=len(self._held))

    def stop(self) -> None:
        """Stop claiming new steps. Held steps still run and commit."""
        self._stop.set()

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop claiming; release steps not started yet; let running steps finish for up
        to ``timeout_s`` (default ``worker.drain_timeout_s``); kill the rest and release
        their leases so another node can take them at once; commit what finished."""
        if timeout_s is None:
            timeout_s = self._settings().worker.drain_timeout_s
        self.stop()
        self._closing = True  # queued steps are given back, not started
        log.info("drain_started", node=self.node, held=len(self._held), timeout_s=timeout_s)
        queued = list(self._queued)
        self._queued.clear()
        for held in queued:
            held.state = HeldState.RELEASING
            self._load[held.claim.agent] -= 1
        released = await self._release_many(queued, "drain")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._running_now() and not self._drain_cut and (left := deadline - loop.time()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

        remaining = [h for h in self._held.values() if h.state is HeldState.RUNNING]
        for held in remaining:
            held.drained = True
            assert held.task is not None
            held.task.cancel()
        await asyncio.gather(
            *(h.task for h in remaining if h.task is not None), return_exceptions=True
        )
        for held in remaining:
            held.state = HeldState.RELEASING
        released += await self._release_many(remaining, "drain")

        flush_deadline = loop.time() + max(5.0, timeout_s)
        while (self._successes or self._failures) and loop.time() < flush_deadline:
            if not await self._flush_once():
                await asyncio.sleep(self._commit_backoff.next_s())
        log.info(
            "drain_finished",
            node=self.node,
            released=released,
            killed=len(remaining),
            uncommitted=len(self._successes) + len(self._failures),
        )
        self._changed.set()

    def cut_drain_short(self) -> None:
        """End a drain's wait for running steps now (a second SIGTERM): they are killed
        and their leases released at once, as at the drain timeout. Before a drain
        begins, it makes that drain not wait at all."""
        self._drain_cut = True
        self._changed.set()

    def running(self) -> list[str]:
        """Ids of the steps this worker holds a lease on (queued, running or committing)."""
        return sorted(self._held)

    @property
    def paused_reason(self) -> str | None:
        """Why the last claim round was skipped (``local_not_alive``, ``load``,
        ``memory``, ``swap``, ``disabled``), or None."""
        return self._paused

    def breaker_states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in self._breakers.items()}

    # -- claim loop ----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` or ``drain()`` was called: no more claim rounds."""
        return self._stop.is_set()

    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self.last_round_ms = self.clock.monotonic_ms()
            settings = self._settings()
            try:
                self._refresh(settings)
                if self._pause_reason(settings) is not None:
                    await self._wait_stop_or_change(settings.worker.poll_ms)
                    continue
                free = settings.worker.slots - (len(self._held) - self._inline_held)
                inline_free = INLINE_HELD_BATCHES * settings.worker.claim_batch - self._inline_held
                if free <= 0 and inline_free <= 0:
                    await self._wait_stop_or_change(settings.worker.poll_ms)
                    continue
                if self._claim_unsure:
                    await self._release_unknown_claims()
                claimed = await self._claim_round(settings, free, inline_free)
                self._claim_backoff.reset()
                if claimed == 0 and not self._stop.is_set():
                    await self._wait_for_work(settings.worker.poll_ms)
            except StoreError as exc:
                self.metrics.store_errors.labels("claim").inc()
                self._record_dispatch(None, "store_error")
                if isinstance(exc, StoreUnavailableError):
                    # The claim may have landed with its answer lost: look before the next.
                    self._claim_unsure = True
                delay = self._claim_backoff.next_s()
                log.warning("store_error", op="claim", error=str(exc), retry_in_s=delay)
                await self._wait_stop(delay)
            except Exception:
                delay = self._claim_backoff.next_s()
                log.exception("worker_error", loop="claim", retry_in_s=delay)
                await self._wait_stop(delay)

    def _pause_reason(self, settings: Settings) -> str | None:
        reason: str | None = None
        detail = ""
        if not settings.worker.enabled:
            reason, detail = "disabled", "worker.enabled is false"
        elif settings.worker.pause_when_local_not_alive and not self._local_alive():
            reason, detail = "local_not_alive", "this node is not ALIVE in its own view"
        else:
            verdict = self._guard.check(settings.guard)
            if verdict is not None:
                reason, detail = verdict.reason, verdict.detail
        if reason is not None:
            self.metrics.worker_paused.labels(reason).inc()
            if reason != self._paused:
                log.warning("worker_paused", node=self.node, reason=reason, detail=detail)
                if reason != "disabled":  # an operator's choice, not a refusal
                    refusal = "local_not_alive" if reason == "local_not_alive" else "guard_refused"
                    self._record_dispatch(None, refusal)
        elif self._paused is not None:
            log.info("worker_resumed", node=self.node, was=self._paused)
        self._paused = reason
        return reason

    async def _claim_round(self, settings: Settings, free: int, inline_free: int) -> int:
        """One claim round per class of agent: inline agents within their backlog room,
        task agents within the free slots (each at most ``claim_batch``)."""
        inline: list[str] = []
        tasks: list[str] = []
        for name in sorted(self._registry.names()):
            agent = self._registry.get(name)
            (inline if agent is not None and agent.inline else tasks).append(name)
        claimed = 0
        for names, room in ((inline, inline_free), (tasks, free)):
            if names and room > 0:
                claimed += await self._claim_class(settings.worker, names, room)
        return claimed

    async def _claim_class(self, worker: WorkerSettings, names: list[str], free: int) -> int:
        """Claims for one class. Agents are split three ways: a half-open breaker's
        agent gets its one probe; an agent whose concurrency room is below the batch is
        claimed for exactly that room (so this node never hoards steps it cannot start
        while other nodes idle); everything else shares one batch claim, in priority
        order."""

        def allowance(name: str) -> int | None:
            breaker = self._breakers.get(name)
            return breaker.allowance() if breaker is not None else None

        def room_cap(name: str) -> int | None:
            agent = self._registry.get(name)
            cap = agent.concurrency if agent is not None else None
            return None if cap is None else cap - self._load[name]

        plan = plan_claims(
            names,
            free=free,
            claim_batch=worker.claim_batch,
            allowance=allowance,
            room_cap=room_cap,
            non_low_streak=self._non_low_streak,
            low_starvation_threshold=worker.low_starvation_threshold,
        )
        limit = plan.limit
        claimed = 0
        for name, room in plan.exact:
            if claimed >= limit:
                break
            got = await self.store.claim_steps(
                self.node,
                limit=min(room, limit - claimed),
                lease_ms=worker.lease_ms,
                agents=[name],
            )
            breaker = self._breakers.get(name)
            if breaker is not None and breaker.allowance() == 1:
                breaker.on_claimed(len(got))
                if got:
                    log.info("breaker_probe_claimed", agent=name, step_id=got[0].step_id)
            self._note_priorities(got, forced=False)
            # Accepted at once: a store error in the next call must not orphan them.
            self._accept(got, worker.lease_ms)
            claimed += len(got)
        if claimed < limit and plan.general:
            got = await self.store.claim_steps(
                self.node,
                limit=limit - claimed,
                lease_ms=worker.lease_ms,
                agents=list(plan.general),
                low_first=plan.low_first,
            )
            self._note_priorities(got, forced=plan.low_first > 0)
            self._accept(got, worker.lease_ms)
            claimed += len(got)
        return claimed

    async def _release_unknown_claims(self) -> None:
        """A claim whose connection died after the server committed it leaves steps
        RUNNING under this node's name that this worker never heard of: nobody would run
        them until their lease expired. Give them back (fenced, attempt returned), once,
        before the next claim. Only the claim loop claims, so every lease it does hold
        is in ``_held`` by now."""
        for lease in await self.store.leases_held_by(self.node):
            if lease.step_id in self._held:
                continue
            try:
                await self.store.release(lease, self.node, "claim_outcome_unknown")
            except LeaseLostError:
                continue  # reclaimed or cancelled meanwhile: not ours any more
            log.warning("unknown_claim_released", step_id=lease.step_id, epoch=lease.lease_epoch)
        self._claim_unsure = False

    def _note_priorities(self, claims: list[Claim], *, forced: bool) -> None:
        """Anti-starvation bookkeeping: count consecutive non-LOW claims; a LOW claim
        taken while the guard forced ``low_first`` is counted."""
        for claim in claims:
            if claim.priority == Priority.LOW:
                if forced and self._non_low_streak > 0:
                    self.metrics.low_starvation_count.inc()
                    log.info(
                        "low_starvation_guard",
                        step_id=claim.step_id,
                        after_non_low_claims=self._non_low_streak,
                    )
                self._non_low_streak = 0
            else:
                self._non_low_streak += 1

    def _accept(self, claims: list[Claim], lease_ms: int) -> None:
        if self._stop.is_set() and claims:
            # A claim that was in flight when stop/drain began: give it straight back.
            held_list = [_Held(c, state=HeldState.RELEASING) for c in claims]
            for held in held_list:
                self._hold(held)
            self._spawn(self._release_many(held_list, "stopping"))
            return
        if claims:
            self.metrics.claims.inc(len(claims))
        start_latency = self.metrics.step_start_latency_seconds
        for claim in claims:
            if claim.ready_at_ms is not None:
                claimed_at_ms = claim.lease_expires_at_ms - lease_ms
                start_latency.observe(max(0, claimed_at_ms - claim.ready_at_ms) / 1000.0)
            previous = self._held.get(claim.step_id)
            if previous is not None:
                # Our earlier lease on this step was reclaimed (expiry) and we claimed it
                # again before noticing: the old run is fenced, stop it.
                self._lose(previous, "reclaimed", conflict=False)
                self._forget(previous)
            held = _Held(claim)
            self._hold(held)
            self._load[claim.agent] += 1
            self._queued.append(held)
        if claims:
            # One record per batch: a record per step would cost more than the step.
            log.debug("leases_claimed", count=len(claims), first_step_id=claims[0].step_id)
        self._start_queued()

    def _start_queued(self) -> None:
        """Start every queued step whose agent has room. Not re-entrant: an inline run
        that ends inside the loop only marks the queue for another pass."""
        if self._starting or self._closing or not self._queued:
            return
        self._starting = True
        try:
            waiting: deque[_Held] = deque()
            while self._queued:
                held = self._queued.popleft()
                name = held.claim.agent
                agent = self._registry.get(name)
                if agent is None:
                    log.warning("unknown_agent", step_id=held.claim.step_id, agent=name)
                    held.state = HeldState.RELEASING
                    self._load[name] -= 1
                    self._spawn(self._release_many([held], "unknown_agent"))
                    continue
                if agent.concurrency is not None and self._running[name] >= agent.concurrency:
                    waiting.append(held)
                    continue
                # Agents that never wait (echo) answer inline, skipping the task and the
                # running-step bookkeeping: at thousands of steps per second they would
                # cost more than the step.
                outcome = agent.run_now(AgentRequest.from_claim(held.claim, self.node))
                if outcome is not None:
                    self._load[name] -= 1
                    self._verdict(held, outcome, 0)
                    continue
                held.state = HeldState.RUNNING
                held.started_ms = self.clock.monotonic_ms()
                self._running[name] += 1
                held.task = asyncio.create_task(
                    self._execute(held), name=f"step-{held.claim.step_id}"
                )
            self._queued.extendleft(reversed(waiting))
        finally:
            self._starting = False
        self.metrics.running_steps.set(sum(self._running.values()))

    # -- running agents ------------------------------------------------------------------

    async def _execute(self, held: _Held) -> None:
        claim = held.claim
        agent = self._registry.get(claim.agent)
        assert agent is not None
        try:
            outcome = await agent.run(AgentRequest.from_claim(claim, self.node))
        except asyncio.CancelledError:
            self._run_ended(held)
            if held.lost:
                self._forget(held)
            raise
        except Exception as exc:  # a bug in an agent must not take the worker down
            log.exception("agent_crashed", step_id=claim.step_id, agent=claim.agent)
            outcome = AgentOutcome.failure(
                ErrorKind.PERMANENT, "exception", f"{type(exc).__name__}: {exc}"
            )
        self._finish(held, outcome)

    def _finish(self, held: _Held, outcome: AgentOutcome) -> None:
        """A run ended with a verdict: queue it for commit (unless the lease was lost)."""
        self._run_ended(held)
        self._verdict(held, outcome, self.clock.monotonic_ms() - held.started_ms)

    def _verdict(self, held: _Held, outcome: AgentOutcome, elapsed_ms: int) -> None:
        claim = held.claim
        latency = self._latency.get(claim.agent)
        if latency is None:
            latency = self._latency[claim.agent] = self.metrics.step_latency_seconds.labels(
                claim.agent
            )
        latency.observe(elapsed_ms / 1000.0)
        if held.lost:
            self._forget(held)
            return
        held.state = HeldState.DONE
        breaker = self._breaker(claim.agent)
        if outcome.ok:
            breaker.record_success()
            self._successes.append((held, outcome.result))
        else:
            breaker.record_failure()
            self._failures.append((held, outcome))
        self._commit_wakeup.set()

    def _run_ended(self, held: _Held) -> None:
        self._running[held.claim.agent] -= 1
        self._load[held.claim.agent] -= 1
        self._start_queued()
        self.metrics.running_steps.set(sum(self._running.values()))
        self._changed.set()

    def _hold(self, held: _Held) -> None:
        agent = self._registry.get(held.claim.agent)
        held.inline = agent is not None and agent.inline
        self._held[held.claim.step_id] = held
        if held.inline:
            self._inline_held += 1

    def _forget(self, held: _Held) -> None:
        if self._held.get(held.claim.step_id) is held:
            del self._held[held.claim.step_id]
            if held.inline:
                self._inline_held -= 1
            if held.outcome is not None:
                self._record_dispatch(held.claim.agent, held.outcome)
        self._changed.set()

    def _record_dispatch(self, agent: str | None, reason: str) -> None:
        """The dispatch hook: one sample into the window and ``dispatch_total``."""
        self.dispatch.record(agent, reason)
        counter = self._dispatch_counters.get(reason)
        if counter is None:
            result = "success" if reason == OK else "failed"
            counter = self._dispatch_counters[reason] = self.metrics.dispatch.labels(result, reason)
        counter.inc()

    def _running_now(self) -> bool:
        return any(h.state is HeldState.RUNNING for h in self._held.values())

    def _lose(self, held: _Held, event: str, *, conflict: bool) -> None:
        """The store says another owner (or nobody) holds this step now: drop it."""
        if held.lost:
            return
        held.lost = True
        if held.outcome is None:
            held.outcome = "lost_lease"
        log.warning(
            "lease_lost",
            step_id=held.claim.step_id,
            epoch=held.claim.lease_epoch,
            write=event,
            state=held.state,
        )
        if conflict:
            self.metrics.lease_conflicts.labels(event).inc()
        if held.claim.agent in self._breakers:
            self._breakers[held.claim.agent].record_abandoned()
        if held.state is HeldState.RUNNING and held.task is not None:
            held.task.cancel()
        elif held.state is HeldState.QUEUED:
            with contextlib.suppress(ValueError):
                self._queued.remove(held)
            self._load[held.claim.agent] -= 1
            self._forget(held)
        # "done": the commit loop drops it; "releasing": the release finds it fenced.

    # -- commits -------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_wakeup.wait()
            self._commit_wakeup.clear()
            while self._successes or self._failures:
                try:
                    ok = await self._flush_once()
                except Exception:
                    log.exception("worker_error", loop="commit")
                    ok = False
                if not ok:
                    await asyncio.sleep(self._commit_backoff.next_s())

    async def _flush_once(self) -> bool:
        """Commit one batch of successes and the pending failures. False when the store
        is unavailable (what was not committed stays queued, in order)."""
        async with self._write_lock:
            if self._successes and not await self._commit_successes():
                return False
            while self._failures:
                held, outcome = self._failures[0]
                if not held.lost and not await self._commit_failure(held, outcome):
                    return False
                self._failures.pop(0)
                self._forget(held)
        self._commit_backoff.reset()
        return True

    async def _commit_successes(self) -> bool:
        batch = self._successes[:COMMIT_BATCH]
        live = [(h, r) for h, r in batch if not h.lost]
        oks: list[bool] = []
        if live:
            try:
                oks = await self.store.commit_success_many(
                    self.node, [(h.claim.lease, r) for h, r in live]
                )
            except StoreUnavailableError as exc:
                self.metrics.store_errors.labels("commit_success").inc()
                log.warning("store_error", op="commit_success", error=str(exc))
                return False
            except StoreError as exc:
                # Not an outage: something in the batch cannot be stored (a result the
                # backend rejects). Retrying the batch would block every commit behind it.
                self.metrics.store_errors.labels("commit_success").inc()
                log.warning("store_error", op="commit_success", error=str(exc), isolating=True)
                return await self._commit_successes_one_by_one(len(batch))
        del self._successes[: len(batch)]
        for held, _ in batch:
            if held.lost:
                self._forget(held)
        for (held, _), ok in zip(live, oks, strict=True):
            if ok:
                held.outcome = OK
            else:
                self._lose(held, "commit_success", conflict=True)
            self._forget(held)
        return True

    async def _commit_successes_one_by_one(self, count: int) -> bool:
        for _ in range(count):
            held, result = self._successes[0]
            if not held.lost:
                try:
                    ok = (
                        await self.store.commit_success_many(
                            self.node, [(held.claim.lease, result)]
                        )
                    )[0]
                except StoreUnavailableError as exc:
                    self.metrics.store_errors.labels("commit_success").inc()
                    log.warning("store_error", op="commit_success", error=str(exc))
                    return False
                except StoreError as exc:
                    log.error("result_not_storable", step_id=held.claim.step_id, error=str(exc))
                    self._successes.pop(0)
                    self._failures.append(
                        (
                            held,
                            AgentOutcome.failure(
                                ErrorKind.PERMANENT,
                                "unstorable_result",
                                f"the store rejected the result: {_clip(str(exc))}",
                            ),
                        )
                    )
                    continue
                if ok:
                    held.outcome = OK
                else:
                    self._lose(held, "commit_success", conflict=True)
            self._successes.pop(0)
            self._forget(held)
        return True

    async def _commit_failure(self, held: _Held, outcome: AgentOutcome) -> bool:
        claim = held.claim
        transient = outcome.kind is ErrorKind.TRANSIENT
        delay_ms = next_action(
            claim.attempt,
            claim.max_attempts,
            transient,
            base_ms=claim.base_backoff_ms,
            max_ms=claim.max_backoff_ms,
            rng=self.rng,
        )
        error = {**(outcome.error or {}), "attempt": claim.attempt, "node": self.node}
        try:
            try:
                status = await self.store.commit_failure(claim.lease, self.node, error, delay_ms)
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                # The error object itself was rejected (odd bytes from an agent): keep the
                # verdict with a plain message rather than block every commit behind it.
                self.metrics.store_errors.labels("commit_failure").inc()
                log.warning("store_error", op="commit_failure", error=str(exc), simplified=True)
                error = {
                    "kind": error.get("kind", ErrorKind.PERMANENT.value),
                    "reason": str(error.get("reason", "unknown")),
                    "message": _clip(ascii(error.get("message", ""))),
                    "attempt": claim.attempt,
                    "node": self.node,
                }
                status = await self.store.commit_failure(claim.lease, self.node, error, delay_ms)
        except LeaseLostError:
            self._lose(held, "commit_failure", conflict=True)
            return True
        except StoreUnavailableError as exc:
            self.metrics.store_errors.labels("commit_failure").inc()
            log.warning("store_error", op="commit_failure", error=str(exc))
            return False
        except StoreError as exc:
            # Still rejected: give up on this verdict; the lease expires and maintenance
            # puts the step back, so it is retried, never lost.
            self.metrics.store_errors.labels("commit_failure").inc()
            log.error("failure_not_storable", step_id=claim.step_id, error=str(exc))
            held.outcome = "store_error"
            return True
        held.outcome = outcome_reason(error)
        if status == StepStatus.DEAD_LETTER:
            self.metrics.dead_letter.inc()
            log.warning(
                "step_dead_letter",
                step_id=claim.step_id,
                agent=claim.agent,
                attempt=claim.attempt,
                kind=error.get("kind"),
                reason=error.get("reason"),
                message=error.get("message"),
            )
        else:
            log.info(
                "step_retry_scheduled",
                step_id=claim.step_id,
                agent=claim.agent,
                attempt=claim.attempt,
                max_attempts=claim.max_attempts,
                delay_ms=delay_ms,
                reason=error.get("reason"),
            )
        return True

    async def _release_many(self, helds: list[_Held], reason: str) -> int:
        released = 0
        for held in helds:
            for attempt in range(1, RELEASE_TRIES + 1):
                try:
                    await self.store.release(held.claim.lease, self.node, reason)
                except LeaseLostError:
                    self._lose(held, "release", conflict=True)
                except StoreError as exc:
                    self.metrics.store_errors.labels("release").inc()
                    log.warning(
                        "store_error", op="release", step_id=held.claim.step_id, error=str(exc)
                    )
                    if attempt < RELEASE_TRIES:
                        await asyncio.sleep(backoff_ms(attempt, 100, 1000, self.rng) / 1000.0)
                        continue
                else:
                    released += 1
                    log.info("lease_released", step_id=held.claim.step_id, reason=reason)
                break
            if held.outcome is None:
                held.outcome = _RELEASE_OUTCOMES.get(reason, "draining")
            self._forget(held)
        return released

    # -- heartbeats and lost leases ------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backoff = _Backoff(self.rng)
        delay_s = self._settings().worker.heartbeat_ms / 1000.0
        while True:
            await asyncio.sleep(delay_s)
            settings = self._settings()
            delay_s = settings.worker.heartbeat_ms / 1000.0
            try:
                await self._heartbeat_once(settings.worker.lease_ms)
                backoff.reset()
            except StoreError as exc:
                self.metrics.store_errors.labels("heartbeat").inc()
                delay_s = min(delay_s, backoff.next_s())
                log.warning("store_error", op="heartbeat", error=str(exc), retry_in_s=delay_s)
            except Exception:
                log.exception("worker_error", loop="heartbeat")

    async def _heartbeat_once(self, lease_ms: int) -> None:
        async with self._write_lock:
            helds = [
                h for h in self._held.values() if not h.lost and h.state is not HeldState.RELEASING
            ]
            if not helds:
                return
            result = await self.store.heartbeat_many(
                self.node, [h.claim.lease for h in helds], lease_ms
            )
        for held in helds:
            if result.get(held.claim.step_id, 0) is None:
                self._lose(held, "heartbeat", conflict=True)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings().worker.poll_ms / 1000.0)
            try:
                await self._watch_once()
            except StoreError as exc:
                self.metrics.store_errors.labels("lost_leases").inc()
                log.warning("store_error", op="lost_leases", error=str(exc))
            except Exception:
                log.exception("worker_error", loop="watch")

    async def _watch_once(self) -> None:
        helds = [h for h in self._held.values() if h.state in _ACTIVE and not h.lost]
        if not helds:
            return
        lost = set(await self.store.lost_leases([h.claim.lease for h in helds]))
        for held in helds:
            if held.claim.step_id in lost and held.state in _ACTIVE:
                self._lose(held, "watch", conflict=False)

    # -- configuration, breakers, helpers ----------------------------------------------------

    def _refresh(self, settings: Settings) -> None:
        if settings.agents is not self._agent_specs and settings.agents != self._agent_specs:
            self._registry = AgentRegistry(settings.agents, term_grace_s=self._term_grace_s)
            if self._agent_specs is not None:
                log.info("agents_reloaded", agents=sorted(self._registry.names()))
        self._agent_specs = settings.agents
        if (
            settings.breaker is not self._breaker_settings
            or settings.dispatch is not self._dispatch_settings
        ):
            for breaker in self._breakers.values():
                breaker.configure(
                    failure_threshold=settings.breaker.failure_threshold,
                    open_ms=settings.breaker.open_ms,
                    min_success_rate=settings.dispatch.min_success_rate,
                    min_samples=settings.dispatch.min_samples,
                )
            self._breaker_settings = settings.breaker
            self._dispatch_settings = settings.dispatch

    def _breaker(self, agent: str) -> CircuitBreaker:
        breaker = self._breakers.get(agent)
        if breaker is None:
            settings = self._settings()
            cfg = settings.breaker
            breaker = CircuitBreaker(
                agent,
                failure_threshold=cfg.failure_threshold,
                open_ms=cfg.open_ms,
                clock=self.clock,
                on_transition=self._on_breaker_transition,
                min_success_rate=settings.dispatch.min_success_rate,
                min_samples=settings.dispatch.min_samples,
            )
            self._breakers[agent] = breaker
        return breaker

    def _on_breaker_transition(self, agent: str, old: BreakerState, new: BreakerState) -> None:
        reason: str | None = None
        details: dict[str, Any] = {}
        breaker = self._breakers.get(agent)
        if new is BreakerState.OPEN and breaker is not None:
            reason = breaker.open_reason
            rate, runs = breaker.success_rate()
            details = {"reason": reason, "runs": runs}
            if rate is not None:
                details["success_rate"] = round(rate, 4)
        log.warning(
            "breaker_transition",
            agent=agent,
            old=old.name,
            new=new.name,
            node=self.node,
            **details,
        )
        self.metrics.breaker_state.labels(agent).set(int(new))
        self.metrics.breaker_transitions.labels(agent, new.name, reason or "none").inc()
        if reason is not None:
            self._record_dispatch(agent, reason)
        self._spawn(self._audit_breaker(agent, old, new, details))

    async def _audit_breaker(
        self, agent: str, old: BreakerState, new: BreakerState, details: dict[str, Any]
    ) -> None:
        try:
            await self.store.record_audit(
                self._actor,
                "breaker_transition",
                agent,
                {"agent": agent, "from": old.name, "to": new.name, "node": self.node, **details},
            )
        except StoreError as exc:
            self.metrics.store_errors.labels("record_audit").inc()
            log.warning("store_error", op="record_audit", error=str(exc))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _wait_stop(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay_s)

    async def _wait_stop_or_change(self, poll_ms: int) -> None:
        self._changed.clear()
        stop = asyncio.ensure_future(self._stop.wait())
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait(
                {stop, changed}, timeout=poll_ms / 1000.0, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
            changed.cancel()

    async def _wait_for_work(self, poll_ms: int) -> None:
        # Not raced against stop(): cancelling a store call half-way (a LISTEN connection
        # being set up) can leak a connection; stop() waits at most ``poll_ms`` here, and
        # drain() does not wait for this loop at all.
        await self.store.wait_for_work(poll_ms)


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
