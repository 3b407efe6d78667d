"""The job client against a real hub: job rollout options round-trip through PUT and GET, the
schedule methods of the SDK, and the ``fleethub-jobs schedule`` commands (run in-process)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from device_sim import Behaviours
from device_sim.behaviours import MethodProfile
from hub.runtime import Hub
from job_client import (
    AbortCriterion,
    ArgumentInvalidError,
    AsyncRegistryClient,
    FailureType,
    Frequency,
    JobStatus,
    JobTemplate,
    MethodParams,
    RateIncreaseCriterion,
    Recurrence,
    RetryOn,
    RetryPolicy,
    Rollout,
    RolloutRamp,
    Schedule,
    ScheduleNotFoundError,
    ScheduleOverlap,
    ScheduleState,
    WeekDay,
)
from job_client import cli as jobs_cli
from job_client.jobs import AsyncJobClient
from tests.e2e.conftest import connection_string, fleet_of

LOCK = MethodParams("lockDoor", {"reason": "test"}, response_timeout_in_seconds=10)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_job_options_round_trip_through_put_and_get(jobs: AsyncJobClient) -> None:
    rollout = Rollout(max_per_minute=600, ramp=RolloutRamp(60, 2.0, 50, RateIncreaseCriterion.SUCCEEDED))
    abort = [AbortCriterion(FailureType.FAILED, 30, 10), AbortCriterion(FailureType.TIMED_OUT, 12.5, 4)]
    retry = RetryPolicy(3, 2, 2.0, (RetryOn.GATEWAY_TIMEOUT, RetryOn.FAILED))
    job_id = unique("opts")
    # Nothing matches the query, so the job finishes at once and only its document matters.
    created = await jobs.schedule_device_method(
        job_id, "deviceId = 'nobody'", LOCK, rollout=rollout, abort=abort, retry=retry, continuous=True
    )
    for job in (created, await jobs.get_job(job_id)):
        assert job.rollout == rollout
        assert job.abort == tuple(abort)
        assert job.retry is not None
        assert (job.retry.max_attempts, job.retry.backoff_seconds, job.retry.backoff_factor) == (3, 2, 2.0)
        assert set(job.retry.retry_on or ()) == {RetryOn.GATEWAY_TIMEOUT, RetryOn.FAILED}
        assert job.continuous is True
        assert job.schedule_id is None

    twin_id = unique("twin-opts")
    await jobs.schedule_twin_update(
        twin_id, "deviceId = 'nobody'", {"tags": {"a": 1}}, rollout=Rollout(max_concurrency=3), abort=abort[0]
    )
    twin = await jobs.get_job(twin_id)
    assert twin.rollout == Rollout(max_concurrency=3)
    assert twin.abort == (abort[0],)
    assert (twin.retry, twin.continuous) == (None, False)

    plain = await jobs.schedule_device_method(unique("plain"), "deviceId = 'nobody'", LOCK)
    assert (plain.rollout, plain.abort, plain.retry, plain.continuous) == (None, (), None, False)
    assert not {"rollout", "abort", "retry", "continuous", "scheduleId"} & set(plain.raw)


async def test_bad_job_options_are_the_hubs_400(jobs: AsyncJobClient) -> None:
    with pytest.raises(ArgumentInvalidError, match="maxPerMinute"):
        await jobs.schedule_device_method(unique("bad"), "*", LOCK, rollout=Rollout(max_per_minute=5000))
    with pytest.raises(ArgumentInvalidError, match="thresholdPercentage"):
        await jobs.schedule_device_method(unique("bad"), "*", LOCK, abort=AbortCriterion("failed", 101, 1))
    with pytest.raises(ArgumentInvalidError, match="unknown field 'x'"):
        await jobs.schedule_twin_update(unique("bad"), "*", {"tags": {"a": 1}}, rollout={"maxPerMinute": 1, "x": 1})


async def test_retries_show_as_attempts_and_an_abort_as_the_failure_reason(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    prefix = unique("rb")
    async with fleet_of(hub, registry, 2, f"{prefix}-", broken):
        query = f"STARTSWITH(deviceId, '{prefix}-')"
        retried = unique("retried")
        await jobs.schedule_device_method(
            retried, query, LOCK, retry=RetryPolicy(3, backoff_seconds=0, retry_on=(RetryOn.FAILED,))
        )
        done = await jobs.wait_for_job(retried, poll_interval=0.1, timeout=60)
        assert done.status is JobStatus.COMPLETED
        assert done.statistics.failed_count == 2
        results = [result async for result in jobs.list_device_results(retried)]
        assert [result.attempts for result in results] == [3, 3]

        aborted = unique("aborted")
        await jobs.schedule_device_method(aborted, query, LOCK, abort=[AbortCriterion(FailureType.ALL, 50, 1)])
        done = await jobs.wait_for_job(aborted, poll_interval=0.1, timeout=60)
        assert done.status is JobStatus.FAILED
        assert done.failure_reason is not None
        assert done.failure_reason.startswith("abort: ")


def _nightly() -> JobTemplate:
    return JobTemplate.device_method(
        "tags.site = 'berlin'", LOCK, max_execution_time_in_seconds=600, rollout=Rollout(max_per_minute=100)
    )


async def test_schedule_methods_of_the_sdk(jobs: AsyncJobClient) -> None:
    schedule_id = unique("nightly")
    weekdays = list(WeekDay)[:5]
    recurrence = Recurrence.every(1, Frequency.WEEK, hours=[2], minutes=[0], week_days=weekdays)
    created = await jobs.create_schedule(schedule_id, _nightly(), recurrence, time_zone="Europe/Berlin")
    assert created.schedule_id == schedule_id
    assert created.state is ScheduleState.ENABLED
    assert created.time_zone == "Europe/Berlin"
    assert created.overlap is ScheduleOverlap.SKIP
    assert created.recurrence is not None
    assert created.recurrence.schedule.week_days == tuple(weekdays)
    assert created.next_run_time is not None
    berlin = created.next_run_time.astimezone(ZoneInfo("Europe/Berlin"))
    assert (berlin.weekday() < 5, berlin.hour, berlin.minute) == (True, 2, 0)
    assert created.run_count == 0
    assert created.job["rollout"] == {"maxPerMinute": 100}

    fetched = await jobs.get_schedule(schedule_id)
    assert fetched.to_json() == created.to_json()

    disabled = await jobs.disable_schedule(schedule_id)
    assert (disabled.state, disabled.enabled) == (ScheduleState.DISABLED, False)

    # Run now works on a disabled schedule; the job records its schedule.
    job = await jobs.run_schedule(schedule_id)
    assert job.schedule_id == schedule_id
    assert job.job_id.startswith(f"{schedule_id}-")
    assert job.rollout == Rollout(max_per_minute=100)
    done = await jobs.wait_for_job(job.job_id, poll_interval=0.1, timeout=60)
    assert done.status is JobStatus.COMPLETED

    runs = await jobs.list_schedule_runs(schedule_id)
    assert [run.job_id for run in runs] == [job.job_id]
    assert runs[0].status is JobStatus.COMPLETED
    assert await jobs.list_schedule_runs(schedule_id, top=1) == runs
    events = await jobs.list_events(runs[0].job_id)
    assert events

    after = await jobs.get_schedule(schedule_id)
    assert after.run_count == 1
    assert after.last_run_job_id == job.job_id
    assert after.last_run_status is JobStatus.COMPLETED

    enabled = await jobs.enable_schedule(schedule_id)
    assert (enabled.state, enabled.enabled) == (ScheduleState.ENABLED, True)

    others = [unique("other") for _ in range(2)]
    for other in others:
        await jobs.create_schedule(other, _nightly(), Recurrence.from_cron("0 0 2 * * *"), enabled=False)
    listed: list[Schedule] = [schedule async for schedule in jobs.list_schedules(page_size=1)]
    assert sorted(s.schedule_id for s in listed) == sorted([schedule_id, *others])

    await jobs.delete_schedule(schedule_id)
    with pytest.raises(ScheduleNotFoundError) as caught:
        await jobs.get_schedule(schedule_id)
    assert (caught.value.status, caught.value.code) == (404, "ScheduleNotFound")
    with pytest.raises(ScheduleNotFoundError):
        await jobs.run_schedule(schedule_id)
    with pytest.raises(ScheduleNotFoundError):
        await jobs.list_schedule_runs(schedule_id)
    # The run's job outlives its schedule.
    assert (await jobs.get_job(job.job_id)).schedule_id == schedule_id


async def test_bad_schedules_are_the_hubs_400(jobs: AsyncJobClient) -> None:
    with pytest.raises(ArgumentInvalidError, match="weekDays"):
        await jobs.create_schedule(
            unique("bad"), _nightly(), Recurrence.every(1, "day", hours=[2], week_days=[WeekDay.MONDAY])
        )
    with pytest.raises(ArgumentInvalidError, match="timeZone"):
        await jobs.create_schedule(unique("bad"), _nightly(), Recurrence.every(1, "day"), time_zone="Mars/Base")
    with pytest.raises(ArgumentInvalidError, match="cron"):
        await jobs.create_schedule(unique("bad"), _nightly(), Recurrence.from_cron("0 0 2 * *"))


async def test_a_seconds_schedule_runs_against_simulated_devices(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    prefix = unique("tick")
    async with fleet_of(hub, registry, 3, f"{prefix}-") as fleet:
        template = JobTemplate.device_method(
            f"STARTSWITH(deviceId, '{prefix}-')", LOCK, max_execution_time_in_seconds=30
        )
        schedule_id = unique("tick")
        await jobs.create_schedule(schedule_id, template, Recurrence.every(1, "second", count=2))
        async with asyncio.timeout(60):
            while True:
                schedule = await jobs.get_schedule(schedule_id)
                runs = await jobs.list_schedule_runs(schedule_id)
                if schedule.state is ScheduleState.COMPLETED and all(run.status is JobStatus.COMPLETED for run in runs):
                    break
                await asyncio.sleep(0.1)
        assert schedule.run_count == 2
        assert schedule.next_run_time is None
        assert len(runs) == 2
        assert runs[0].created_time is not None
        assert runs[1].created_time is not None
        assert runs[0].created_time >= runs[1].created_time  # newest first
        for run in runs:
            assert run.device_job_statistics.succeeded_count == 3
            assert (await jobs.get_job(run.job_id)).schedule_id == schedule_id
        assert fleet.stats().totals.methods_handled == 6


# -- the CLI ------------------------------------------------------------------------------


def _cli(hub: Hub, *args: str) -> Any:
    """``fleethub-jobs -c CS --url URL ARGS``, run in-process; JSON output parsed."""
    assert hub.endpoints is not None
    argv = ["-c", connection_string(hub), "--url", hub.endpoints.http_url, *args]
    # Wide enough that rich tables do not wrap the ids the test looks for.
    result = CliRunner().invoke(jobs_cli.app, argv, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


async def test_schedule_commands_of_the_cli(hub: Hub, tmp_path: Path) -> None:
    schedule_id = unique("cli")
    # Starting tomorrow, so that the only run today is the one the test asks for.
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        seen["create"] = _cli(
            hub,
            "schedule", "create", schedule_id, "--query", "deviceId = 'nobody'", "--method", "lockDoor",
            "--payload", '{"door": "front"}', "--every", "1", "--unit", "minute", "--start", start,
            "--max-per-minute", "60", "--abort", "failed:30:10", "--retry", "2", "--retry-backoff", "5,2", "--json",
        )  # fmt: skip
        seen["list"] = _cli(hub, "schedule", "list", "--json")
        seen["list_table"] = _cli(hub, "schedule", "list")
        seen["get"] = _cli(hub, "schedule", "get", schedule_id, "--json")
        seen["get_table"] = _cli(hub, "schedule", "get", schedule_id)
        seen["run"] = _cli(hub, "schedule", "run", schedule_id, "--json")
        seen["runs"] = _cli(hub, "schedule", "runs", schedule_id, "--top", "5", "--json")
        seen["runs_table"] = _cli(hub, "schedule", "runs", schedule_id)
        seen["disable"] = _cli(hub, "schedule", "disable", schedule_id, "--json")
        seen["enable"] = _cli(hub, "schedule", "enable", schedule_id)
        seen["delete"] = _cli(hub, "schedule", "delete", schedule_id)
        assert hub.endpoints is not None
        missing = CliRunner().invoke(
            jobs_cli.app,
            ["-c", connection_string(hub), "--url", hub.endpoints.http_url, "schedule", "get", schedule_id],
        )
        seen["missing"] = (missing.exit_code, missing.output)
        return seen

    seen = await asyncio.to_thread(session)
    created = seen["create"]
    assert created["scheduleId"] == schedule_id
    assert created["state"] == "enabled"
    assert created["recurrence"]["frequency"] == "minute"
    assert created["job"]["cloudToDeviceMethod"]["payload"] == {"door": "front"}
    assert created["job"]["rollout"] == {"maxPerMinute": 60}
    assert created["job"]["abort"]["criteria"][0]["thresholdPercentage"] == 30
    assert created["job"]["retry"]["maxAttempts"] == 2
    assert (created["job"]["retry"]["backoffSeconds"], created["job"]["retry"]["backoffFactor"]) == (5, 2)
    assert [s["scheduleId"] for s in seen["list"]] == [schedule_id]
    assert schedule_id in seen["list_table"]
    assert "every minute" in seen["list_table"]
    assert seen["get"]["scheduleId"] == schedule_id
    assert "every minute" in seen["get_table"]
    assert seen["run"]["scheduleId"] == schedule_id
    run_id = seen["run"]["jobId"]
    assert run_id in [run["jobId"] for run in seen["runs"]]
    assert run_id in seen["runs_table"]
    assert seen["disable"]["state"] == "disabled"
    assert "enabled" in seen["enable"]
    assert f"deleted schedule {schedule_id}" in seen["delete"]
    code, output = seen["missing"]
    assert code == 1
    assert "404 ScheduleNotFound" in output


async def test_cli_schedule_from_file_and_twin_patch(hub: Hub, tmp_path: Path) -> None:
    from_file, patched = unique("file"), unique("patch")
    body = {
        "job": _nightly().to_json(),
        "recurrence": {"cron": "0 0 2 * * mon-fri"},
        "timeZone": "Europe/Berlin",
        "enabled": False,
        "overlap": "queue",
    }
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(body))

    def session() -> tuple[Any, Any]:
        one = _cli(hub, "schedule", "create", from_file, "--from-file", str(path), "--json")
        two = _cli(
            hub,
            "schedule", "create", patched, "--query", "*", "--twin-patch", '{"tags": {"patched": true}}',
            "--at", "02:00", "--week-days", "mon-fri", "--time-zone", "Europe/Berlin", "--disabled",
            "--overlap", "queue", "--continuous", "--json",
        )  # fmt: skip
        return one, two

    one, two = await asyncio.to_thread(session)
    assert one["state"] == "disabled"
    assert one["overlap"] == "queue"
    assert one["recurrence"]["cron"] == "0 0 2 * * mon-fri"
    assert two["state"] == "disabled"
    assert two["recurrence"]["frequency"] == "week"
    assert two["recurrence"]["schedule"]["weekDays"] == ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    assert two["job"]["updateTwin"]["tags"] == {"patched": True}
    assert two["job"]["continuous"] is True


async def test_cli_job_options_and_attempts_in_results(
    hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient
) -> None:
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    prefix = unique("cli-retry")
    job_id, twin_id = unique("cli-job"), unique("cli-twin")
    async with fleet_of(hub, registry, 2, f"{prefix}-", broken):

        def session() -> tuple[Any, Any, str]:
            created = _cli(
                hub,
                "schedule-method", job_id, "--query", f"STARTSWITH(deviceId, '{prefix}-')", "--method", "lockDoor",
                "--max-per-minute", "600", "--max-concurrency", "2", "--abort", "timedOut:50:2",
                "--retry", "2", "--retry-backoff", "0", "--retry-on", "failed", "--json",
            )  # fmt: skip
            twin = _cli(
                hub,
                "schedule-twin-update", twin_id, "--query", "deviceId = 'nobody'", "--tags", '{"a": 1}',
                "--ramp", "10,1.5,notified:5", "--continuous", "--max-execution-time", "60", "--json",
            )  # fmt: skip
            done = _cli(hub, "watch", job_id, "--interval", "0.1", "--allow-failures", "--json")
            assert done["status"] == "completed"
            return created, twin, _cli(hub, "results", job_id)

        created, twin, table = await asyncio.to_thread(session)
    assert created["rollout"] == {"maxPerMinute": 600, "maxConcurrency": 2}
    assert created["abort"]["criteria"] == [
        {"failureType": "timedOut", "thresholdPercentage": 50, "minNumberOfExecutedDevices": 2}
    ]
    assert created["retry"]["retryOn"] == ["failed"]
    assert "continuous" not in created
    assert twin["continuous"] is True
    assert twin["rollout"] == {
        "baseRatePerMinute": 10,
        "incrementFactor": 1.5,
        "rateIncreaseCriteria": {"numberOfNotifiedDevices": 5},
    }
    assert "attempts" in table
    results = [result async for result in jobs.list_device_results(job_id)]
    assert [result.attempts for result in results] == [2, 2]
