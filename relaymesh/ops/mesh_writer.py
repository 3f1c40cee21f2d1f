"""What a node writes of its member view to the store's ``mesh_nodes`` table.

Owns the diff between the view and what this node last wrote, so a refresh writes
only the rows that changed: with a full table (``max_members``, thousands of fake
members on an unkeyed mesh) a rewrite of every row every few seconds would be a
store load an attacker controls. Bounded: at most ``max_rows`` rows per write and at
most ``wire.MAX_METADATA_ENTRIES`` / ``wire.MAX_METADATA_BYTES`` of metadata per row.
Pure: no store, no clock, no awaits; ``node.py`` does the writing and reports back
(``written`` / ``failed``), and after a failed write everything is written again, as
the store may have lost or never seen any of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relaymesh.membership.wire import MAX_METADATA_BYTES, MAX_METADATA_ENTRIES
from relaymesh.model import MemberStatus, MeshNode

__all__ = ["MeshReport", "capped_metadata"]

_RowKey = tuple[str, MemberStatus, int, tuple[tuple[str, str], ...]]


def capped_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The entries that fit the wire's limits, in key order; the rest are left out.

    The core already refuses larger metadata from peers: this keeps the store row
    bounded whatever the view holds (our own metadata, a future wire change).
    """
    out: dict[str, str] = {}
    total = 0
    for key in sorted(metadata or {}):
        value = str((metadata or {})[key])
        size = len(key) + len(value)
        if len(out) >= MAX_METADATA_ENTRIES or total + size > MAX_METADATA_BYTES:
            continue
        out[key] = value
        total += size
    return out


@dataclass(frozen=True, slots=True)
class _Pending:
    rows: list[MeshNode]
    keys: dict[str, _RowKey]
    """Every reported member's key after this write (written or unchanged)."""
    full: bool


class MeshReport:
    """The rows to write next, given the view; remembers what was last written."""

    __slots__ = ("_full_due_ms", "_last", "_pending", "full_every_ms", "max_rows", "rows_truncated")

    def __init__(self, *, max_rows: int, full_every_ms: int) -> None:
        self.max_rows = max(1, max_rows)
        self.full_every_ms = full_every_ms
        """Everything is written again this often anyway: a row deleted behind our back
        (an operator's prune, a restored store) comes back without a failed write."""
        self._full_due_ms = 0
        self._last: dict[str, _RowKey] | None = None
        """name -> what we last wrote for it; None: nothing is known written (write all)."""
        self._pending: _Pending | None = None
        self.rows_truncated = 0
        """Members left out of the last report because the view was over ``max_rows``."""

    def plan(
        self,
        members: Iterable[Any],
        *,
        local_name: str,
        now_wall_ms: int,
        forget_before_ms: int,
        final: bool = False,
        address: Callable[[Any], str] = str,
    ) -> list[MeshNode]:
        """The rows to write now: those that changed since the last successful write.

        ``members`` are ``state.Member``-like (name, address, status, incarnation,
        metadata, status_changed_at_ms). A DEAD/LEFT member (not us) whose status
        changed before ``forget_before_ms`` is not reported (the leader's prune would be
        undone). ``final``: our own row says LEFT. When nothing changed our own row is
        returned anyway: the write doubles as the store health probe. ``address``
        formats a member's address for the row.
        """
        local: MeshNode | None = None
        others: list[MeshNode] = []
        truncated = 0
        for m in members:
            status = MemberStatus(m.status)
            # The core stamps the change with its clock's wall time (SystemClock).
            since_ms = m.status_changed_at_ms or now_wall_ms
            is_local = m.name == local_name
            if not is_local:
                gone = status in (MemberStatus.DEAD, MemberStatus.LEFT)
                if gone and since_ms < forget_before_ms:
                    continue
                if len(others) >= self.max_rows - 1:  # one row is ours
                    truncated += 1
                    continue
            elif final:
                status = MemberStatus.LEFT
            row = MeshNode(
                name=m.name,
                address=address(m.address),
                status=status,
                incarnation=int(m.incarnation),
                metadata=dict(capped_metadata(m.metadata)),
                status_changed_at_ms=since_ms,
            )
            if is_local:
                local = row
            else:
                others.append(row)
        self.rows_truncated = truncated
        report = others if local is None else [local, *others]
        keys = {row.name: _key(row) for row in report}
        last = self._last
        # A wall clock stepped back must not postpone the full rewrite for as long.
        since_full_ms = now_wall_ms - (self._full_due_ms - self.full_every_ms)
        if last is None or not 0 <= since_full_ms < self.full_every_ms:
            rows = report
            full = True
        else:
            rows = [row for row in report if last.get(row.name) != keys[row.name]]
            full = False
            if not rows and local is not None:
                rows = [local]
        self._pending = _Pending(rows, keys, full)
        return rows

    def written(self, now_wall_ms: int) -> None:
        """The rows of the last ``plan`` are in the store."""
        pending = self._pending
        if pending is not None:
            # Members no longer reported (forgotten, evicted) leave the memory too, so a
            # member that comes back is written again.
            self._last = pending.keys
            if pending.full:
                self._full_due_ms = now_wall_ms + self.full_every_ms
            self._pending = None

    def failed(self) -> None:
        """The last write failed or its outcome is unknown: write everything next time."""
        self._last = None
        self._pending = None


def _key(row: MeshNode) -> _RowKey:
    # status_changed_at_ms is left out: it moves only with the status (the store keeps
    # the first stamp of a status), and an unstamped member gets "now" on every plan.
    metadata = tuple(sorted((k, str(v)) for k, v in row.metadata.items()))
    return (row.address, row.status, row.incarnation, metadata)
