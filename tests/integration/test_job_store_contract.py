"""The JobStore contract (hub.engine.ports), run against SqlStore on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

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
from hub.engine.ports import JobStore
from hub.errors import ConcurrencyConflictError, JobAlreadyExistsError, JobNotFoundError
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
        created_time=T0,
        start_time=T0 + timedelta(seconds=10),
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
    assert (await jobs.get_job("job-m")).deadline == T0 + timedelta(seconds=610)


async def test_method_without_payload_round_trips(store: SqlStore) -> None:
    job = _method_job("job-1", method=MethodRequest("ping"))
    await store.add_job(job)
    assert await store.get_job("job-1") == job


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

    got = await store.acquire_jobs(
        node_id="n", now=T0, lease_seconds=10, limit=1, statuses=[JobStatus.QUEUED, JobStatus.SCHEDULED]
    )
    assert [job.job_id for job in got] == ["job-b"]
    got = await store.acquire_jobs(node_id="m", now=T0, lease_seconds=10, limit=5, statuses=[JobStatus.QUEUED])
    assert [job.job_id for job in got] == ["job-a"]
    assert await store.acquire_jobs(node_id="m", now=T0, lease_seconds=10, limit=0, statuses=_ACTIVE) == []


async def test_a_released_lease_is_free_again(store: SqlStore) -> None:
    await store.add_job(_method_job("job-1"))
    [held] = await store.acquire_jobs(node_id="node-a", now=T0, lease_seconds=60, limit=1, statuses=_ACTIVE)
    await store.update_job(replace(held, acquired_by=None, acquired_until=None), expected_revision=held.revision)
    got = await store.acquire_jobs(node_id="node-b", now=T0, lease_seconds=60, limit=1, statuses=_ACTIVE)
    assert [job.acquired_by for job in got] == ["node-b"]


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


async def test_migration_0003_matches_the_job_tables(store: SqlStore) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs: list[Any] = compare_metadata(context, metadata)
        return diffs

    async with store.engine.connect() as connection:
        diffs = await connection.run_sync(differences)
    assert [diff for diff in diffs if "job" in repr(diff)] == []
