"""Jobs running against simulated devices over real MQTT, driven through the job client SDK."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_sim import Behaviours, Fleet
from device_sim.behaviours import MethodProfile
from hub.runtime import Hub
from job_client import AsyncRegistryClient
from job_client.jobs import AsyncJobClient
from job_client.models import DeviceJobResult, Job, JobStatus, MethodParams
from tests.e2e.conftest import connection_string, device_endpoint, fleet_of, hub_settings

LOCK = MethodParams("lockDoor", {"reason": "test"}, response_timeout_in_seconds=10)


async def results(jobs: AsyncJobClient, job_id: str) -> dict[str, DeviceJobResult]:
    return {r.device_id: r async for r in jobs.list_device_results(job_id)}


async def wait(jobs: AsyncJobClient, job_id: str, timeout: float = 60) -> Job:
    return await jobs.wait_for_job(job_id, poll_interval=0.1, timeout=timeout)


async def test_method_job_calls_every_matching_device(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    async with fleet_of(hub, registry, 12, "lock-") as fleet, fleet_of(hub, registry, 3, "other-"):
        job = await jobs.schedule_device_method("lock-all", "STARTSWITH(deviceId, 'lock-')", LOCK)
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        done = await wait(jobs, "lock-all")
        assert done.status is JobStatus.COMPLETED
        stats = done.statistics
        assert (stats.device_count, stats.succeeded_count, stats.failed_count, stats.pending_count) == (12, 12, 0, 0)
        assert done.end_time is not None
        by_device = await results(jobs, "lock-all")
        assert sorted(by_device) == sorted(d.device_id for d in fleet)
        for result in by_device.values():
            assert str(result.status) == "completed"
            assert result.outcome == {"deviceMethodResponse": {"status": 200, "payload": {"locked": True}}}
            assert result.start_time_utc is not None
            assert result.end_time_utc is not None
        assert fleet.stats().totals.methods_handled == 12
        events = await jobs.list_events("lock-all")
        messages = [e.message for e in events]
        assert any("12 devices selected" in m for m in messages)
        assert "job completed" in messages[-1]


async def test_failing_devices_are_counted_not_fatal(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    async with fleet_of(hub, registry, 2, "ok-"), fleet_of(hub, registry, 3, "bad-", broken):
        await jobs.schedule_device_method("mixed", "*", LOCK)
        done = await wait(jobs, "mixed")
        assert done.status is JobStatus.COMPLETED
        assert (done.statistics.succeeded_count, done.statistics.failed_count) == (2, 3)
        failed = [r async for r in jobs.list_device_results("mixed", status="failed")]
        assert sorted(r.device_id for r in failed) == ["bad-0000", "bad-0001", "bad-0002"]
        assert failed[0].outcome["deviceMethodResponse"]["status"] == 500
        events = await jobs.list_events("mixed")
        assert sorted(e.device_id for e in events if e.kind == "deviceFailed") == [r.device_id for r in failed]


async def test_offline_device_is_called_when_it_connects(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    fleet = await Fleet.provision(registry, device_endpoint(hub), count=3, prefix="late-")
    try:
        await jobs.schedule_device_method("late", "*", LOCK, max_execution_time_in_seconds=120)
        running = await jobs.get_job("late")
        for _ in range(100):
            running = await jobs.get_job("late")
            if running.statistics.device_count == 3:
                break
            await asyncio.sleep(0.05)
        assert running.status is JobStatus.RUNNING
        assert running.statistics.pending_count == 3
        await fleet.start()
        done = await wait(jobs, "late")
        assert done.statistics.succeeded_count == 3
    finally:
        await fleet.stop()


async def test_deadline_fails_the_rest_with_job_timed_out(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    await registry.create_device("never-online")
    async with fleet_of(hub, registry, 2, "on-"):
        await jobs.schedule_device_method("short", "*", LOCK, max_execution_time_in_seconds=2)
        done = await wait(jobs, "short")
        assert done.status is JobStatus.COMPLETED
        assert (done.statistics.succeeded_count, done.statistics.failed_count) == (2, 1)
        by_device = await results(jobs, "short")
        error = by_device["never-online"].error
        assert error is not None
        assert error.code == "JobTimedOut"


async def test_scheduled_job_waits_for_its_start_time(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    async with fleet_of(hub, registry, 2, "sched-"):
        start = datetime.now(UTC) + timedelta(seconds=2)
        job = await jobs.schedule_device_method("later", "*", LOCK, start_time=start)
        assert job.status is JobStatus.QUEUED  # as IoT Hub answers a create; then scheduled
        await asyncio.sleep(0.5)
        assert (await jobs.get_job("later")).status is JobStatus.SCHEDULED
        done = await wait(jobs, "later")
        assert done.statistics.succeeded_count == 2
        by_device = await results(jobs, "later")
        assert all(r.start_time_utc is not None and r.start_time_utc >= start for r in by_device.values())


async def test_twin_job_patches_online_and_offline_twins(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    for i in range(4):
        await registry.create_device(f"cold-{i}")
    async with fleet_of(hub, registry, 3, "warm-") as fleet:
        patch = {"tags": {"building": "43"}, "properties": {"desired": {"building": "43", "floor": 3}}}
        await jobs.schedule_twin_update("move", "*", patch)
        done = await wait(jobs, "move")
        assert done.status is JobStatus.COMPLETED
        assert (done.statistics.device_count, done.statistics.succeeded_count) == (7, 7)
        for device_id in [f"cold-{i}" for i in range(4)] + [d.device_id for d in fleet]:
            twin = await registry.get_twin(device_id)
            assert twin.tags == {"building": "43"}
            assert twin.properties.desired["floor"] == 3
        # Connected devices got the desired notification and applied it.
        for device in fleet:
            async with asyncio.timeout(10):
                while device.desired.get("floor") != 3:
                    await asyncio.sleep(0.05)


async def test_cancel_running_job(hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient) -> None:
    await registry.create_device("offline-a")
    await registry.create_device("offline-b")
    slow = Behaviours(profiles={"lockDoor": MethodProfile(latency=1.5)})
    async with fleet_of(hub, registry, 2, "slow-", slow):
        await jobs.schedule_device_method("stop-me", "*", LOCK, max_execution_time_in_seconds=300)
        for _ in range(200):
            if (await jobs.get_job("stop-me")).statistics.running_count == 2:
                break
            await asyncio.sleep(0.05)
        cancelled = await jobs.cancel_job("stop-me")
        assert cancelled.status is JobStatus.CANCELLED
        # Calls in flight finish and are recorded; the offline devices are canceled.
        async with asyncio.timeout(15):
            while True:
                stats = (await jobs.get_job("stop-me")).statistics
                if stats.running_count == 0 and stats.pending_count == 0:
                    break
                await asyncio.sleep(0.1)
        assert (stats.device_count, stats.succeeded_count, stats.canceled_count) == (4, 2, 2)
        assert (await jobs.get_job("stop-me")).status is JobStatus.CANCELLED


async def test_at_most_max_active_jobs_run_at_once(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "data").model_copy(update={"max_active_jobs": 1})
    async with Hub(settings) as hub:
        assert hub.endpoints is not None
        async with (
            AsyncRegistryClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url) as registry,
            AsyncJobClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url) as jobs,
        ):
            slow = Behaviours(profiles={"lockDoor": MethodProfile(latency=1.0)})
            async with fleet_of(hub, registry, 2, "one-", slow):
                await jobs.schedule_device_method("first", "*", LOCK)
                await jobs.schedule_device_method("second", "*", LOCK)
                seen_together = False
                async with asyncio.timeout(30):
                    while True:
                        first, second = await jobs.get_job("first"), await jobs.get_job("second")
                        if first.status is JobStatus.RUNNING and second.status is JobStatus.RUNNING:
                            seen_together = True
                        if first.is_terminal and second.is_terminal:
                            break
                        await asyncio.sleep(0.05)
                assert not seen_together
                assert first.status is JobStatus.COMPLETED
                assert second.status is JobStatus.COMPLETED
                assert first.end_time is not None
                assert second.end_time is not None


async def test_finished_jobs_are_purged_after_the_retention_period(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    async with fleet_of(hub, registry, 1, "purge-"):
        await jobs.schedule_device_method("old", "*", LOCK)
        await wait(jobs, "old")
    assert hub.services is not None
    runner = hub.services.job_runner
    assert await runner.purge(now=datetime.now(UTC) + timedelta(days=29)) == 0
    assert await runner.purge(now=datetime.now(UTC) + timedelta(days=31)) == 1
    assert [j async for j in jobs.query_jobs()] == []


async def test_a_device_busy_with_other_calls_is_called_when_a_slot_frees(tmp_path: Path) -> None:
    """With one call in flight allowed per device, a direct call holds the slot; the job's call
    is throttled, retried, and lands once the direct call has finished."""
    settings = hub_settings(tmp_path / "data").model_copy(update={"max_method_calls_per_device": 1})
    async with Hub(settings) as hub:
        assert hub.endpoints is not None
        cs, url = connection_string(hub), hub.endpoints.http_url
        async with (
            AsyncRegistryClient.from_connection_string(cs, url=url) as registry,
            AsyncJobClient.from_connection_string(cs, url=url) as jobs,
        ):
            slow = Behaviours(profiles={"lockDoor": MethodProfile(latency=1.5)})
            async with fleet_of(hub, registry, 1, "busy-", slow) as fleet:
                [device] = list(fleet)
                direct = asyncio.create_task(registry.invoke_method(device.device_id, "lockDoor", {}, 10))
                await asyncio.sleep(0.3)  # the direct call holds the device's only slot
                await jobs.schedule_device_method("while-busy", "*", LOCK)
                done = await wait(jobs, "while-busy")
                assert (await direct).status == 200
                assert done.status is JobStatus.COMPLETED
                assert (done.statistics.succeeded_count, done.statistics.failed_count) == (1, 0)
                assert fleet.stats().totals.methods_handled == 2
