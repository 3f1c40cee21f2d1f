"""The store's rules, once for every backend: what SQLite, PostgreSQL and the in-memory
store decide alike, with the SQL (or the dicts) left to each of them.

Owns: which cancel modes and replay sources exist (one message each), the submit plan
(ids, initial statuses, dependency rows), the workflow status rule, picking a
lock-compatible claim batch, the committed/rejected split of a batch commit, the
leader-acquire rule, what a lost attempt and a rejected fenced write say, and the
details of every audit row a store writes. Must not: do I/O, read a clock or draw
random numbers (times and ids come in as arguments), so each rule is unit-tested
alone and no backend can drift from the others.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relaymesh.exceptions import InvalidStateError, LeaseLostError, WorkflowError
from relaymesh.model import (
    CancelResult,
    LeaseRef,
    StepRecord,
    StepStatus,
    WorkflowSpec,
    WorkflowStatus,
    check_graph,
)

__all__ = [
    "CANCEL_MODES",
    "EVENT_MARGIN_MS",
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "REPLAYABLE",
    "Candidate",
    "SubmitPlan",
    "cancel_details",
    "check_cancel_mode",
    "check_idempotency_key",
    "check_replayable",
    "key_details",
    "leader_epoch",
    "lease_lost",
    "lost_error",
    "lost_lease_ids",
    "not_replayable",
    "pick_batch",
    "plan_submit",
    "prune_details",
    "reclaim_to_dead_letter",
    "recover_details",
    "reload_details",
    "replay_batch_details",
    "replay_details",
    "replay_status",
    "split_commits",
    "submit_details",
    "workflow_status",
]

CANCEL_MODES = ("hard", "soft")
REPLAYABLE = (StepStatus.DEAD_LETTER, StepStatus.CANCELLED)

# A claim candidate: (step id, its lock keys).
Candidate = tuple[str, tuple[str, ...]]


# -- operator checks (one message each, whichever layer asks first) -----------------


def check_cancel_mode(mode: str) -> None:
    if mode not in CANCEL_MODES:
        raise InvalidStateError(f"unknown cancel mode {mode!r}: use hard or soft")


def check_replayable(status: StepStatus | str, step_id: str | None = None) -> StepStatus:
    """``status`` as a ``StepStatus`` when steps in it can be replayed; else
    ``InvalidStateError`` (naming ``step_id`` when one step was asked for)."""
    status = StepStatus(status)
    if status not in REPLAYABLE:
        raise not_replayable(status, step_id)
    return status


def not_replayable(status: StepStatus, step_id: str | None = None) -> InvalidStateError:
    what = f"step {step_id} is {status.value}" if step_id else f"{status.value} steps"
    return InvalidStateError(f"{what}: only DEAD_LETTER or CANCELLED steps can be replayed")


def replay_status(deps_all_succeeded: bool) -> StepStatus:
    """Where a replayed step goes: READY, or PENDING while a dependency has not succeeded."""
    return StepStatus.READY if deps_all_succeeded else StepStatus.PENDING


# -- submit ---------------------------------------------------------------------------

IDEMPOTENCY_KEY_MAX_CHARS = 200


def check_idempotency_key(key: str) -> None:
    """1..200 printable characters, else ``WorkflowError``."""
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_CHARS or not key.isprintable():
        raise WorkflowError(
            f"idempotency key must be 1..{IDEMPOTENCY_KEY_MAX_CHARS} printable characters"
        )


@dataclass(frozen=True, slots=True)
class SubmitPlan:
    """What a submit inserts, decided before any SQL runs."""

    workflow_id: str
    status: WorkflowStatus
    step_ids: dict[str, str]
    """Step name to its new id, in the spec's order."""
    step_status: dict[str, StepStatus]
    """READY without dependencies, else PENDING."""
    dependents: dict[str, int]
    """Step name to how many steps depend on it (0: no dependents to ready)."""
    locks: dict[str, tuple[str, ...]]
    """Step name to its lock keys, sorted, once each."""
    deps: tuple[tuple[str, str], ...]
    """(step id, id of a step it depends on), once per pair."""


def plan_submit(spec: WorkflowSpec, new_id: Callable[[], str]) -> SubmitPlan:
    """The ids and initial state of ``spec``'s rows. Raises ``WorkflowError`` for a graph
    that is not a DAG of unique names (``model.check_graph``, the rule
    ``work/workflow.py`` applies to a workflow file)."""
    check_graph(spec.steps)
    workflow_id = new_id()
    ids = {step.name: new_id() for step in spec.steps}
    dependents = dict.fromkeys(ids, 0)
    for step in spec.steps:
        for dep in step.depends_on:
            dependents[dep] += 1
    return SubmitPlan(
        workflow_id=workflow_id,
        status=WorkflowStatus.RUNNING if spec.steps else WorkflowStatus.SUCCEEDED,
        step_ids=ids,
        step_status={
            s.name: StepStatus.PENDING if s.depends_on else StepStatus.READY for s in spec.steps
        },
        dependents=dependents,
        locks={s.name: tuple(sorted(set(s.locks))) for s in spec.steps},
        deps=tuple(
            (ids[s.name], ids[dep]) for s in spec.steps for dep in dict.fromkeys(s.depends_on)
        ),
    )


# -- the workflow status rule and claim batches -------------------------------------


def workflow_status(*, active: bool, pending: bool, dead: bool, cancelled: bool) -> WorkflowStatus:
    """A workflow runs while any step can still make progress. A dead letter fails it
    once nothing else is active (its dependents stay PENDING, so waiting on them would
    never end); otherwise a cancelled step makes it CANCELLED, else it SUCCEEDED."""
    if active:
        return WorkflowStatus.RUNNING
    if dead:
        return WorkflowStatus.FAILED
    if pending:
        return WorkflowStatus.RUNNING
    if cancelled:
        return WorkflowStatus.CANCELLED
    return WorkflowStatus.SUCCEEDED


def pick_batch(
    candidates: Iterable[Candidate],
    *,
    want: int,
    picked: list[str],
    held: set[str],
) -> None:
    """Append to ``picked`` (up to ``want`` in all) the candidates, in order, whose lock
    keys are not in ``held``; the keys of each pick join ``held``. So no two steps of one
    batch share a key (the SQL already skipped keys held by RUNNING steps)."""
    already = set(picked)
    for step_id, keys in candidates:
        if len(picked) >= want:
            return
        if step_id in already or any(key in held for key in keys):
            continue
        picked.append(step_id)
        already.add(step_id)
        held.update(keys)


# -- fenced writes ----------------------------------------------------------------------


def split_commits(
    leases: Sequence[LeaseRef], committed: Collection[str], landed: Collection[str] = ()
) -> tuple[list[bool], list[LeaseRef]]:
    """Per item of a batch commit, in order: True where its step is in ``committed`` (the
    fenced update matched) or ``landed`` (a retried commit whose first try had landed),
    False otherwise; and the leases rejected (each gets a conflict row). A step named
    twice in one batch commits once: its second item is rejected."""
    left_committed, left_landed = set(committed), set(landed)
    out: list[bool] = []
    rejected: list[LeaseRef] = []
    for lease in leases:
        if lease.step_id in left_committed:
            left_committed.discard(lease.step_id)
            out.append(True)
        elif lease.step_id in left_landed:
            left_landed.discard(lease.step_id)
            out.append(True)
        else:
            out.append(False)
            rejected.append(lease)
    return out, rejected


def lost_lease_ids(
    leases: Sequence[LeaseRef], state: Mapping[str, tuple[str | None, int, str]]
) -> list[str]:
    """Of ``leases``, the step ids whose step (``state``: step id to its lease token,
    epoch and status) no longer holds that very lease RUNNING, in order."""
    return [
        lease.step_id
        for lease in leases
        if state.get(lease.step_id)
        != (lease.lease_token, lease.lease_epoch, StepStatus.RUNNING.value)
    ]


def lease_lost(
    lease: LeaseRef, event: str, actual_epoch: Any, actual_status: Any
) -> LeaseLostError:
    """The error a rejected fenced write raises, the same from every backend."""
    return LeaseLostError(
        f"{event} of step {lease.step_id} rejected: lease epoch {lease.lease_epoch} no longer "
        f"holds (epoch now {actual_epoch}, status {actual_status})"
    )


def lost_error(attempt: int, why: str) -> dict[str, Any]:
    """The error kept on a step whose last attempt was lost (expired or dead owner)."""
    return {"kind": "lost", "message": f"attempt {attempt} lost: {why}"}


def reclaim_to_dead_letter(attempt: int, max_attempts: int) -> bool:
    """A reclaimed step whose attempts are used up is dead, not READY again."""
    return attempt >= max_attempts


# -- retention -----------------------------------------------------------------------

EVENT_MARGIN_MS = 60_000
"""A removed workflow's ownership events are those up to its newest update plus this:
events are written before the commit that finished it, and clocks of the processes on
a host may step a little."""


# -- maintenance leadership --------------------------------------------------------------


def leader_epoch(
    holder: str | None, epoch: int, expires_at_ms: int, *, node: str, now_ms: int
) -> int | None:
    """The epoch ``node`` holds leadership under after asking at ``now_ms``, or None when
    another node holds an unexpired lease. Renewing an unexpired lease of its own keeps
    the epoch; any takeover (an expired lease, another holder's or its own) bumps it.
    No lease row yet: ``holder`` None, ``epoch`` 0."""
    live = expires_at_ms > now_ms
    if live and holder != node:
        return None
    return epoch if live and holder == node else epoch + 1


# -- audit rows ---------------------------------------------------------------------------


def key_details(key: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What an idempotent submit adds to its audit row's details."""
    details: dict[str, Any] = {"idempotency_key": key} if key is not None else {}
    details.update(extra or {})
    return details


def submit_details(
    plan: SubmitPlan,
    spec: WorkflowSpec,
    idempotency_key: str | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "workflow_id": plan.workflow_id,
        "name": spec.name,
        "steps": len(spec.steps),
        **key_details(idempotency_key, extra),
    }


def cancel_details(workflow_id: str, mode: str, result: CancelResult) -> dict[str, Any]:
    return {
        "workflow_id": workflow_id,
        "mode": mode,
        "cancelled": result.cancelled,
        "fenced_running": list(result.fenced_running),
    }


def replay_details(step: StepRecord, workflow_id: str) -> dict[str, Any]:
    """A single replay's audit row: the step as it was (status, attempt, last error)."""
    return {
        "step_id": step.id,
        "workflow_id": workflow_id,
        "from": step.status.value,
        "from_attempt": step.attempt,
        "error": step.error,
    }


def replay_batch_details(
    *,
    status: StepStatus,
    agent: str | None,
    workflow_id: str | None,
    limit: int,
    replayed: Sequence[str],
    from_attempts: dict[str, int],
) -> dict[str, Any]:
    return {
        "status": status.value,
        "agent": agent,
        "workflow_id": workflow_id,
        "limit": limit,
        "count": len(replayed),
        "step_ids": list(replayed),
        "from_attempts": from_attempts,
    }


def recover_details(reclaimed: Sequence[str], owners: Iterable[str | None]) -> dict[str, Any]:
    return {
        "step_ids": list(reclaimed),
        "owners": sorted({owner for owner in owners if owner is not None}),
        "count": len(reclaimed),
    }


def prune_details(names: Sequence[str], older_than_ms: int) -> dict[str, Any]:
    return {"names": list(names), "count": len(names), "older_than_ms": older_than_ms}


def reload_details(fields: Sequence[str], refused: Sequence[str] = ()) -> dict[str, Any]:
    """A reload's audit row: fields applied, and those refused (they need a restart)."""
    return {"fields": list(fields), "refused": list(refused)}
