"""The JobStore contract (hub.ports), run against SqlStore on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from hub.domain.devices import new_device
from hub.domain.jobs import (
    DeviceJob,
    DeviceJobStatistics,
    DeviceJobStatus,
    Job,
    JobEvent,
    JobEventKind,
    JobStatus,
    JobType,
)
from hub.domain.methods import MethodRequest
from hub.domain.rollout import JobControls
from hub.domain.twin import Twin, apply_desired_patch, apply_tags_patch
from hub.errors import ConcurrencyConflictError, JobAlreadyExistsError, JobNotFoundError
from hub.ports import JobStore, TwinJobBatch
from hub.storage import SqlStore
from hub.storage.tables import metadata

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
_ACTIVE = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING)


def _method_job(job_id: str, **changes: object) -> Job:
    job = Job(
        job_id=job_id,
        job_type=JobType.DEVICE_METHOD,
        status=JobStatus.QUEUED,
        query_condition="tags.site = 'north'",
        created_time=T0 - timedelta(seconds=20),
        start_time=T0 - timedelta(seconds=10),
        max_execution_seconds=600,
        method=MethodRequest("reboot", {"delay": 5, "why": "ünïcode"}, 30, 10),
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def _twin_job(job_id: str, **changes: object) -> Job:
    job = Job(
        job_id=job_id,
        job_type=JobType.UPDATE_TWIN,
        status=JobStatus.QUEUED,
        query_condition="*",
        created_time=T0,
        start_time=T0,
        max_execution_seconds=3600,
        twin_patch={"tags": {"site": "south"}, "properties": {"desired": {"fw": "2.0", "off": None}}},
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def _device_job(job_id: str, device_id: str, status: DeviceJobStatus = DeviceJobStatus.PENDING) -> DeviceJob:
    return DeviceJob(job_id, device_id, JobType.DEVICE_METHOD, status, T0, T0)


def _twin_record(job_id: str, device_id: str, status: DeviceJobStatus = DeviceJobStatus.PENDING) -> DeviceJob:
    return DeviceJob(job_id, device_id, JobType.UPDATE_TWIN, status, T0, T0)


def _twin_change(now: datetime, calls: list[str]) -> Callable[[Twin], Twin]:
    """What a twin update job does to each twin (one version step), noting the ids it saw."""

    def change(twin: Twin) -> Twin:
        calls.append(twin.device_id)
        patched = apply_desired_patch(apply_tags_patch(twin, {"site": "south"}, now), {"fw": "2.0"}, now)
        return replace(patched, version=twin.version + 1, revision=twin.revision + 1)

    return change


def _as_job_store(store: SqlStore) -> JobStore:
    return store  # mypy checks SqlStore against the protocol here


# -- jobs --------------------------------------------------------------------------------


async def test_add_then_get_job_keeps_every_field(store: SqlStore) -> None:
    method_job = _method_job("job-m", status_message="waiting", failure_reason=None)
    twin_job = _twin_job(
        "job-t",
        status=JobStatus.COMPLETED,
        end_time=T0 + timedelta(minutes=5),
        failure_reason="nope",
        device_count=7,
        acquired_by="node-a",
        acquired_until=T0 + timedelta(seconds=30),
        revision=4,
    )
    jobs = _as_job_store(store)

    assert await jobs.add_job(method_job) == method_job
    await jobs.add_job(twin_job)

    assert await jobs.get_job("job-m") == method_job
    assert await jobs.get_job("job-t") == twin_job
    assert (await jobs.get_job("job-m")).deadline == T0 + timedelta(seconds=590)  # starts 10 s before T0, runs 600 s


async def test_method_without_payload_round_trips(store: SqlStore) -> None:
    job = _method_job("job-1", method=MethodRequest("ping"))
    await store.add_job(job)
    assert await store.get_job("job-1") == job


async def test_job_controls_schedule_and_attempts_round_trip(store: SqlStore) -> None:
    body: dict[str, Any] = {
        "rollout": {"maxPerMinute": 120, "maxConcurrency": 5},
        "abort": [{"failureType": "all", "thresholdPercentage": 25.5, "minNumberOfExecutedDevices": 10}],
        "retry": {"maxAttempts": 3, "backoffSeconds": 2, "retryOn": ["DeviceNotOnline", "failed"]},
        "continuous": True,
    }
    job = _method_job("job-1", controls=JobControls.create(body, method_job=True), schedule_id="nightly")
    await store.add_job(job)
    assert await store.get_job("job-1") == job
    await store.add_device_jobs([_device_job("job-1", "dev-1")])
    tried = replace(_device_job("job-1", "dev-1", DeviceJobStatus.PENDING), attempts=2)
    await store.update_device_jobs([tried])
    # An update without a count (a cancel, the deadline) keeps the attempts made.
    await store.update_device_jobs([_device_job("job-1", "dev-1", DeviceJobStatus.CANCELED)])
    [record] = await store.list_device_jobs("job-1")
    assert (record.status, record.attempts) == (DeviceJobStatus.CANCELED, 2)


async def test_add_job_refuses_a_duplicate_id(store: SqlStore) -> None:
    await store.add_job(_method_job("job-1"))
    with pytest.raises(JobAlreadyExistsError) as caught:
        await store.add_job(_twin_job("job-1"))
    assert caught.value.code == "JobAlreadyExists"
    assert (await store.get_job("job-1")).job_type is JobType.DEVICE_METHOD


async def test_get_missing_job_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(JobNotFoundError) as caught:
        await store.get_job("job-missing")
    assert caught.value.code == "JobNotFound"


async def test_list_jobs_pages_in_job_id_order_and_filters(store: SqlStore) -> None:
    await store.add_job(_method_job("job-c"))
    await store.add_job(_twin_job("job-a"))
    await store.add_job(_method_job("job-b", status=JobStatus.RUNNING))
    await store.add_job(_twin_job("Job-Z", status=JobStatus.RUNNING))

    ids = [job.job_id for job in await store.list_jobs(limit=10)]
    assert ids == ["Job-Z", "job-a", "job-b", "job-c"]  # code point order on both databases
    assert [job.job_id for job in await store.list_jobs(after="job-a", limit=1)] == ["job-b"]
    assert [job.job_id for job in await store.list_jobs(job_type=JobType.UPDATE_TWIN, limit=10)] == ["Job-Z", "job-a"]
    assert [job.job_id for job in await store.list_jobs(status=JobStatus.RUNNING, limit=10)] == ["Job-Z", "job-b"]
    running_twins = await store.list_jobs(job_type=JobType.UPDATE_TWIN, status=JobStatus.RUNNING, limit=10)
    assert [job.job_id for job in running_twins] == ["Job-Z"]
    assert await store.list_jobs(after="job-c", limit=10) == []


async def test_update_job_is_versioned(store: SqlStore) -> None:
    job = await store.add_job(_method_job("job-1"))
    running = replace(job, status=JobStatus.RUNNING, device_count=3, status_message="started")

    updated = await store.update_job(running, expected_revision=1)

    assert updated == replace(running, revision=2)
    assert await store.get_job("job-1") == updated
    with pytest.raises(ConcurrencyConflictError):
        await store.update_job(replace(running, status=JobStatus.FAILED), expected_revision=1)
    assert (await store.get_job("job-1")).status is JobStatus.RUNNING
    done = await store.update_job(
        replace(updated, status=JobStatus.COMPLETED, end_time=T0 + timedelta(hours=1)), expected_revision=2
    )
    assert done.revision == 3
    assert done.end_time == T0 + timedelta(hours=1)


async def test_update_missing_job_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(JobNotFoundError):
        await store.update_job(_method_job("job-missing"), expected_revision=1)


# -- leases ------------------------------------------------------------------------------


async def test_a_job_is_acquired_by_one_node_until_its_lease_expires(store: SqlStore) -> None:
    await store.add_job(_method_job("job-1"))
    await store.add_job(_method_job("job-2", status=JobStatus.COMPLETED, end_time=T0))

    first = await store.acquire_jobs(node_id="node-a", now=T0, lease_seconds=30, limit=10, statuses=_ACTIVE)
    second = await store.acquire_jobs(
        node_id="node-b", now=T0 + timedelta(seconds=29), lease_seconds=30, limit=10, statuses=_ACTIVE
    )

    assert [job.job_id for job in first] == ["job-1"]
    assert first[0].acquired_by == "node-a"
    assert first[0].acquired_until == T0 + timedelta(seconds=30)
    assert first[0].revision == 2
    assert await store.get_job("job-1") == first[0]
    assert second == []

    # The holder renews its own lease; after expiry another node takes the job over.
    renewed = await store.acquire_jobs(
        node_id="node-a", now=T0 + timedelta(seconds=15), lease_seconds=30, limit=10, statuses=_ACTIVE
    )
    assert [job.acquired_until for job in renewed] == [T0 + timedelta(seconds=45)]
    later = T0 + timedelta(seconds=46)
    taken = await store.acquire_jobs(node_id="node-b", now=later, lease_seconds=30, limit=10, statuses=_ACTIVE)
    assert [(job.job_id, job.acquired_by) for job in taken] == [("job-1", "node-b")]


async def test_acquire_respects_statuses_limit_and_start_order(store: SqlStore) -> None:
    await store.add_job(_method_job("job-a", start_time=T0 + timedelta(seconds=3)))
    await store.add_job(_method_job("job-b", start_time=T0 + timedelta(seconds=1)))
    await store.add_job(_method_job("job-c", start_time=T0 + timedelta(seconds=2), status=JobStatus.SCHEDULED))

    later = T0 + timedelta(seconds=3)
    got = await store.acquire_jobs(
        node_id="n", now=later, lease_seconds=10, limit=1, statuses=[JobStatus.QUEUED, JobStatus.SCHEDULED]
    )
    assert [job.job_id for job in got] == ["job-b"]
    got = await store.acquire_jobs(node_id="m", now=later, lease_seconds=10, limit=5, statuses=[JobStatus.QUEUED])
    assert [job.job_id for job in got] == ["job-a"]
    assert await store.acquire_jobs(node_id="m", now=later, lease_seconds=10, limit=0, statuses=_ACTIVE) == []


async def test_acquire_takes_no_job_before_its_start_time(store: SqlStore) -> None:
    # A new job is queued even when it starts later (IoT Hub answers its creation so); until the
    # runner makes it scheduled, no node may take it early.
    await store.add_job(_method_job("job-later", start_time=T0 + timedelta(seconds=5)))
    assert await store.acquire_jobs(node_id="n", now=T0, lease_seconds=10, limit=5, statuses=_ACTIVE) == []
    got = await store.acquire_jobs(
        node_id="n", now=T0 + timedelta(seconds=5), lease_seconds=10, limit=5, statuses=_ACTIVE
    )
    assert [job.job_id for job in got] == ["job-later"]


async def test_defer_future_jobs_schedules_queued_jobs_that_start_later(store: SqlStore) -> None:
    await store.add_job(_method_job("job-later", start_time=T0 + timedelta(microseconds=1)))
    await store.add_job(_method_job("job-now", start_time=T0))
    await store.add_job(_method_job("job-scheduled", status=JobStatus.SCHEDULED, start_time=T0 + timedelta(hours=1)))
    await store.add_job(_twin_job("job-later-too", start_time=T0 + timedelta(hours=2)))
    before = {job.job_id: job for job in await store.list_jobs(limit=10)}

    deferred = await store.defer_future_jobs(T0)

    assert [job.job_id for job in deferred] == ["job-later", "job-later-too"]
    for job in deferred:
        assert job == replace(before[job.job_id], status=JobStatus.SCHEDULED, revision=before[job.job_id].revision + 1)
        assert await store.get_job(job.job_id) == job
    for untouched in ("job-now", "job-scheduled"):
        assert await store.get_job(untouched) == before[untouched]


async def test_a_released_lease_is_free_again(store: SqlStore) -> None:
    await store.add_job(_method_job("job-1"))
    [held] = await store.acquire_jobs(node_id="node-a", now=T0, lease_seconds=60, limit=1, statuses=_ACTIVE)
    await store.update_job(replace(held, acquired_by=None, acquired_until=None), expected_revision=held.revision)
    got = await store.acquire_jobs(node_id="node-b", now=T0, lease_seconds=60, limit=1, statuses=_ACTIVE)
    assert [job.acquired_by for job in got] == ["node-b"]


async def test_acquire_skips_excluded_jobs(store: SqlStore) -> None:
    for job_id in ("job-a", "job-b", "job-c"):
        await store.add_job(_method_job(job_id))
    got = await store.acquire_jobs(
        node_id="n", now=T0, lease_seconds=10, limit=10, statuses=_ACTIVE, exclude=["job-a", "job-c", "job-x"]
    )
    assert [job.job_id for job in got] == ["job-b"]
    assert (await store.get_job("job-a")).acquired_by is None
    got = await store.acquire_jobs(node_id="n", now=T0, lease_seconds=10, limit=10, statuses=_ACTIVE, exclude=[])
    assert [job.job_id for job in got] == ["job-a", "job-b", "job-c"]


async def test_promote_due_jobs_queues_scheduled_jobs_whose_start_has_come(store: SqlStore) -> None:
    now = T0 + timedelta(minutes=1)
    await store.add_job(_method_job("job-due-late", status=JobStatus.SCHEDULED, start_time=now))
    await store.add_job(_method_job("job-due-early", status=JobStatus.SCHEDULED, start_time=T0, revision=3))
    await store.add_job(_twin_job("job-due-tie", status=JobStatus.SCHEDULED, start_time=T0))
    await store.add_job(
        _method_job("job-future", status=JobStatus.SCHEDULED, start_time=now + timedelta(microseconds=1))
    )
    await store.add_job(_method_job("job-queued", start_time=T0))
    await store.add_job(_method_job("job-done", status=JobStatus.CANCELLED, start_time=T0, end_time=T0))
    before = {job.job_id: job for job in await store.list_jobs(limit=10)}

    promoted = await store.promote_due_jobs(now)

    assert [job.job_id for job in promoted] == ["job-due-early", "job-due-tie", "job-due-late"]
    for job in promoted:
        assert job == replace(before[job.job_id], status=JobStatus.QUEUED, revision=before[job.job_id].revision + 1)
        assert await store.get_job(job.job_id) == job
    for untouched in ("job-future", "job-queued", "job-done"):
        assert await store.get_job(untouched) == before[untouched]
    assert await store.promote_due_jobs(now) == []


async def test_concurrent_acquirers_never_share_a_job(database_url: str) -> None:
    async with SqlStore.open(database_url) as store:
        for index in range(30):
            await store.add_job(_method_job(f"job-{index:03}"))
    async with SqlStore.open(database_url) as one, SqlStore.open(database_url, migrate=False) as two:
        stores = [one, two] * 4
        batches = await asyncio.gather(
            *(
                store.acquire_jobs(node_id=f"node-{index}", now=T0, lease_seconds=60, limit=5, statuses=_ACTIVE)
                for index, store in enumerate(stores)
            )
        )
        owners = {job.job_id: job.acquired_by for job in await one.list_jobs(limit=100)}

    taken = [job.job_id for batch in batches for job in batch]
    assert len(taken) == len(set(taken)) == 30  # nobody got a job twice, and none was left over
    for index, batch in enumerate(batches):
        assert all(owners[job.job_id] == f"node-{index}" for job in batch)


# -- device jobs -------------------------------------------------------------------------


async def test_batch_device_job_updates_and_statistics(store: SqlStore) -> None:
    await store.add_job(_method_job("job-1"))
    await store.add_job(_method_job("job-2"))
    device_ids = [f"dev-{index:04}" for index in range(1000)]
    assert await store.add_device_jobs([_device_job("job-1", device_id) for device_id in device_ids]) == set()
    await store.add_device_jobs([_device_job("job-2", "dev-0000")])
    assert await store.count_device_jobs("job-1") == DeviceJobStatistics(device_count=1000, pending_count=1000)

    later = T0 + timedelta(seconds=5)
    statuses = [
        DeviceJobStatus.COMPLETED,
        DeviceJobStatus.FAILED,
        DeviceJobStatus.RUNNING,
        DeviceJobStatus.CANCELED,
        DeviceJobStatus.PENDING,
        DeviceJobStatus.SCHEDULED,
    ]
    updates = [
        replace(
            _device_job("job-1", device_id),
            status=statuses[index % len(statuses)],
            last_updated_time=later,
            start_time=later,
            end_time=later if statuses[index % len(statuses)].is_terminal else None,
            outcome={"deviceMethodResponse": {"status": 200, "payload": index}} if index % 6 == 0 else None,
            error={"code": "JobTimedOut", "description": "late"} if index % 6 == 1 else None,
        )
        for index, device_id in enumerate(device_ids)
    ]
    await store.update_device_jobs(updates)
    # An unknown key is ignored, and an empty batch is nothing.
    await store.update_device_jobs([_device_job("job-missing", "dev-0000")])
    await store.update_device_jobs([])

    assert await store.count_device_jobs("job-1") == DeviceJobStatistics(
        device_count=1000,
        pending_count=332,  # pending and scheduled, 166 each
        running_count=167,
        succeeded_count=167,
        failed_count=167,
        canceled_count=167,
    )
    assert await store.count_device_jobs("job-2") == DeviceJobStatistics(device_count=1, pending_count=1)
    assert await store.count_device_jobs("job-none") == DeviceJobStatistics()
    assert await store.list_device_jobs("job-1", limit=1000) == updates
    assert (await store.list_device_jobs("job-2", limit=10))[0].status is DeviceJobStatus.PENDING


async def test_list_device_jobs_and_pending_ids_page_in_device_id_order(store: SqlStore) -> None:
    records = [
        _device_job("job-1", "dev-c", DeviceJobStatus.PENDING),
        _device_job("job-1", "dev-a", DeviceJobStatus.COMPLETED),
        _device_job("job-1", "Dev-Z", DeviceJobStatus.SCHEDULED),
        _device_job("job-1", "dev-b", DeviceJobStatus.PENDING),
        _device_job("job-2", "dev-0", DeviceJobStatus.PENDING),
    ]
    await store.add_device_jobs(records)

    listed = await store.list_device_jobs("job-1", limit=10)
    assert [job.device_id for job in listed] == ["Dev-Z", "dev-a", "dev-b", "dev-c"]
    page = await store.list_device_jobs("job-1", after="dev-a", limit=1)
    assert [job.device_id for job in page] == ["dev-b"]
    pending = await store.list_device_jobs("job-1", status=DeviceJobStatus.PENDING, limit=10)
    assert [job.device_id for job in pending] == ["dev-b", "dev-c"]
    assert await store.pending_device_ids("job-1", limit=10) == ["Dev-Z", "dev-b", "dev-c"]
    assert await store.pending_device_ids("job-1", after="Dev-Z", limit=1) == ["dev-b"]
    assert await store.pending_device_ids("job-none", limit=10) == []


async def test_pending_device_ids_can_include_running_records(store: SqlStore) -> None:
    await store.add_device_jobs(
        [
            _device_job("job-1", device_id, status)
            for device_id, status in [
                ("dev-a", DeviceJobStatus.RUNNING),
                ("dev-b", DeviceJobStatus.PENDING),
                ("dev-c", DeviceJobStatus.COMPLETED),
                ("dev-d", DeviceJobStatus.SCHEDULED),
                ("dev-e", DeviceJobStatus.FAILED),
                ("dev-f", DeviceJobStatus.RUNNING),
                ("dev-g", DeviceJobStatus.CANCELED),
            ]
        ]
        + [_device_job("job-2", "dev-0", DeviceJobStatus.RUNNING)]
    )

    assert await store.pending_device_ids("job-1", limit=10) == ["dev-b", "dev-d"]
    every = await store.pending_device_ids("job-1", limit=10, include_running=True)
    assert every == ["dev-a", "dev-b", "dev-d", "dev-f"]
    page = await store.pending_device_ids("job-1", after="dev-b", limit=2, include_running=True)
    assert page == ["dev-d", "dev-f"]


async def test_update_device_jobs_never_overwrites_a_terminal_record(store: SqlStore) -> None:
    statuses = {
        "dev-completed": DeviceJobStatus.COMPLETED,
        "dev-failed": DeviceJobStatus.FAILED,
        "dev-canceled": DeviceJobStatus.CANCELED,
        "dev-pending": DeviceJobStatus.PENDING,
        "dev-running": DeviceJobStatus.RUNNING,
        "dev-scheduled": DeviceJobStatus.SCHEDULED,
    }
    done = T0 + timedelta(seconds=1)
    records = [
        replace(
            _device_job("job-1", device_id, status),
            end_time=done if status.is_terminal else None,
            outcome={"deviceMethodResponse": {"status": 200, "payload": None}} if status.is_terminal else None,
        )
        for device_id, status in sorted(statuses.items())
    ]
    await store.add_device_jobs(records)
    before = {record.device_id: record for record in records}

    later = T0 + timedelta(seconds=9)
    failed = {"code": "JobTimedOut", "description": "late"}
    await store.update_device_jobs(
        [
            replace(record, status=DeviceJobStatus.FAILED, last_updated_time=later, end_time=later, error=failed)
            for record in records
        ]
    )
    after = {record.device_id: record for record in await store.list_device_jobs("job-1", limit=10)}
    for device_id, status in statuses.items():
        if status.is_terminal:
            assert after[device_id] == before[device_id]
        else:
            assert after[device_id].status is DeviceJobStatus.FAILED
            assert after[device_id].error == failed
            assert after[device_id].end_time == later

    # A late "running" (or a second terminal result) changes nothing on a finished record.
    await store.update_device_jobs(
        [
            replace(before["dev-completed"], status=DeviceJobStatus.RUNNING, end_time=None, last_updated_time=later),
            replace(after["dev-pending"], status=DeviceJobStatus.COMPLETED, error=None),
        ]
    )
    assert await store.list_device_jobs("job-1", limit=10) == [after[device_id] for device_id in sorted(after)]


# -- twin update batches ----------------------------------------------------------------


async def _twin_job_setup(store: SqlStore, device_ids: list[str], job_id: str = "job-t") -> None:
    assert await store.add_devices([new_device(device_id, T0) for device_id in device_ids]) == set()
    assert await store.add_device_jobs([_twin_record(job_id, device_id) for device_id in device_ids]) == set()


async def test_twin_batch_applies_the_change_and_completes_the_records(store: SqlStore) -> None:
    ids = ["dev-a", "dev-b", "dev-c", "dev-d"]
    await _twin_job_setup(store, ids)
    await store.update_device_jobs(
        [replace(_twin_record("job-t", "dev-b"), status=DeviceJobStatus.RUNNING, start_time=T0)]
    )
    now = T0 + timedelta(seconds=30)
    calls: list[str] = []

    batch = await store.complete_twin_job_batch("job-t", ["dev-c", "dev-a", "dev-b"], _twin_change(now, calls), now)

    assert sorted(calls) == ["dev-a", "dev-b", "dev-c"]
    assert batch.missing == []
    assert sorted(twin.device_id for twin in batch.twins) == ["dev-a", "dev-b", "dev-c"]
    for twin in batch.twins:
        stored = await store.get_twin(twin.device_id)
        assert stored == twin  # written as the change returned it
        assert stored.tags == {"site": "south"}
        assert stored.desired.properties == {"fw": "2.0"}
        assert (stored.version, stored.revision) == (2, 2)
    assert (await store.get_twin("dev-d")).revision == 1  # not in the batch
    records = {record.device_id: record for record in await store.list_device_jobs("job-t")}
    for device_id in ("dev-a", "dev-b", "dev-c"):
        assert records[device_id] == replace(
            _twin_record("job-t", device_id),
            status=DeviceJobStatus.COMPLETED,
            start_time=now,
            end_time=now,
            last_updated_time=now,
        )
    assert records["dev-d"] == _twin_record("job-t", "dev-d")
    assert await store.pending_device_ids("job-t", include_running=True) == ["dev-d"]


async def test_twin_batch_run_again_changes_nothing(store: SqlStore) -> None:
    ids = ["dev-a", "dev-b"]
    await _twin_job_setup(store, ids)
    now = T0 + timedelta(seconds=30)
    first = await store.complete_twin_job_batch("job-t", ids, _twin_change(now, []), now)
    twins = [await store.get_twin(device_id) for device_id in ids]
    records = await store.list_device_jobs("job-t")

    calls: list[str] = []
    later = now + timedelta(seconds=30)
    again = await store.complete_twin_job_batch("job-t", ids, _twin_change(later, calls), later)

    assert len(first.twins) == 2
    assert again == TwinJobBatch(twins=[], missing=[])
    assert calls == []
    assert [await store.get_twin(device_id) for device_id in ids] == twins
    assert await store.list_device_jobs("job-t") == records
    assert await store.complete_twin_job_batch("job-t", [], _twin_change(later, calls), later) == again


async def test_twin_batch_fails_the_records_of_deleted_devices(store: SqlStore) -> None:
    await _twin_job_setup(store, ["dev-a", "dev-gone", "dev-z"])
    await store.remove_device("dev-gone")
    now = T0 + timedelta(seconds=30)
    calls: list[str] = []

    batch = await store.complete_twin_job_batch("job-t", ["dev-a", "dev-gone", "dev-z"], _twin_change(now, calls), now)

    assert batch.missing == ["dev-gone"]
    assert sorted(twin.device_id for twin in batch.twins) == ["dev-a", "dev-z"]
    assert sorted(calls) == ["dev-a", "dev-z"]
    [gone] = await store.list_device_jobs("job-t", status=DeviceJobStatus.FAILED)
    assert gone.device_id == "dev-gone"
    assert gone.error == {"code": "DeviceNotFound", "description": "device 'dev-gone' no longer exists"}
    assert gone.outcome is None
    assert (gone.start_time, gone.end_time, gone.last_updated_time) == (now, now, now)
    assert await store.count_device_jobs("job-t") == DeviceJobStatistics(
        device_count=3, succeeded_count=2, failed_count=1
    )
    # Run again: the failed record is terminal too.
    again = await store.complete_twin_job_batch("job-t", ["dev-gone"], _twin_change(now, calls), now)
    assert again == TwinJobBatch(twins=[], missing=[])


async def test_twin_batch_leaves_other_jobs_and_terminal_records_alone(store: SqlStore) -> None:
    await _twin_job_setup(store, ["dev-a", "dev-b", "dev-c"])
    await store.add_devices([new_device("dev-other", T0)])
    await store.add_device_jobs([_twin_record("job-other", device_id) for device_id in ("dev-a", "dev-other")])
    canceled = replace(
        _twin_record("job-t", "dev-b"), status=DeviceJobStatus.CANCELED, end_time=T0, last_updated_time=T0
    )
    await store.update_device_jobs([canceled])
    now = T0 + timedelta(seconds=30)
    calls: list[str] = []

    batch = await store.complete_twin_job_batch(
        "job-t", ["dev-a", "dev-b", "dev-c", "dev-other", "dev-unknown"], _twin_change(now, calls), now
    )

    # dev-other has no record in job-t, dev-unknown neither a record nor a device.
    assert sorted(calls) == ["dev-a", "dev-c"]
    assert sorted(twin.device_id for twin in batch.twins) == ["dev-a", "dev-c"]
    assert batch.missing == []
    for device_id in ("dev-b", "dev-other"):
        assert await store.get_twin(device_id) == Twin(device_id, status_updated_time=T0)
    [b] = await store.list_device_jobs("job-t", after="dev-a", limit=1)
    assert b == canceled
    assert await store.list_device_jobs("job-other") == [
        _twin_record("job-other", "dev-a"),
        _twin_record("job-other", "dev-other"),
    ]


async def test_twin_batch_of_thousands_of_devices(store: SqlStore) -> None:
    ids = [f"dev-{index:05}" for index in range(2500)]
    await _twin_job_setup(store, ids)
    await store.remove_devices(["dev-00999", "dev-01000", "dev-02499"])  # across the chunks
    now = T0 + timedelta(seconds=30)
    calls: list[str] = []

    batch = await store.complete_twin_job_batch("job-t", list(reversed(ids)), _twin_change(now, calls), now)

    assert batch.missing == ["dev-00999", "dev-01000", "dev-02499"]
    assert len(batch.twins) == len(calls) == 2497
    assert await store.count_device_jobs("job-t") == DeviceJobStatistics(
        device_count=2500, succeeded_count=2497, failed_count=3
    )
    for device_id in ("dev-00000", "dev-01001", "dev-02498"):
        twin = await store.get_twin(device_id)
        assert (twin.tags, twin.revision) == ({"site": "south"}, 2)
    assert await store.pending_device_ids("job-t", include_running=True) == []


# -- events ------------------------------------------------------------------------------


async def test_events_get_increasing_sequences_and_list_in_order(store: SqlStore) -> None:
    events = [
        JobEvent("job-1", T0, JobEventKind.STATUS_CHANGED, "queued -> running", data={"from": "queued"}),
        JobEvent("job-2", T0, JobEventKind.NOTE, "other job"),
        JobEvent("job-1", T0 + timedelta(seconds=1), JobEventKind.DEVICE_FAILED, "timed out", device_id="dev-1"),
    ]
    stored = await store.add_job_events(events)
    more = await store.add_job_events([JobEvent("job-1", T0, JobEventKind.NOTE, "later")])

    sequences = [event.sequence for event in stored + more]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4
    assert all(sequence > 0 for sequence in sequences)
    assert [replace(event, sequence=0) for event in stored] == events
    listed = await store.list_job_events("job-1")
    assert listed == [stored[0], stored[2], more[0]]
    assert await store.list_job_events("job-1", after_sequence=stored[0].sequence, limit=1) == [stored[2]]
    assert await store.add_job_events([]) == []


# -- purge -------------------------------------------------------------------------------


async def test_purge_removes_only_old_terminal_jobs_with_their_rows(store: SqlStore) -> None:
    cutoff = T0 + timedelta(days=1)
    old_done = _method_job("job-old", status=JobStatus.COMPLETED, end_time=cutoff - timedelta(seconds=1))
    old_failed = _twin_job("job-failed", status=JobStatus.FAILED, end_time=T0)
    recent = _method_job("job-recent", status=JobStatus.CANCELLED, end_time=cutoff + timedelta(seconds=1))
    running = _method_job("job-running", status=JobStatus.RUNNING)
    for job in (old_done, old_failed, recent, running):
        await store.add_job(job)
        await store.add_device_jobs([_device_job(job.job_id, "dev-1"), _device_job(job.job_id, "dev-2")])
        await store.add_job_events([JobEvent(job.job_id, T0, JobEventKind.NOTE, "created")])

    assert await store.purge_jobs(cutoff) == 2

    assert [job.job_id for job in await store.list_jobs(limit=10)] == ["job-recent", "job-running"]
    for gone in ("job-old", "job-failed"):
        with pytest.raises(JobNotFoundError):
            await store.get_job(gone)
        assert await store.list_device_jobs(gone, limit=10) == []
        assert await store.list_job_events(gone) == []
    for kept in ("job-recent", "job-running"):
        assert (await store.count_device_jobs(kept)).device_count == 2
        assert len(await store.list_job_events(kept)) == 1
    assert await store.purge_jobs(cutoff) == 0


# -- schema ------------------------------------------------------------------------------


async def test_migrations_match_the_job_and_schedule_tables(store: SqlStore) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs: list[Any] = compare_metadata(context, metadata)
        return diffs

    async with store.engine.connect() as connection:
        diffs = await connection.run_sync(differences)
    assert [diff for diff in diffs if "job" in repr(diff) or "schedule" in repr(diff)] == []
