"""SQLite ``wait_for_work``'s adaptive change-check interval (pure function)."""

from __future__ import annotations

from relaymesh.store.sqlite import next_poll_ms


def test_fast_while_hot() -> None:
    assert next_poll_ms(40, hot=True, poll_ms=3, idle_poll_ms=40) == 3


def test_idle_doubles_up_to_the_cap() -> None:
    seen = [3]
    for _ in range(6):
        seen.append(next_poll_ms(seen[-1], hot=False, poll_ms=3, idle_poll_ms=40))
    assert seen == [3, 6, 12, 24, 40, 40, 40]


def test_never_below_poll_ms() -> None:
    assert next_poll_ms(0, hot=False, poll_ms=3, idle_poll_ms=40) == 3
