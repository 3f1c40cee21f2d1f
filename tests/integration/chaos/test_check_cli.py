"""``python -m relaymesh.chaos.check`` on a real store (SQLite and PostgreSQL): a small
history written through the ``Store`` protocol the way nodes write it (claims, a DEAD
verdict's reclaim, a zombie's refused commit), plus the journal, events and a node log.
Clean, it exits 0; each tampering exits 1 naming the promise and the step."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from relaymesh.chaos.check import main
from relaymesh.exceptions import LeaseLostError
from relaymesh.model import StepSpec, WorkflowSpec
from relaymesh.store import Store


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def write_history(store: Store, root: Path) -> dict[str, str]:
    spec = WorkflowSpec(
        "wf",
        (
            StepSpec("one", "record", locks=("res:a",)),
            StepSpec("two", "record", locks=("res:a",)),
        ),
    )
    wid = await store.submit_workflow(spec, "test")
    journal, events, log = root / "journal.jsonl", root / "events.jsonl", root / "b.log"
    lines = [{"kind": "submitted", "at_ms": _now_ms(), "workflow_id": wid, "steps": 2}]
    (first,) = await store.claim_steps("a", limit=1, lease_ms=60_000)
    runs = [
        ("start", first.step_id, first.lease_epoch, "a"),
        ("done", first.step_id, first.lease_epoch, "a"),
    ]
    await store.commit_success(first.lease, "a", {"epoch": first.lease_epoch, "node": "a"})
    (zombie,) = await store.claim_steps("b", limit=1, lease_ms=60_000)
    runs.append(("start", zombie.step_id, zombie.lease_epoch, "b"))
    lines.append({"kind": "kill", "at_ms": _now_ms(), "node": "b"})
    reclaimed = await store.reclaim_dead_owners(
        limit=10, actor="test", stale_after_ms=0, nodes=["b"]
    )
    assert reclaimed.step_ids == (zombie.step_id,)
    (again,) = await store.claim_steps("c", limit=1, lease_ms=60_000)
    runs += [
        ("start", again.step_id, again.lease_epoch, "c"),
        ("done", again.step_id, again.lease_epoch, "c"),
    ]
    await store.commit_success(again.lease, "c", {"epoch": again.lease_epoch, "node": "c"})
    with pytest.raises(LeaseLostError):
        await store.commit_success(zombie.lease, "b", {"epoch": zombie.lease_epoch, "node": "b"})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    log.write_text(
        "not a json line\n"
        + json.dumps(
            {
                "event": "lease_lost",
                "node": "b",
                "timestamp": stamp,
                "step_id": zombie.step_id,
                "epoch": zombie.lease_epoch,
                "write": "commit_success",
            }
        )
        + "\n"
    )
    journal.write_text(
        "".join(
            json.dumps({"phase": p, "step_id": s, "epoch": e, "node": n, "at_ms": _now_ms()}) + "\n"
            for p, s, e, n in runs
        )
    )
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {
        "journal": str(journal),
        "events": str(events),
        "log": str(log),
        "zombie": zombie.step_id,
    }


async def run(
    url: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict]:  # type: ignore[type-arg]
    args = [
        "--store", url, "--journal", files["journal"], "--events", files["events"],
        "--node-log", files["log"], "--reclaim-bound-ms", "60000", "--expect-success", "--json",
    ]  # fmt: skip
    code = await asyncio.to_thread(main, args)
    return code, json.loads(capsys.readouterr().out)


async def test_a_clean_history_passes_and_tampering_is_named(
    store: Store, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = await write_history(store, tmp_path)
    code, doc = await run(store_url, files, capsys)
    assert (code, doc["violations"]) == (0, [])
    assert doc["steps"] == {"SUCCEEDED": 2}
    assert doc["faults"] == {"kill": 1}
    assert doc["promises"]["conflicts_recorded"] == {"checked": 1, "violations": 0}
    assert doc["promises"]["reclaim_bound"] == {"checked": 1, "violations": 0}
    assert doc["reclaim_ms"]["n"] == 1

    # A refused write that the store did not record.
    log = Path(files["log"])
    record = json.loads(log.read_text().splitlines()[1])
    log.write_text(log.read_text() + json.dumps({**record, "epoch": 99}) + "\n")
    code, doc = await run(store_url, files, capsys)
    assert code == 1
    assert [(v["promise"], v["step_id"]) for v in doc["violations"]] == [
        ("conflicts_recorded", files["zombie"])
    ]

    # A reclaim bound shorter than the time the reclaim took.
    args = ["--store", store_url, "--events", files["events"], "--reclaim-bound-ms", "-1"]
    code = await asyncio.to_thread(main, args)
    out = capsys.readouterr().out
    assert code == 1
    assert f"BROKEN reclaim_bound: step {files['zombie']} node b" in out


async def test_a_step_put_back_to_running_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relaymesh.store import open_store

    url = f"sqlite:///{tmp_path}/store.db"
    store = await open_store(url)
    try:
        files = await write_history(store, tmp_path)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("UPDATE steps SET status = 'RUNNING' WHERE id = ?", (files["zombie"],))
    code, doc = await run(url, files, capsys)
    assert code == 1
    assert [(v["promise"], v["step_id"]) for v in doc["violations"]] == [
        ("final_state", files["zombie"])
    ]


def test_an_unreadable_store_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--store", "mysql://nowhere/db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    empty = f"sqlite:///{tmp_path}/empty.db"
    assert main(["--store", empty]) == 2
    assert "no such table" in capsys.readouterr().err

    from relaymesh.store import open_store

    async def migrated() -> str:
        url = f"sqlite:///{tmp_path}/s.db"
        await (await open_store(url)).close()
        return url

    url = asyncio.run(migrated())
    assert main(["--store", url, "--journal", str(tmp_path / "no")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read {tmp_path / 'no'}")
