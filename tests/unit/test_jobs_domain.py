"""Job requests, statuses and statistics: the pure rules the jobs engine builds on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.domain.jobs import (
    DEFAULT_MAX_EXECUTION_SECONDS,
    DeviceJobStatistics,
    DeviceJobStatus,
    JobRequest,
    JobStatus,
    JobType,
    check_device_transition,
    check_job_transition,
    parse_start_time,
    validate_job_id,
    validate_twin_patch,
)
from hub.errors import BadRequestError, PayloadTooLargeError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def method_job(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": "lock-1",
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": {"door": "front"}, "responseTimeoutInSeconds": 30},
        "queryCondition": "tags.building = '43'",
        "maxExecutionTimeInSeconds": 600,
    }
    body.update(changes)
    return body


def twin_job(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": "twin-1",
        "type": "scheduleUpdateTwin",
        "updateTwin": {"etag": "*", "properties": {"desired": {"building": "43", "floor": 3}}},
        "queryCondition": "*",
    }
    body.update(changes)
    return body


def test_method_job_request() -> None:
    request = JobRequest.create("lock-1", method_job(), NOW)
    assert request.job_type is JobType.DEVICE_METHOD
    assert request.method is not None
    assert request.method.method_name == "lockDoor"
    assert request.method.payload == {"door": "front"}
    assert request.twin_patch is None
    assert request.start_time == NOW
    assert request.max_execution_seconds == 600


def test_twin_job_request_defaults() -> None:
    request = JobRequest.create("twin-1", twin_job(), NOW)
    assert request.job_type is JobType.UPDATE_TWIN
    assert request.twin_patch == {"properties": {"desired": {"building": "43", "floor": 3}}}
    assert request.query_condition == "*"
    assert request.max_execution_seconds == DEFAULT_MAX_EXECUTION_SECONDS


@pytest.mark.parametrize("job_id", ["", "a" * 65, "has space", "under_score", "dot.ted", "ünï", 7, None])
def test_bad_job_ids(job_id: object) -> None:
    with pytest.raises(BadRequestError, match="jobId"):
        validate_job_id(job_id)


@pytest.mark.parametrize("job_id", ["a", "A-1", "a" * 64, "0-0-0"])
def test_good_job_ids(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (method_job(type="reboot"), "type must be one of"),
        (method_job(type=None), "type must be one of"),
        (method_job(updateTwin={"tags": {"a": 1}}), "exactly one"),
        (method_job(cloudToDeviceMethod=None), "exactly one"),
        (method_job(cloudToDeviceMethod=None, updateTwin={"tags": {"a": 1}}), "needs cloudToDeviceMethod"),
        (twin_job(updateTwin=None, cloudToDeviceMethod={"methodName": "m"}), "needs updateTwin"),
        (method_job(cloudToDeviceMethod={"methodName": "bad/name"}), "methodName"),
        (method_job(cloudToDeviceMethod={"methodName": "m", "responseTimeoutInSeconds": 3}), "responseTimeout"),
        (method_job(cloudToDeviceMethod={"methodName": "m", "connectTimeoutInSeconds": 301}), "connectTimeout"),
        (method_job(maxExecutionTimeInSeconds=0), "maxExecutionTimeInSeconds"),
        (method_job(maxExecutionTimeInSeconds=-5), "maxExecutionTimeInSeconds"),
        (method_job(maxExecutionTimeInSeconds="60"), "maxExecutionTimeInSeconds"),
        (method_job(maxExecutionTimeInSeconds=True), "maxExecutionTimeInSeconds"),
        (method_job(startTime="tomorrow"), "startTime"),
        (method_job(startTime=12345), "startTime"),
        (method_job(queryCondition=""), "queryCondition"),
        (method_job(queryCondition=None), "queryCondition"),
        (method_job(jobId="other"), "differs"),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason):
        JobRequest.create(body["jobId"] if body.get("jobId") != "other" else "lock-1", body, NOW)


def test_method_payload_limit() -> None:
    big = method_job(cloudToDeviceMethod={"methodName": "m", "payload": "x" * (128 * 1024)})
    with pytest.raises(PayloadTooLargeError):
        JobRequest.create("lock-1", big, NOW)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"properties": {"reported": {"a": 1}}}, "properties.reported"),
        ({"status": "disabled"}, "changes nothing"),  # read-only, so ignored: nothing is left
        ({"tags": {"a": 1}, "floor": 5}, "unknown field 'floor'"),
        ({"properties": {"desired": {"a": 1}, "other": {}}}, "unknown field 'other'"),
        ({"desired": {"a": 1}, "properties": {"desired": {"a": 2}}}, "both desired and properties.desired"),
        ({"desired": "43"}, "updateTwin.desired must be a JSON object"),
        ({"etag": "AAAAAAAAAAE="}, "etag must be"),
        ({}, "changes nothing"),
        ({"tags": {"a.b": 1}}, "may not contain"),
        ({"properties": {"desired": {"$x": 1}}}, "may not contain"),
        ("not an object", "JSON object"),
    ],
)
def test_twin_patch_rules(patch: object, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason):
        validate_twin_patch(patch)


def test_twin_patch_accepts_what_sdks_send() -> None:
    # azure-iot-hub's Twin model serialises unset fields as null; Node sends deviceId and etag '*'.
    patch = {
        "deviceId": None,
        "etag": "*",
        "tags": {"site": "b43"},
        "properties": {"desired": {"floor": 3}, "reported": None},
    }
    assert validate_twin_patch(patch) == {"tags": {"site": "b43"}, "properties": {"desired": {"floor": 3}}}


def test_twin_patch_takes_an_empty_reported_section() -> None:
    # azure-iothub's own end-to-end test schedules exactly this body.
    patch = {"etag": "*", "tags": {"state": "WA"}, "properties": {"desired": {}, "reported": {}}}
    assert validate_twin_patch(patch) == {"tags": {"state": "WA"}, "properties": {"desired": {}}}


def test_twin_patch_takes_the_2016_preview_shape() -> None:
    # The IoT Hub jobs tutorial as first published: desired at the top level.
    patch = {"etag": "*", "desired": {"building": "43", "floor": 3}}
    assert validate_twin_patch(patch) == {"properties": {"desired": {"building": "43", "floor": 3}}}


def test_twin_patch_ignores_the_read_only_fields_of_a_whole_twin() -> None:
    twin = {
        "deviceId": "d1",
        "etag": "*",
        "deviceEtag": "AAAAAAAAAAE=",
        "version": 4,
        "status": "enabled",
        "connectionState": "Connected",
        "lastActivityTime": "2026-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
        "capabilities": {"iotEdge": False},
        "tags": {"site": "b43"},
    }
    assert validate_twin_patch(twin) == {"tags": {"site": "b43"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T08:00:00Z", datetime(2026, 11, 23, 8, tzinfo=UTC)),
        ("2026-11-23T08:00:00.123Z", datetime(2026, 11, 23, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-23T10:00:00+02:00", datetime(2026, 11, 23, 8, tzinfo=UTC)),
        ("2026-11-23T08:00:00", datetime(2026, 11, 23, 8, tzinfo=UTC)),
        (None, NOW),
    ],
)
def test_start_times(text: str | None, expected: datetime) -> None:
    assert parse_start_time(text, NOW) == expected


def test_start_time_in_the_future_is_kept() -> None:
    later = (NOW + timedelta(hours=1)).isoformat()
    assert JobRequest.create("lock-1", method_job(startTime=later), NOW).start_time == NOW + timedelta(hours=1)


def test_job_transitions() -> None:
    assert check_job_transition(JobStatus.QUEUED, JobStatus.SCHEDULED) is JobStatus.SCHEDULED
    assert check_job_transition(JobStatus.SCHEDULED, JobStatus.RUNNING) is JobStatus.RUNNING
    assert check_job_transition(JobStatus.RUNNING, JobStatus.COMPLETED) is JobStatus.COMPLETED
    for terminal in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert terminal.is_terminal
        for target in JobStatus:
            with pytest.raises(ValueError, match="cannot go"):
                check_job_transition(terminal, target)
    with pytest.raises(ValueError, match="cannot go"):
        check_job_transition(JobStatus.RUNNING, JobStatus.QUEUED)


def test_device_transitions() -> None:
    assert check_device_transition(DeviceJobStatus.PENDING, DeviceJobStatus.RUNNING) is DeviceJobStatus.RUNNING
    assert check_device_transition(DeviceJobStatus.PENDING, DeviceJobStatus.CANCELED) is DeviceJobStatus.CANCELED
    with pytest.raises(ValueError, match="cannot go"):
        check_device_transition(DeviceJobStatus.RUNNING, DeviceJobStatus.CANCELED)  # in-flight calls finish
    with pytest.raises(ValueError, match="cannot go"):
        check_device_transition(DeviceJobStatus.FAILED, DeviceJobStatus.COMPLETED)


def test_statistics_document_and_finished() -> None:
    stats = DeviceJobStatistics(device_count=5, pending_count=1, running_count=1, succeeded_count=2, failed_count=1)
    assert stats.document() == {
        "deviceCount": 5,
        "failedCount": 1,
        "succeededCount": 2,
        "runningCount": 1,
        "pendingCount": 1,
        "canceledCount": 0,
    }
    assert not stats.finished
    assert DeviceJobStatistics(device_count=2, succeeded_count=2).finished
    assert DeviceJobStatistics().finished
