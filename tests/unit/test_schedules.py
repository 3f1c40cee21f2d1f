"""Schedule math (pure): next fires across DST, due and skipped ticks, bad input."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from relaymesh.exceptions import ConfigError
from relaymesh.schedules import due_ticks, fire_key, next_fire_ms
from relaymesh.settings import load_settings

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args: int, tz: ZoneInfo = BERLIN) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def fires(cron: str, start_ms: int, n: int, tz: str = "Europe/Berlin") -> list[int]:
    out: list[int] = []
    t = start_ms
    for _ in range(n):
        t = next_fire_ms(cron=cron, every_s=None, timezone=tz, after_ms=t)
        out.append(t)
    return out


def test_a_daily_cron_keeps_its_wall_time_across_the_spring_dst_change() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST: the day is 23 hours long.
    got = fires("0 9 * * *", ms(2026, 3, 27, 12, 0), 4)
    assert got == [
        ms(2026, 3, 28, 9, 0),
        ms(2026, 3, 29, 9, 0),
        ms(2026, 3, 30, 9, 0),
        ms(2026, 3, 31, 9, 0),
    ]
    assert got[1] - got[0] == 23 * 3600 * 1000  # across the change
    assert got[2] - got[1] == 24 * 3600 * 1000


def test_a_wall_time_skipped_by_spring_forward_fires_once_after_the_gap() -> None:
    got = fires("30 2 * * *", ms(2026, 3, 28, 12, 0), 2)
    assert got == [ms(2026, 3, 29, 3, 0), ms(2026, 3, 30, 2, 30)]


def test_an_hourly_cron_fires_in_each_real_hour_of_the_fall_back() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:00 happens twice, an hour apart.
    got = fires("0 * * * *", ms(2026, 10, 25, 0, 30), 4)
    assert [b - a for a, b in itertools.pairwise(got)] == [3600 * 1000] * 3
    assert len(set(got)) == 4


def test_the_same_cron_in_utc_ignores_dst() -> None:
    utc = ZoneInfo("UTC")
    got = fires("0 9 * * *", ms(2026, 3, 28, 12, 0, tz=utc), 2, tz="UTC")
    assert got[1] - got[0] == 24 * 3600 * 1000


def test_every_s_ticks_are_epoch_aligned() -> None:
    assert next_fire_ms(cron=None, every_s=5, timezone="UTC", after_ms=12_345) == 15_000
    assert next_fire_ms(cron=None, every_s=5, timezone="UTC", after_ms=15_000) == 20_000


def test_only_the_latest_missed_tick_fires_and_the_rest_are_counted() -> None:
    due = due_ticks(cron=None, every_s=1, timezone="UTC", since_ms=10_000, now_ms=14_500)
    assert (due.fire_ms, due.skipped, due.next_ms) == (14_000, 3, 15_000)
    on_time = due_ticks(cron=None, every_s=1, timezone="UTC", since_ms=13_000, now_ms=14_000)
    assert (on_time.fire_ms, on_time.skipped) == (14_000, 0)
    idle = due_ticks(cron=None, every_s=1, timezone="UTC", since_ms=14_000, now_ms=14_999)
    assert (idle.fire_ms, idle.skipped) == (None, 0)
    minute = due_ticks(
        cron="* * * * *", every_s=None, timezone="UTC", since_ms=60_000, now_ms=185_000
    )
    assert (minute.fire_ms, minute.skipped, minute.next_ms) == (180_000, 1, 240_000)
    far = due_ticks(cron="* * * * *", every_s=None, timezone="UTC", since_ms=0, now_ms=10**12)
    assert far.fire_ms == 10**12 // 60_000 * 60_000 and far.skipped >= 10_000


def test_fire_key() -> None:
    assert fire_key("nightly", 1_700_000_000_000) == "schedule:nightly:1700000000000"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('cron = "*/5 * * *"', "must have 5 fields"),
        ('cron = "0 0 * * * *"', "must have 5 fields"),
        ('cron = "61 * * * *"', "is not valid"),
        ('cron = "* * * * *"\ntimezone = "Mars/Olympus"', "unknown timezone"),
        ('cron = "* * * * *"\nevery_s = 5', "exactly one of cron and every_s"),
        ("", "exactly one of cron and every_s"),
        ("every_s = 0", "greater than 0"),
    ],
)
def test_a_bad_schedule_is_one_clear_error_at_load(tmp_path: Path, body: str, needle: str) -> None:
    config = tmp_path / "relaymesh.toml"
    config.write_text(f'[schedules.nightly]\nworkflow = "wf.json"\n{body}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert "\n" not in message and needle in message and "schedules.nightly" in message


def test_a_good_schedule_loads(tmp_path: Path) -> None:
    config = tmp_path / "relaymesh.toml"
    config.write_text(
        '[schedules.nightly]\nworkflow = "wf.json"\ncron = "0 2 * * *"\n'
        'timezone = "Europe/Berlin"\n[schedules.tick]\nworkflow = "t.json"\nevery_s = 5\n'
        "enabled = false\n"
    )
    schedules = load_settings(config).schedules
    assert schedules["nightly"].expression == "0 2 * * *"
    assert schedules["tick"].expression == "every 5s" and not schedules["tick"].enabled
