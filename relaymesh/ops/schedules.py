"""What ``relaymesh schedules`` and ``GET /api/schedules`` show: each configured
schedule with its next fire (store clock) and its last recorded fire."""

from __future__ import annotations

from typing import Any

from relaymesh.schedules import next_fire_ms
from relaymesh.settings import Settings
from relaymesh.store.base import Store

__all__ = ["list_schedules"]


async def list_schedules(store: Store, settings: Settings) -> list[dict[str, Any]]:
    """One document per schedule, by name: ``name, expression, timezone, enabled,
    workflow, next_fire_at`` (None when disabled), ``last_fire_at, last_workflow_id``."""
    now_ms = await store.now_ms()
    out: list[dict[str, Any]] = []
    for name, schedule in sorted(settings.schedules.items()):
        last = await store.last_schedule_fire(name)
        upcoming = next_fire_ms(
            cron=schedule.cron,
            every_s=schedule.every_s,
            timezone=schedule.timezone,
            after_ms=now_ms,
        )
        out.append(
            {
                "name": name,
                "expression": schedule.expression,
                "timezone": schedule.timezone,
                "enabled": schedule.enabled,
                "workflow": schedule.workflow,
                "next_fire_at": upcoming if schedule.enabled else None,
                "last_fire_at": last.fire_at_ms if last else None,
                "last_workflow_id": last.workflow_id if last else None,
            }
        )
    return out
