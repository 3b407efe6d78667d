"""The ScheduleStore contract (hub.ports), run against SqlStore on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.domain.jobs import Job, JobStatus, JobType
from hub.domain.methods import MethodRequest
from hub.domain.recurrence import parse_recurrence
from hub.domain.schedules import Overlap, Schedule, ScheduleState
from hub.errors import ConcurrencyConflictError, ScheduleNotFoundError
from hub.storage import SqlStore

T0 = datetime(2026, 3, 28, 23, 30, 0, 123456, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
TEMPLATE: dict[str, Any] = {
    "type": "scheduleDeviceMethod",
    "queryCondition": "*",
    "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"why": "ünïcode"}},
}


def _schedule(schedule_id: str, **changes: Any) -> Schedule:
    recurrence = parse_recurrence(
        {"frequency": "day", "interval": 1, "schedule": {"hours": [2], "minutes": [30]}, "count": 10}, BERLIN, T0
    )
    schedule = Schedule(
        schedule_id=schedule_id,
        job_template=TEMPLATE,
        recurrence=recurrence,
        time_zone=BERLIN,
        enabled=True,
        state=ScheduleState.ENABLED,
        overlap=Overlap.QUEUE,
        created_time=T0,
        updated_time=T0,
        next_run_time=T0 + timedelta(hours=1),
    )
    return replace(schedule, **changes)


def _job(job_id: str, schedule_id: str | None, created: datetime) -> Job:
    return Job(
        job_id=job_id,
        job_type=JobType.DEVICE_METHOD,
        status=JobStatus.QUEUED,
        query_condition="*",
        created_time=created,
        start_time=created,
        max_execution_seconds=60,
        method=MethodRequest("reboot", None, 30, 0),
        schedule_id=schedule_id,
    )


async def test_add_get_round_trip_keeps_every_field(store: SqlStore) -> None:
    full = _schedule(
        "full",
        last_run_time=T0 - timedelta(days=1),
        last_run_job_id="full-20260327T013000Z",
        queued_run_time=T0,
        run_count=3,
        fault_reason=None,
        acquired_by="node-a",
        acquired_until=T0 + timedelta(seconds=30),
    )
    stored = await store.add_or_replace_schedule(full, expected_revision=None)
    assert stored == replace(full, revision=1)
    assert await store.get_schedule("full") == stored
    got = await store.get_schedule("full")
    assert got.next_run_time is not None
    assert got.next_run_time.tzinfo is not None


async def test_adding_an_existing_id_is_a_conflict(store: SqlStore) -> None:
    await store.add_or_replace_schedule(_schedule("dup"), expected_revision=None)
    with pytest.raises(ConcurrencyConflictError):
        await store.add_or_replace_schedule(_schedule("dup"), expected_revision=None)


async def test_replace_needs_the_current_revision(store: SqlStore) -> None:
    first = await store.add_or_replace_schedule(_schedule("rep"), expected_revision=None)
    replaced = await store.add_or_replace_schedule(
        replace(first, overlap=Overlap.SKIP, time_zone=ZoneInfo("UTC")), expected_revision=first.revision
    )
    assert (replaced.revision, replaced.overlap, replaced.time_zone.key) == (2, Overlap.SKIP, "UTC")
    with pytest.raises(ConcurrencyConflictError):
        await store.add_or_replace_schedule(first, expected_revision=first.revision)
    with pytest.raises(ConcurrencyConflictError):
        await store.add_or_replace_schedule(_schedule("gone"), expected_revision=1)


async def test_get_update_remove_unknown_raise_not_found(store: SqlStore) -> None:
    with pytest.raises(ScheduleNotFoundError) as caught:
        await store.get_schedule("nope")
    assert caught.value.code == "ScheduleNotFound"
    with pytest.raises(ScheduleNotFoundError):
        await store.update_schedule(_schedule("nope"), expected_revision=1)
    with pytest.raises(ScheduleNotFoundError):
        await store.remove_schedule("nope")


async def test_update_is_versioned(store: SqlStore) -> None:
    stored = await store.add_or_replace_schedule(_schedule("upd"), expected_revision=None)
    changed = await store.update_schedule(
        replace(stored, state=ScheduleState.FAULTED, fault_reason="bad template", next_run_time=None),
        expected_revision=stored.revision,
    )
    assert (changed.revision, changed.state, changed.fault_reason, changed.next_run_time) == (
        2,
        ScheduleState.FAULTED,
        "bad template",
        None,
    )
    with pytest.raises(ConcurrencyConflictError):
        await store.update_schedule(stored, expected_revision=stored.revision)
    assert await store.get_schedule("upd") == changed


async def test_list_in_id_order_with_keyset_paging(store: SqlStore) -> None:
    for schedule_id in ("b", "a", "C", "c-1", "c"):
        await store.add_or_replace_schedule(_schedule(schedule_id), expected_revision=None)
    assert [s.schedule_id for s in await store.list_schedules()] == ["C", "a", "b", "c", "c-1"]
    assert [s.schedule_id for s in await store.list_schedules(limit=2)] == ["C", "a"]
    assert [s.schedule_id for s in await store.list_schedules(after="a", limit=2)] == ["b", "c"]
    assert await store.list_schedules(after="c-1") == []


async def test_remove_leaves_the_runs(store: SqlStore) -> None:
    await store.add_or_replace_schedule(_schedule("rm"), expected_revision=None)
    await store.add_job(_job("rm-20260328T233000Z", "rm", T0))
    await store.remove_schedule("rm")
    with pytest.raises(ScheduleNotFoundError):
        await store.get_schedule("rm")
    assert [job.job_id for job in await store.list_schedule_runs("rm", limit=10)] == ["rm-20260328T233000Z"]


async def test_acquire_takes_due_or_queued_schedules_with_a_free_lease(store: SqlStore) -> None:
    now = T0 + timedelta(hours=2)
    rows = [
        _schedule("due", next_run_time=now - timedelta(minutes=1)),
        _schedule("due-now", next_run_time=now),
        _schedule("later", next_run_time=now + timedelta(seconds=1)),
        _schedule("queued", next_run_time=now + timedelta(hours=1), queued_run_time=now - timedelta(hours=1)),
        _schedule("queued-done", state=ScheduleState.COMPLETED, next_run_time=None, queued_run_time=now),
        _schedule("disabled", state=ScheduleState.DISABLED, enabled=False, next_run_time=now - timedelta(hours=1)),
        _schedule("faulted", state=ScheduleState.FAULTED, next_run_time=now - timedelta(hours=1)),
        _schedule("leased", next_run_time=now, acquired_by="other", acquired_until=now + timedelta(seconds=1)),
        _schedule("expired", next_run_time=now, acquired_by="other", acquired_until=now),
        _schedule("mine", next_run_time=now, acquired_by="me", acquired_until=now + timedelta(seconds=10)),
    ]
    for row in rows:
        await store.add_or_replace_schedule(row, expected_revision=None)
    taken = await store.acquire_due_schedules(node_id="me", now=now, lease_seconds=30, limit=100)
    assert sorted(s.schedule_id for s in taken) == ["due", "due-now", "expired", "mine", "queued", "queued-done"]
    for schedule in taken:
        assert (schedule.acquired_by, schedule.acquired_until, schedule.revision) == (
            "me",
            now + timedelta(seconds=30),
            2,
        )
        assert await store.get_schedule(schedule.schedule_id) == schedule
    again = await store.acquire_due_schedules(node_id="other", now=now, lease_seconds=30, limit=100)
    assert [s.schedule_id for s in again] == ["leased"]
    assert await store.acquire_due_schedules(node_id="me", now=now, lease_seconds=30, limit=0) == []


async def test_acquire_respects_the_limit_in_next_run_order(store: SqlStore) -> None:
    now = T0 + timedelta(days=1)
    for minutes in (5, 1, 3):
        await store.add_or_replace_schedule(
            _schedule(f"s{minutes}", next_run_time=now - timedelta(minutes=minutes)), expected_revision=None
        )
    taken = await store.acquire_due_schedules(node_id="me", now=now, lease_seconds=30, limit=2)
    assert [s.schedule_id for s in taken] == ["s5", "s3"]


async def test_concurrent_acquirers_never_share_a_schedule(store: SqlStore) -> None:
    now = T0 + timedelta(days=1)
    for i in range(20):
        await store.add_or_replace_schedule(_schedule(f"c{i:02d}", next_run_time=now), expected_revision=None)
    results = await asyncio.gather(
        *(store.acquire_due_schedules(node_id=f"n{i}", now=now, lease_seconds=30, limit=5) for i in range(6))
    )
    taken = [s.schedule_id for batch in results for s in batch]
    assert len(taken) == len(set(taken)) == 20


async def test_runs_newest_first_and_only_of_that_schedule(store: SqlStore) -> None:
    for job_id, schedule_id, minutes in [
        ("r-1", "r", 1),
        ("r-3", "r", 3),
        ("r-2b", "r", 2),
        ("r-2a", "r", 2),
        ("other-9", "other", 9),
        ("plain", None, 10),
    ]:
        await store.add_job(_job(job_id, schedule_id, T0 + timedelta(minutes=minutes)))
    runs = await store.list_schedule_runs("r", limit=10)
    assert [job.job_id for job in runs] == ["r-3", "r-2b", "r-2a", "r-1"]
    assert all(job.schedule_id == "r" for job in runs)
    assert [job.job_id for job in await store.list_schedule_runs("r", limit=2)] == ["r-3", "r-2b"]
    assert await store.list_schedule_runs("none", limit=5) == []
