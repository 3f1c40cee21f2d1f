"""The promises RelayMesh makes about a history, each a pure check of a ``History``.

* ``final_state``: every step is SUCCEEDED, DEAD_LETTER or CANCELLED (only SUCCEEDED
  with ``expect_success``);
* ``none_lost``: every submitted workflow has all its steps; every journalled step exists;
* ``one_commit``: a SUCCEEDED step's result comes from its last lease (the last claim's
  epoch and node; a ``record`` result names them and the journal has that run), and no
  conflict row says that very lease's commit was refused;
* ``conflicts_recorded``: every fenced write a node was refused (its log's
  ``lease_lost``) is a ``lease_conflicts`` row;
* ``lock_exclusive``: no two steps held the same lock key at once;
* ``reclaim_bound``: a killed node's RUNNING leases were reclaimed (``dead_owner`` or
  ``lease_expired``) within ``reclaim_bound_ms`` of the kill;
* ``safe_mode``: no node claimed while it was not ALIVE in its own view.

Lease intervals are built only from what is certain: a lease starts at its ``claimed``
event and surely lasts until the step's next reclaim/release/cancel event, or its
``finished_at`` for the lease that finished it; a lease that ended some other way (a
failure commit, which writes no event) surely lasted only until its run's last
journal line. A node's view is known at its samples (harness ``view`` events, and the
node's own ``worker_paused``/``worker_resumed`` log records); a claim breaks safe mode
when the node's last sample at least ``claim_grace_ms`` before it, every later sample up
to the claim and the first sample after it all say not ALIVE (no ALIVE sample, no
restart between).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from relaymesh.chaos.history import History, Ownership, StepView

__all__ = [
    "FAULT_KINDS",
    "PROMISES",
    "Bounds",
    "Lease",
    "Report",
    "Violation",
    "check_history",
    "lease_intervals",
    "percentile",
]

PROMISES = (
    "final_state",
    "none_lost",
    "one_commit",
    "conflicts_recorded",
    "lock_exclusive",
    "reclaim_bound",
    "safe_mode",
)
FAULT_KINDS = (
    "kill",
    "stop",
    "partition",
    "partition_oneway",
    "loss",
    "pg_restart",
    "pg_failover",
    "pg_rebuild",
)
FINAL = frozenset({"SUCCEEDED", "DEAD_LETTER", "CANCELLED"})
ENDING_EVENTS = frozenset({"released", "lease_expired", "dead_owner", "cancelled"})
RECLAIM_EVENTS = frozenset({"lease_expired", "dead_owner"})
FENCED_WRITES = frozenset({"commit_success", "commit_failure", "release", "heartbeat"})
IN_FLIGHT_MS = 500
"""A kill is logged just before the signal: a commit can still land this soon after."""


@dataclass(frozen=True, slots=True)
class Bounds:
    reclaim_bound_ms: int
    """Kill to reclaim, at most (see ``check.reclaim_bound_from_settings``)."""
    claim_grace_ms: int = 1000
    """A claim this soon after a not-ALIVE sample may have been decided before it."""
    expect_success: bool = False


@dataclass(frozen=True, slots=True)
class Violation:
    promise: str
    message: str
    step_id: str | None = None
    node: str | None = None
    history: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "promise": self.promise,
            "message": self.message,
            "step_id": self.step_id,
            "node": self.node,
            "history": list(self.history),
        }


@dataclass(frozen=True, slots=True)
class Lease:
    step_id: str
    epoch: int
    node: str | None
    start_ms: int
    sure_end_ms: int
    """Until when the lease certainly held (see module docstring)."""
    ended_by: str
    """The event that ended it, ``finished``, ``open`` (still RUNNING) or ``unknown``."""


@dataclass(slots=True)
class Report:
    checked: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    steps: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    reclaim_ms: list[int] = field(default_factory=list)
    failover_recovery_ms: list[int] = field(default_factory=list)
    minority_claims: int = 0
    """Claims by a node cut off on the minority side, while it was still ALIVE itself."""

    @property
    def ok(self) -> bool:
        return not self.violations


def percentile(values: Iterable[int], q: float) -> int | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _fmt_event(e: Ownership) -> str:
    return f"@{e.at_ms} {e.event} epoch={e.lease_epoch} node={e.node}"


def _by_step(history: History) -> dict[str, list[Ownership]]:
    events: dict[str, list[Ownership]] = defaultdict(list)
    for e in history.ownership:
        events[e.step_id].append(e)
    return events


def lease_intervals(history: History) -> list[Lease]:
    steps = {s.id: s for s in history.steps}
    last_run: dict[tuple[str, int], int] = {}
    for j in history.journal:
        if j.at_ms is not None:
            key = (j.step_id, j.epoch)
            last_run[key] = max(last_run.get(key, j.at_ms), j.at_ms)
    leases: list[Lease] = []
    for step_id, events in _by_step(history).items():
        step = steps.get(step_id)
        for i, e in enumerate(events):
            if e.event != "claimed":
                continue
            after = events[i + 1] if i + 1 < len(events) else None
            if after is not None and after.event in ENDING_EVENTS:
                leases.append(
                    Lease(step_id, e.lease_epoch, e.node, e.at_ms, after.at_ms, after.event)
                )
            elif after is None and step is not None and step.lease_epoch == e.lease_epoch:
                if step.status == "RUNNING":
                    leases.append(Lease(step_id, e.lease_epoch, e.node, e.at_ms, 2**62, "open"))
                elif step.finished_at_ms is not None:
                    end = max(e.at_ms, step.finished_at_ms)
                    leases.append(Lease(step_id, e.lease_epoch, e.node, e.at_ms, end, "finished"))
                else:
                    end = max(e.at_ms, last_run.get((step_id, e.lease_epoch), e.at_ms))
                    leases.append(Lease(step_id, e.lease_epoch, e.node, e.at_ms, end, "unknown"))
            else:
                end = max(e.at_ms, last_run.get((step_id, e.lease_epoch), e.at_ms))
                leases.append(Lease(step_id, e.lease_epoch, e.node, e.at_ms, end, "unknown"))
    return leases


# -- the promises --------------------------------------------------------------------------


def _final_state(history: History, bounds: Bounds, report: Report) -> None:
    for s in history.steps:
        report.checked["final_state"] += 1
        wanted = {"SUCCEEDED"} if bounds.expect_success else FINAL
        if s.status not in wanted:
            report.violations.append(
                Violation(
                    "final_state",
                    f"step {s.name} of workflow {s.workflow_id} ended {s.status}",
                    s.id,
                    s.owner_node,
                    (f"status={s.status} epoch={s.lease_epoch} owner={s.owner_node}",),
                )
            )


def _none_lost(history: History, report: Report) -> None:
    per_workflow = Counter(s.workflow_id for s in history.steps)
    for e in history.events:
        if e.kind != "submitted":
            continue
        report.checked["none_lost"] += 1
        wid, wanted = str(e.get("workflow_id")), int(e.get("steps", 0))
        if per_workflow.get(wid, 0) != wanted:
            report.violations.append(
                Violation(
                    "none_lost",
                    f"workflow {wid} was submitted with {wanted} steps, the store has "
                    f"{per_workflow.get(wid, 0)}",
                    history=(f"@{e.at_ms} submitted {wid}",),
                )
            )
    known = {s.id for s in history.steps}
    for step_id in sorted({j.step_id for j in history.journal} - known):
        report.checked["none_lost"] += 1
        runs = [
            f"{j.phase} epoch={j.epoch} node={j.node}"
            for j in history.journal
            if j.step_id == step_id
        ]
        report.violations.append(
            Violation(
                "none_lost", "a journalled step is not in the store", step_id, history=tuple(runs)
            )
        )


def _one_commit(history: History, report: Report) -> None:
    events = _by_step(history)
    done = {(j.step_id, j.epoch, j.node) for j in history.journal if j.phase == "done"}
    journalled = {j.step_id for j in history.journal}
    refused = {
        (x.step_id, x.expected_epoch) for x in history.conflicts if x.event == "commit_success"
    }
    for s in history.steps:
        if s.status != "SUCCEEDED":
            continue
        report.checked["one_commit"] += 1
        mine = events.get(s.id, [])
        story = tuple(_fmt_event(e) for e in mine)
        claims = [e for e in mine if e.event == "claimed"]

        def bad(message: str, s: StepView = s, story: tuple[str, ...] = story) -> None:
            report.violations.append(Violation("one_commit", message, s.id, s.owner_node, story))

        if not claims:
            bad("SUCCEEDED without ever being claimed")
            continue
        last = claims[-1]
        if mine[-1] is not last:
            bad(f"SUCCEEDED, but its last lease (epoch {last.lease_epoch}) ended: {mine[-1].event}")
        elif (last.lease_epoch, last.node) != (s.lease_epoch, s.owner_node):
            bad(
                f"SUCCEEDED at epoch {s.lease_epoch} by {s.owner_node}, but its last lease is "
                f"epoch {last.lease_epoch} by {last.node}"
            )
        elif (s.id, s.lease_epoch) in refused:
            story += tuple(
                f"@{x.at_ms} conflict {x.event} by {x.node}: expected epoch {x.expected_epoch}, "
                f"found {x.actual_epoch} {x.actual_status}"
                for x in history.conflicts
                if x.step_id == s.id and x.expected_epoch == s.lease_epoch
            )
            bad(
                f"the commit of the lease whose result stands (epoch {s.lease_epoch}) is also "
                "recorded as refused",
                story=story,
            )
        elif isinstance(s.result, dict) and "epoch" in s.result and "node" in s.result:
            # A record agent's result names the run that produced it.
            run = (s.result.get("epoch"), s.result.get("node"))
            if run != (s.lease_epoch, s.owner_node):
                bad(f"the result is the run of epoch {run[0]} on {run[1]}, not of the last lease")
            elif s.id in journalled and (s.id, s.lease_epoch, s.owner_node) not in done:
                bad("the journal has no finished run of the lease whose result stands")


def _conflicts_recorded(history: History, report: Report) -> None:
    recorded = {(x.step_id, x.node, x.event, x.expected_epoch) for x in history.conflicts}
    for r in history.logs:
        write = r.fields.get("write")
        if r.event != "lease_lost" or write not in FENCED_WRITES:
            continue
        report.checked["conflicts_recorded"] += 1
        step_id, epoch = str(r.fields.get("step_id")), r.fields.get("epoch")
        if (step_id, r.node, write, epoch) not in recorded:
            report.violations.append(
                Violation(
                    "conflicts_recorded",
                    f"{r.node}'s {write} at epoch {epoch} was refused but no lease_conflicts "
                    "row records it",
                    step_id,
                    r.node,
                    (f"@{r.at_ms} lease_lost write={write} epoch={epoch}",),
                )
            )


def _lock_exclusive(history: History, leases: list[Lease], report: Report) -> None:
    locks = {s.id: s.locks for s in history.steps if s.locks}
    by_key: dict[str, list[Lease]] = defaultdict(list)
    for lease in leases:
        for key in locks.get(lease.step_id, ()):
            by_key[key].append(lease)
    for key, held in by_key.items():
        held.sort(key=lambda lease: lease.start_ms)
        report.checked["lock_exclusive"] += len(held)
        for i, a in enumerate(held):
            for b in held[i + 1 :]:
                if b.start_ms >= a.sure_end_ms:
                    break
                if b.step_id == a.step_id:
                    continue
                report.violations.append(
                    Violation(
                        "lock_exclusive",
                        f"lock {key!r} held by step {a.step_id} (epoch {a.epoch}, {a.node}) "
                        f"until at least {a.sure_end_ms} and by step {b.step_id} (epoch "
                        f"{b.epoch}, {b.node}) from {b.start_ms}",
                        b.step_id,
                        b.node,
                        (
                            f"{a.step_id}: claimed @{a.start_ms}, {a.ended_by} @{a.sure_end_ms}",
                            f"{b.step_id}: claimed @{b.start_ms}, {b.ended_by} @{b.sure_end_ms}",
                        ),
                    )
                )


def _reclaim_bound(history: History, leases: list[Lease], bounds: Bounds, report: Report) -> None:
    for kill in (e for e in history.events if e.kind == "kill"):
        node = kill.get("node")
        for lease in leases:
            if lease.node != node or lease.start_ms > kill.at_ms:
                continue
            if lease.ended_by == "unknown":
                continue  # a failure commit ended it: the node was still there
            if lease.ended_by != "open" and lease.sure_end_ms < kill.at_ms:
                continue  # it had ended before the kill
            if lease.ended_by == "finished" and lease.sure_end_ms <= kill.at_ms + IN_FLIGHT_MS:
                continue  # a commit already on its way when the signal was sent
            report.checked["reclaim_bound"] += 1
            took = lease.sure_end_ms - kill.at_ms
            story = (
                f"@{kill.at_ms} kill {node}",
                f"@{lease.start_ms} claimed epoch={lease.epoch}",
                f"@{lease.sure_end_ms} {lease.ended_by}",
            )
            if lease.ended_by not in RECLAIM_EVENTS:
                report.violations.append(
                    Violation(
                        "reclaim_bound",
                        f"{node} was killed holding this step, and its lease ended in "
                        f"{lease.ended_by}, not a reclaim",
                        lease.step_id,
                        node,
                        story,
                    )
                )
                continue
            report.reclaim_ms.append(took)
            if took > bounds.reclaim_bound_ms:
                report.violations.append(
                    Violation(
                        "reclaim_bound",
                        f"reclaimed {took} ms after {node} was killed (bound "
                        f"{bounds.reclaim_bound_ms} ms)",
                        lease.step_id,
                        node,
                        story,
                    )
                )


def _views(history: History) -> dict[str, list[tuple[int, bool | None]]]:
    """Per node, time-ordered samples: True (ALIVE in its own view), False (not), or
    None (a process (re)start: nothing before it says anything about after it)."""
    views: dict[str, list[tuple[int, bool | None]]] = defaultdict(list)
    for e in history.events:
        node = e.get("node")
        if not isinstance(node, str):
            continue
        if e.kind == "view":
            views[node].append((e.at_ms, bool(e.get("local_alive"))))
        elif e.kind in ("start", "kill"):
            views[node].append((e.at_ms, None))
    for r in history.logs:
        if r.event == "worker_paused" and r.fields.get("reason") == "local_not_alive":
            views[r.node].append((r.at_ms, False))
        elif r.event == "worker_resumed" and r.fields.get("was") == "local_not_alive":
            views[r.node].append((r.at_ms, True))
    for samples in views.values():
        samples.sort(key=lambda x: x[0])
    return views


def _not_alive_at(samples: list[tuple[int, bool | None]], t: int, grace_ms: int) -> bool:
    """Not ALIVE for sure at ``t``: the last sample at least ``grace_ms`` before ``t``, every
    sample after it up to ``t`` and the first sample after ``t`` all say not ALIVE."""
    anchor = [s for s in samples if s[0] <= t - grace_ms]
    between = [s for s in samples if t - grace_ms < s[0] <= t]
    after = [s for s in samples if s[0] > t]
    if not anchor or not after:
        return False
    return all(v is False for _, v in (anchor[-1], *between, after[0]))


def _partitions(history: History) -> list[tuple[int, int, set[str]]]:
    """(start, end, nodes cut off on the minority side) per partition episode."""
    spans: list[tuple[int, int, set[str]]] = []
    open_: list[tuple[int, set[str]]] = []
    for e in history.events:
        if e.kind in ("partition", "partition_oneway"):
            a, b = list(e.get("a", [])), list(e.get("b", []))
            minority = set(a if len(a) <= len(b) else b)
            on = e.get("nodes") or {}
            open_.append((e.at_ms, {n for n, h in on.items() if h in minority} or minority))
        elif e.kind == "heal":
            spans += [(start, e.at_ms, nodes) for start, nodes in open_]
            open_ = []
    return spans


def _safe_mode(history: History, bounds: Bounds, report: Report) -> None:
    views = _views(history)
    spans = _partitions(history)
    for e in history.ownership:
        if e.event != "claimed" or e.node is None:
            continue
        report.checked["safe_mode"] += 1
        if any(start <= e.at_ms <= end and e.node in nodes for start, end, nodes in spans):
            report.minority_claims += 1
        samples = views.get(e.node, [])
        if _not_alive_at(samples, e.at_ms, bounds.claim_grace_ms):
            near = [
                f"@{t} {'ALIVE' if v else 'restart' if v is None else 'not ALIVE'}"
                for t, v in samples
                if abs(t - e.at_ms) <= 10_000
            ]
            report.violations.append(
                Violation(
                    "safe_mode",
                    f"{e.node} claimed epoch {e.lease_epoch} while not ALIVE in its own view",
                    e.step_id,
                    e.node,
                    (_fmt_event(e), *near),
                )
            )


def _recovery(history: History, report: Report) -> None:
    """Failover recovery: from the primary's stop (the outage's start) to the first
    claim after the promotion."""
    claims = sorted(e.at_ms for e in history.ownership if e.event == "claimed")
    stopped_at: int | None = None
    for e in history.events:
        if e.kind == "pg_stop_primary":
            stopped_at = e.at_ms
        elif e.kind == "pg_failover":
            later = [t for t in claims if t > e.at_ms]
            if later:
                start = stopped_at if stopped_at is not None else e.at_ms
                report.failover_recovery_ms.append(later[0] - start)
            stopped_at = None


def check_history(history: History, bounds: Bounds) -> Report:
    report = Report()
    report.steps = Counter(s.status for s in history.steps)
    report.faults = Counter(e.kind for e in history.events if e.kind in FAULT_KINDS)
    leases = lease_intervals(history)
    _final_state(history, bounds, report)
    _none_lost(history, report)
    _one_commit(history, report)
    _conflicts_recorded(history, report)
    _lock_exclusive(history, leases, report)
    _reclaim_bound(history, leases, bounds, report)
    _safe_mode(history, bounds, report)
    _recovery(history, report)
    return report
