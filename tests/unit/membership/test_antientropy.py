"""Push/pull pacing and how a remote snapshot turns into updates."""

from __future__ import annotations

from relaymesh.membership.antientropy import pushpull_interval_ms, snapshot_updates
from relaymesh.membership.state import Member
from relaymesh.membership.wire import Alive, Left, Suspect
from relaymesh.model import MemberStatus


def test_pushpull_interval_is_flat_to_32_then_grows_with_log2() -> None:
    assert pushpull_interval_ms(30_000, 1) == 30_000
    assert pushpull_interval_ms(30_000, 32) == 30_000
    assert pushpull_interval_ms(30_000, 33) == 60_000
    assert pushpull_interval_ms(30_000, 64) == 60_000
    assert pushpull_interval_ms(30_000, 1000) == 180_000


def test_remote_dead_is_only_a_suspicion() -> None:
    remote = [
        Member("a", ("h", 1), MemberStatus.ALIVE, 2, {"k": "v"}, 0),
        Member("b", ("h", 2), MemberStatus.SUSPECT, 3, {}, 0),
        Member("c", ("h", 3), MemberStatus.DEAD, 4, {}, 0),
        Member("d", ("h", 4), MemberStatus.LEFT, 5, {}, 0),
    ]
    assert list(snapshot_updates(remote, "me")) == [
        Alive("a", 2, ("h", 1), {"k": "v"}),
        Suspect("b", 3, "me"),
        Suspect("c", 4, "me"),
        Left("d", 5),
    ]
