"""Schedule math, pure: when a schedule fires next, and which ticks are due.

A leaf module (settings validates expressions with it; ``work.scheduler`` fires with
it). Times are epoch milliseconds; nothing here reads a clock.

* ``cron``: five fields (minute hour day-of-month month day-of-week), evaluated in the
  schedule's IANA ``timezone`` by croniter, so "every day at 02:30 Europe/Berlin"
  follows the wall clock across DST changes (a wall time skipped by a spring-forward
  fires at the first instant after the gap; an hourly expression fires in each real
  hour of a fall-back).
* ``every_s``: ticks at the multiples of ``every_s`` seconds since the epoch, so every
  node computes the same ticks (and the same idempotency keys) without agreeing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = [
    "MAX_TICKS_COUNTED",
    "DueTicks",
    "ScheduleError",
    "check_cron",
    "check_timezone",
    "due_ticks",
    "fire_key",
    "next_fire_ms",
]

MAX_TICKS_COUNTED = 10_000
"""A cron schedule's missed ticks are counted up to this many (then the count says so)."""


class ScheduleError(ValueError):
    """A schedule expression or timezone that cannot be evaluated."""


def check_cron(expression: str) -> str:
    """The expression if it is a valid five-field cron expression, else ``ScheduleError``."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron expression {expression!r} must have 5 fields "
            f"(minute hour day-of-month month day-of-week), not {len(fields)}"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"cron expression {expression!r} is not valid")
    return expression


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {name!r} (expected an IANA name)") from None


def next_fire_ms(*, cron: str | None, every_s: int | None, timezone: str, after_ms: int) -> int:
    """The first tick strictly after ``after_ms``."""
    if every_s is not None:
        period_ms = every_s * 1000
        return (after_ms // period_ms + 1) * period_ms
    if cron is None:
        raise ScheduleError("a schedule needs cron or every_s")
    start = datetime.fromtimestamp(after_ms / 1000, tz=UTC).astimezone(check_timezone(timezone))
    following: datetime = croniter(check_cron(cron), start).get_next(datetime)
    fire_ms = int(following.timestamp() * 1000)
    # croniter works in whole seconds; never hand back a tick at or before after_ms.
    return (
        fire_ms
        if fire_ms > after_ms
        else next_fire_ms(cron=cron, every_s=every_s, timezone=timezone, after_ms=after_ms + 1000)
    )


@dataclass(frozen=True, slots=True)
class DueTicks:
    fire_ms: int | None
    """The tick to fire now (the latest due one), or None when nothing is due."""
    skipped: int
    """Older due ticks that are not fired (they were missed: no leader, a store outage)."""
    next_ms: int
    """The first tick after ``now_ms``: when to look again."""


def due_ticks(
    *, cron: str | None, every_s: int | None, timezone: str, since_ms: int, now_ms: int
) -> DueTicks:
    """Ticks in ``(since_ms, now_ms]``: the latest is fired, the older ones skipped.
    ``since_ms`` is the schedule's last recorded fire (or when it was first seen)."""

    def after(t: int) -> int:
        return next_fire_ms(cron=cron, every_s=every_s, timezone=timezone, after_ms=t)

    if every_s is not None:
        period_ms = every_s * 1000
        latest = now_ms // period_ms * period_ms
        if latest <= since_ms:
            return DueTicks(None, 0, after(now_ms))
        first = after(since_ms)
        return DueTicks(latest, (latest - first) // period_ms, after(now_ms))
    tick = after(since_ms)
    due: int | None = None
    count = 0
    while tick <= now_ms and count < MAX_TICKS_COUNTED:
        due, count = tick, count + 1
        tick = after(tick)
    if tick <= now_ms:
        # Far behind: fire the latest tick, skip the rest (counted up to the cap).
        zone = check_timezone(timezone)
        end = datetime.fromtimestamp((now_ms + 1) / 1000, tz=UTC).astimezone(zone)
        last_tick: datetime = croniter(check_cron(cron or ""), end).get_prev(datetime)
        return DueTicks(int(last_tick.timestamp() * 1000), count, after(now_ms))
    return DueTicks(due, max(count - 1, 0), tick)


def fire_key(schedule: str, fire_ms: int) -> str:
    """The idempotency key of one tick: one workflow per tick across the mesh."""
    return f"schedule:{schedule}:{fire_ms}"
