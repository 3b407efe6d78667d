"""Schedules, the pure part: the PUT body's validation field by field, run ids, state changes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.domain.json import JsonValue
from hub.domain.recurrence import IntervalRecurrence
from hub.domain.schedules import (
    MAX_SCHEDULE_ID_LENGTH,
    Overlap,
    Schedule,
    ScheduleRequest,
    ScheduleState,
    run_job_id,
    validate_schedule_id,
)
from hub.engine.jobs.service import JobService
from hub.errors import BadRequestError

NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
TEMPLATE: dict[str, Any] = {
    "type": "scheduleDeviceMethod",
    "queryCondition": "tags.site = 'north'",
    "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 30},
    "maxExecutionTimeInSeconds": 600,
}


def validate(template: Mapping[str, JsonValue]) -> object:
    return JobService.validate("placeholder", template, NOW)


def body(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"job": dict(TEMPLATE), "recurrence": {"frequency": "minute", "interval": 5}}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def create(doc: Mapping[str, Any], schedule_id: object = "nightly") -> ScheduleRequest:
    return ScheduleRequest.create(schedule_id, doc, NOW, validate)


def refused(doc: Mapping[str, Any], says: str, schedule_id: object = "nightly") -> None:
    with pytest.raises(BadRequestError) as caught:
        create(doc, schedule_id)
    assert says in caught.value.message, caught.value.message


def test_a_minimal_body_takes_the_defaults() -> None:
    request = create(body())
    assert request.schedule_id == "nightly"
    assert request.time_zone == ZoneInfo("UTC")
    assert request.enabled is True
    assert request.overlap is Overlap.SKIP
    assert request.job_template == TEMPLATE
    assert isinstance(request.recurrence, IntervalRecurrence)
    assert request.recurrence.start_time == NOW


def test_every_field_is_read() -> None:
    request = create(
        body(
            scheduleId="nightly",
            timeZone="Europe/Berlin",
            enabled=False,
            overlap="queue",
            recurrence={"cron": "0 30 2 * * *"},
        )
    )
    assert request.time_zone == ZoneInfo("Europe/Berlin")
    assert (request.enabled, request.overlap) == (False, Overlap.QUEUE)


def test_the_template_is_normalised_nulls_dropped_and_field_order_fixed() -> None:
    template = {"continuous": None, **TEMPLATE, "abort": None}
    request = create(body(job=template))
    assert request.job_template == TEMPLATE
    assert list(request.job_template) == ["type", "queryCondition", "cloudToDeviceMethod", "maxExecutionTimeInSeconds"]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"scheduleId": "other"}, "scheduleId 'other' in the body differs"),
        ({"job": ...}, "job is required"),
        ({"job": "reboot"}, "job must be a JSON object"),
        ({"job": {**TEMPLATE, "jobId": "x"}}, "job.jobId is not allowed"),
        ({"job": {**TEMPLATE, "startTime": "2026-01-01T00:00:00Z"}}, "job.startTime is not allowed"),
        ({"job": {**TEMPLATE, "colour": "red"}}, "job.colour is not a job request field"),
        ({"job": {**TEMPLATE, "type": "reboot"}}, "job: type must be one of"),
        ({"job": {**TEMPLATE, "queryCondition": "SELECT"}}, "job: "),
        ({"job": {**TEMPLATE, "maxExecutionTimeInSeconds": 0}}, "job: maxExecutionTimeInSeconds"),
        ({"recurrence": ...}, "recurrence is required"),
        ({"recurrence": [1]}, "recurrence must be a JSON object"),
        ({"recurrence": {"frequency": "fortnight"}}, "recurrence.frequency must be one of"),
        ({"recurrence": {"frequency": "minute", "interval": 0}}, "recurrence.interval"),
        ({"recurrence": {"cron": "* * *"}}, "recurrence.cron"),
        ({"timeZone": "Mars/Olympus"}, "timeZone 'Mars/Olympus' is not a known"),
        ({"timeZone": 5}, "timeZone must be an IANA time zone name"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"overlap": "wait"}, "overlap must be one of skip, queue"),
        ({"overlap": 1}, "overlap must be one of skip, queue"),
        ({"colour": "red"}, "colour is not a schedule field"),
    ],
)
def test_each_bad_field_is_refused_by_name(changes: dict[str, Any], says: str) -> None:
    refused(body(**changes), says)


@pytest.mark.parametrize("schedule_id", ["", "a" * (MAX_SCHEDULE_ID_LENGTH + 1), "has space", "ü", 7, None])
def test_bad_schedule_ids_are_refused(schedule_id: object) -> None:
    refused(body(), "scheduleId", schedule_id)


def test_the_longest_schedule_id_leaves_room_for_the_run_time() -> None:
    schedule_id = validate_schedule_id("a" * MAX_SCHEDULE_ID_LENGTH)
    job_id = run_job_id(schedule_id, NOW)
    assert len(job_id) == 64
    JobService.validate(job_id, TEMPLATE, NOW)  # a valid job id


def test_run_ids_are_utc_to_the_second() -> None:
    assert run_job_id("nightly", NOW) == "nightly-20260301T120000Z"
    berlin = datetime(2026, 3, 1, 13, 0, 0, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert run_job_id("nightly", berlin) == "nightly-20260301T120000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        run_job_id("nightly", datetime(2026, 3, 1))


def schedule(**changes: Any) -> Schedule:
    return Schedule.from_request(create(body(**changes)), NOW)


def test_a_new_schedule_runs_first_at_its_start_time() -> None:
    fresh = schedule()
    assert fresh.state is ScheduleState.ENABLED
    assert fresh.next_run_time == NOW  # startTime defaults to now, which counts
    assert (fresh.run_count, fresh.created_time, fresh.updated_time) == (0, NOW, NOW)


def test_a_disabled_schedule_has_no_next_run() -> None:
    off = schedule(enabled=False)
    assert (off.state, off.next_run_time) == (ScheduleState.DISABLED, None)


def test_count_completes_the_schedule() -> None:
    once = schedule(recurrence={"frequency": "minute", "count": 1})
    ran = once.with_run(NOW, run_job_id("nightly", NOW))
    assert (ran.state, ran.next_run_time, ran.run_count) == (ScheduleState.COMPLETED, None, 1)
    assert ran.last_run_job_id == "nightly-20260301T120000Z"


def test_replacing_keeps_the_history_and_clears_a_fault() -> None:
    ran = schedule().with_run(NOW, "nightly-20260301T120000Z").faulted("template broke")
    later = NOW + timedelta(hours=1)
    replaced = Schedule.from_request(ScheduleRequest.create("nightly", body(), later, validate), later, ran)
    assert replaced.state is ScheduleState.ENABLED
    assert replaced.fault_reason is None
    assert (replaced.run_count, replaced.last_run_job_id, replaced.created_time) == (1, ran.last_run_job_id, NOW)
    assert replaced.next_run_time == later


def test_an_earlier_run_does_not_become_the_last_one() -> None:
    ran = schedule().with_run(NOW, "late").with_run(NOW - timedelta(minutes=5), "early")
    assert (ran.run_count, ran.last_run_job_id) == (2, "late")
