"""The SDK's job options and schedule models: the JSON they write is what the hub's own parsers
accept and give back, and the JSON they read (the hub's documents) becomes typed values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hub import errors as hub_errors
from hub.domain.recurrence import parse_recurrence, parse_time_zone, recurrence_document
from hub.domain.rollout import JobControls, parse_abort, parse_retry, parse_rollout
from job_client import (
    AbortCriterion,
    DeviceJobResult,
    FailureType,
    Frequency,
    Job,
    JobStatus,
    JobTemplate,
    MethodParams,
    MonthlyOccurrence,
    NotFoundError,
    RateIncreaseCriterion,
    Recurrence,
    RecurrenceSchedule,
    RetryOn,
    RetryPolicy,
    Rollout,
    RolloutRamp,
    Schedule,
    ScheduleNotFoundError,
    ScheduleOverlap,
    ScheduleRun,
    ScheduleState,
    WeekDay,
)
from job_client.errors import error_from_response
from job_client.jobs import schedule_body
from job_client.rollout import option_json

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "rollout",
    [
        Rollout(max_per_minute=120),
        Rollout(max_concurrency=5),
        Rollout(ramp=RolloutRamp(50, 2.0, 1000)),
        Rollout(max_per_minute=400, ramp=RolloutRamp(10, 1.5, 20, RateIncreaseCriterion.SUCCEEDED), max_concurrency=9),
    ],
)
def test_rollout_json_is_what_the_hub_parses_and_returns(rollout: Rollout) -> None:
    doc = rollout.to_json()
    parsed = parse_rollout(doc)
    assert parsed is not None
    assert parsed.document() == doc
    assert Rollout.from_json(parsed.document()) == rollout


def test_a_rollout_must_set_something() -> None:
    with pytest.raises(ValueError, match="max_per_minute, ramp or max_concurrency"):
        Rollout()
    assert Rollout.from_json({"unknown": 1}) is None


def test_abort_and_retry_json_round_trip_through_the_hub_parsers() -> None:
    criteria = [AbortCriterion(FailureType.FAILED, 30, 10), AbortCriterion(FailureType.TIMED_OUT, 12.5, 4)]
    options = option_json(abort=criteria, retry=RetryPolicy(3, 5, 2.0, (RetryOn.GATEWAY_TIMEOUT, RetryOn.FAILED)))
    abort = parse_abort(options["abort"])
    retry = parse_retry(options["retry"])
    assert abort is not None
    assert retry is not None
    assert abort.document() == {"criteria": [c.to_json() for c in criteria]}
    assert retry.max_attempts == 3
    assert retry.backoff_seconds == 5
    assert retry.backoff_factor == 2.0
    assert retry.retry_on == {RetryOn.GATEWAY_TIMEOUT, RetryOn.FAILED}
    # The hub fills in the defaults a policy left out; the SDK reads them back.
    defaults = parse_retry(RetryPolicy(2).to_json())
    assert defaults is not None
    back = RetryPolicy.from_json(defaults.document())
    assert back.max_attempts == 2
    assert back.backoff_seconds == 10
    assert set(back.retry_on or ()) == {RetryOn.DEVICE_NOT_ONLINE, RetryOn.GATEWAY_TIMEOUT}


def test_option_json_sets_only_what_is_given() -> None:
    assert option_json() == {}
    assert option_json(continuous=False) == {}
    single = option_json(abort=AbortCriterion("all", 50, 2), continuous=True)
    assert single == {
        "abort": {"criteria": [{"failureType": "all", "thresholdPercentage": 50, "minNumberOfExecutedDevices": 2}]},
        "continuous": True,
    }
    raw = option_json(rollout={"maxPerMinute": 7}, abort={"criteria": []}, retry={"maxAttempts": 2})
    assert raw == {"rollout": {"maxPerMinute": 7}, "abort": {"criteria": []}, "retry": {"maxAttempts": 2}}


def test_job_reads_the_rollout_controls_and_schedule() -> None:
    doc: dict[str, Any] = {
        "jobId": "nightly-20260302T020000Z",
        "type": "scheduleDeviceMethod",
        "status": "failed",
        "failureReason": "abort: 35.0% of 40 executed devices failed (threshold 30%, failureType failed)",
        "rollout": {
            "baseRatePerMinute": 50,
            "incrementFactor": 2.0,
            "rateIncreaseCriteria": {"numberOfNotifiedDevices": 100},
        },
        "abort": {"criteria": [{"failureType": "failed", "thresholdPercentage": 30, "minNumberOfExecutedDevices": 10}]},
        "retry": {"maxAttempts": 3, "backoffSeconds": 1, "backoffFactor": 1.0, "retryOn": ["GatewayTimeout", "later"]},
        "continuous": True,
        "scheduleId": "nightly",
    }
    job = Job.from_json(doc)
    assert job.rollout == Rollout(ramp=RolloutRamp(50, 2.0, 100))
    assert job.abort == (AbortCriterion(FailureType.FAILED, 30, 10),)
    assert job.retry == RetryPolicy(3, 1, 1.0, (RetryOn.GATEWAY_TIMEOUT, "later"))
    assert job.continuous is True
    assert job.schedule_id == "nightly"
    assert job.status is JobStatus.FAILED
    assert job.failure_reason is not None
    assert job.failure_reason.startswith("abort: ")
    plain = Job.from_json({"jobId": "j", "type": "scheduleUpdateTwin", "status": "completed", "abort": "junk"})
    assert (plain.rollout, plain.abort, plain.retry, plain.continuous, plain.schedule_id) == (
        None,
        (),
        None,
        False,
        None,
    )


def test_device_job_result_reads_attempts() -> None:
    doc = {"deviceId": "d1", "jobId": "j", "jobType": "scheduleDeviceMethod", "status": "completed", "attempts": 3}
    assert DeviceJobResult.from_json(doc).attempts == 3
    assert DeviceJobResult.from_json({**doc, "attempts": "3"}).attempts is None
    assert DeviceJobResult.from_json({k: v for k, v in doc.items() if k != "attempts"}).attempts is None


def _hub_recurrence(recurrence: Recurrence, zone: str = "UTC") -> dict[str, Any]:
    return dict(recurrence_document(parse_recurrence(recurrence.to_json(), parse_time_zone(zone), NOW)))


def test_recurrence_every_builds_azure_scheduler_json_the_hub_accepts() -> None:
    nightly = Recurrence.every(1, "week", hours=[2], minutes=[0], week_days=["mon", WeekDay.FRIDAY, "Wednesday"])
    assert nightly.frequency is Frequency.WEEK
    assert nightly.to_json() == {
        "frequency": "week",
        "interval": 1,
        "schedule": {"minutes": [0], "hours": [2], "weekDays": ["mon", "Friday", "Wednesday"]},
    }
    # "mon" is no hub spelling: only whole day names are; the builder passes it through, the hub refuses it.
    with pytest.raises(Exception, match="weekDays"):
        _hub_recurrence(nightly)
    weekdays = Recurrence.every(1, Frequency.WEEK, hours=[2], minutes=[0], week_days=list(WeekDay)[:5])
    assert _hub_recurrence(weekdays, "Europe/Berlin")["schedule"] == {
        "minutes": [0],
        "hours": [2],
        "weekDays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
    }
    monthly = Recurrence.every(
        2,
        "month",
        month_days=[1, -1],
        monthly_occurrences=[MonthlyOccurrence("friday", -1), MonthlyOccurrence(WeekDay.MONDAY)],
        start_time=datetime(2026, 1, 1, 9, 30),
        end_time=datetime(2027, 1, 1, tzinfo=UTC),
        count=5,
    )
    doc = monthly.to_json()
    assert doc["startTime"] == "2026-01-01T09:30:00"  # naive: wall-clock time in the schedule's zone
    assert doc["endTime"] == "2027-01-01T00:00:00Z"
    assert doc["schedule"]["monthlyOccurrences"] == [{"day": "Friday", "occurrence": -1}, {"day": "Monday"}]
    hub_doc = _hub_recurrence(monthly, "Europe/Berlin")
    assert hub_doc["startTime"].startswith("2026-01-01T08:30:00")  # 09:30 in Berlin is 08:30 UTC in winter
    assert hub_doc["count"] == 5


def test_recurrence_from_cron_and_back_from_the_hub_document() -> None:
    cron = Recurrence.from_cron("0 0 2 * * mon-fri", count=3)
    assert cron.to_json() == {"cron": "0 0 2 * * mon-fri", "count": 3}
    back = Recurrence.from_json(_hub_recurrence(cron))
    assert back.cron == "0 0 2 * * mon-fri"
    assert back.count == 3
    assert back.start_time == NOW
    assert back.describe() == "cron 0 0 2 * * mon-fri, 3 times"
    seconds = Recurrence.from_json(_hub_recurrence(Recurrence.every(10, "second")))
    assert (seconds.frequency, seconds.interval, seconds.schedule) == (Frequency.SECOND, 10, RecurrenceSchedule())


def test_recurrence_needs_exactly_one_form() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Recurrence()
    with pytest.raises(ValueError, match="exactly one"):
        Recurrence(frequency=Frequency.DAY, cron="* * * * * *")
    with pytest.raises(ValueError, match="fortnight"):
        Recurrence.every(1, "fortnight")


def test_describe_reads_like_the_option_it_came_from() -> None:
    weekly = Recurrence.every(1, "week", hours=[2, 14], minutes=[0, 30], week_days=[WeekDay.MONDAY])
    assert weekly.describe() == "every week at 02:00,02:30,14:00,14:30 on Mon"
    hourly = Recurrence.every(3, "hour", minutes=[15], end_time="2027-01-01T00:00:00Z")
    assert hourly.describe() == "every 3 hours at minute 15, until 2027-01-01T00:00:00Z"
    monthly = Recurrence.every(1, "month", month_days=[-1], monthly_occurrences=[MonthlyOccurrence("Friday", 1)])
    assert monthly.describe() == "every month on day -1 on Fri#1"


def test_job_templates_are_job_requests_without_id_and_start() -> None:
    method = JobTemplate.device_method(
        "tags.site = 'berlin'",
        MethodParams("lockDoor", {"door": "front"}, 10),
        max_execution_time_in_seconds=600,
        rollout=Rollout(max_per_minute=60),
        abort=[AbortCriterion("failed", 30, 10)],
        retry=RetryPolicy(2),
        continuous=True,
    )
    doc = method.to_json()
    assert "jobId" not in doc
    assert "startTime" not in doc
    assert doc["type"] == "scheduleDeviceMethod"
    assert doc["cloudToDeviceMethod"]["methodName"] == "lockDoor"
    assert doc["maxExecutionTimeInSeconds"] == 600
    controls = JobControls.create(doc, method_job=True)
    assert controls.document() == {
        "rollout": {"maxPerMinute": 60},
        "abort": {"criteria": [{"failureType": "failed", "thresholdPercentage": 30, "minNumberOfExecutedDevices": 10}]},
        "retry": {
            "maxAttempts": 2,
            "backoffSeconds": 10,
            "backoffFactor": 1.0,
            "retryOn": ["DeviceNotOnline", "GatewayTimeout"],
        },
        "continuous": True,
    }
    twin = JobTemplate.twin_update("*", {"tags": {"a": 1}}, continuous=True).to_json()
    assert twin["updateTwin"] == {"tags": {"a": 1}, "etag": "*"}
    assert twin["continuous"] is True
    with pytest.raises(ValueError, match="methodName"):
        JobTemplate.device_method("*", {"payload": 1})


def test_schedule_body_leaves_defaults_to_the_hub() -> None:
    template = JobTemplate.twin_update("*", {"tags": {"a": 1}})
    body = schedule_body(template, Recurrence.every(1, "minute"))
    assert body == {"job": template.to_json(), "recurrence": {"frequency": "minute", "interval": 1}, "enabled": True}
    full = schedule_body(
        {"type": "x"}, {"cron": "* * * * * *"}, time_zone="Europe/Berlin", enabled=False, overlap=ScheduleOverlap.QUEUE
    )
    assert full == {
        "job": {"type": "x"},
        "recurrence": {"cron": "* * * * * *"},
        "enabled": False,
        "timeZone": "Europe/Berlin",
        "overlap": "queue",
    }


def test_schedule_and_run_documents_parse_leniently() -> None:
    doc = {
        "scheduleId": "nightly",
        "job": {"type": "scheduleDeviceMethod", "queryCondition": "*"},
        "recurrence": {
            "frequency": "day",
            "interval": 1,
            "schedule": {"hours": [2]},
            "startTime": "2026-01-01T00:00:00Z",
        },
        "timeZone": "Europe/Berlin",
        "enabled": False,
        "overlap": "queue",
        "state": "disabled",
        "nextRunTime": None,
        "lastRunTime": "2026-03-02T01:00:00Z",
        "lastRunJobId": "nightly-20260302T010000Z",
        "lastRunStatus": "completed",
        "runCount": 4,
        "faultReason": None,
        "createdTime": "2026-01-01T00:00:00Z",
        "updatedTime": "2026-03-02T01:00:00Z",
    }
    schedule = Schedule.from_json(doc)
    assert schedule.state is ScheduleState.DISABLED
    assert schedule.overlap is ScheduleOverlap.QUEUE
    assert schedule.enabled is False
    assert schedule.recurrence is not None
    assert schedule.recurrence.schedule.hours == (2,)
    assert schedule.next_run_time is None
    assert schedule.last_run_time == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert schedule.last_run_status is JobStatus.COMPLETED
    assert schedule.run_count == 4
    assert schedule.to_json() == doc
    newer = Schedule.from_json({"scheduleId": "s", "state": "paused", "recurrence": {"every": "tuesday"}})
    assert newer.state == "paused"
    assert newer.recurrence is None
    assert newer.time_zone == "UTC"
    assert newer.overlap is ScheduleOverlap.SKIP
    run = ScheduleRun.from_json(
        {
            "jobId": "nightly-20260302T010000Z",
            "status": "running",
            "createdTime": "2026-03-02T01:00:00Z",
            "endTime": None,
            "deviceJobStatistics": {"deviceCount": 3, "succeededCount": 1},
        }
    )
    assert run.status is JobStatus.RUNNING
    assert run.end_time is None
    assert run.device_job_statistics.device_count == 3
    assert run.device_job_statistics.succeeded_count == 1


def test_schedule_not_found_is_its_own_error() -> None:
    body = b'{"Message": "ErrorCode:ScheduleNotFound;schedule nightly not found", "ExceptionMessage": ""}'
    error = error_from_response(404, {"iothub-errorcode": "ScheduleNotFound"}, body)
    assert isinstance(error, ScheduleNotFoundError)
    assert isinstance(error, NotFoundError)
    assert (error.status, error.code, error.message) == (404, "ScheduleNotFound", "schedule nightly not found")
    assert ScheduleNotFoundError.default_code == hub_errors.ScheduleNotFoundError.code
