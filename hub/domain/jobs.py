"""Jobs: requests and their validation, job and device statuses with their transitions,
statistics, and per-device job records (what ``devices.jobs`` queries return)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from hub.domain.clock import parse_iso8601
from hub.domain.json import JsonObject, JsonValue, is_integer
from hub.domain.methods import MethodRequest
from hub.domain.rollout import NO_CONTROLS, JobControls
from hub.domain.twin import Section, TwinPatch, isoformat, parse_twin_patch, validate_section
from hub.errors import BadRequestError

__all__ = [
    "DEFAULT_MAX_EXECUTION_SECONDS",
    "JOB_REQUEST_FIELDS",
    "DeviceJob",
    "DeviceJobStatistics",
    "DeviceJobStatus",
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobRequest",
    "JobStatus",
    "JobType",
    "check_device_transition",
    "check_job_transition",
    "device_job_document",
    "parse_start_time",
    "validate_job_id",
    "validate_twin_patch",
]

DEFAULT_MAX_EXECUTION_SECONDS = 3600
_JOB_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

JOB_REQUEST_FIELDS = (
    "jobId",
    "type",
    "queryCondition",
    "cloudToDeviceMethod",
    "updateTwin",
    "startTime",
    "maxExecutionTimeInSeconds",
    # fleethub's rollout control (hub.domain.rollout)
    "rollout",
    "abort",
    "retry",
    "continuous",
)
# timeoutInSeconds: the 2016 preview's name of responseTimeoutInSeconds, used when that is absent.
_METHOD_FIELDS = ("methodName", "payload", "responseTimeoutInSeconds", "connectTimeoutInSeconds", "timeoutInSeconds")


def _refuse_unknown(body: Mapping[str, JsonValue], known: Sequence[str], where: str | None = None) -> None:
    """BadRequestError naming the first field of ``body`` that is not ``known``."""
    unknown = sorted(set(body) - set(known))
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise BadRequestError(f"unknown field {name!r}: {where or 'a job request'} takes {', '.join(known)}")


class JobType(StrEnum):
    DEVICE_METHOD = "scheduleDeviceMethod"
    UPDATE_TWIN = "scheduleUpdateTwin"


class DeviceJobStatus(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (DeviceJobStatus.COMPLETED, DeviceJobStatus.FAILED, DeviceJobStatus.CANCELED)


class JobStatus(StrEnum):
    """IoT Hub's spelling: the job is ``cancelled``, a device's part in it ``canceled``."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


_JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # scheduled -> queued: the start time came while maxActiveJobs were already running.
    JobStatus.QUEUED: frozenset({JobStatus.SCHEDULED, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SCHEDULED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

_DEVICE_TRANSITIONS: dict[DeviceJobStatus, frozenset[DeviceJobStatus]] = {
    DeviceJobStatus.PENDING: frozenset(
        {
            DeviceJobStatus.SCHEDULED,
            DeviceJobStatus.RUNNING,
            DeviceJobStatus.COMPLETED,
            DeviceJobStatus.FAILED,
            DeviceJobStatus.CANCELED,
        }
    ),
    DeviceJobStatus.SCHEDULED: frozenset(
        {
            DeviceJobStatus.PENDING,
            DeviceJobStatus.RUNNING,
            DeviceJobStatus.COMPLETED,
            DeviceJobStatus.FAILED,
            DeviceJobStatus.CANCELED,
        }
    ),
    # A call in flight when the job is cancelled finishes: running never becomes canceled.
    DeviceJobStatus.RUNNING: frozenset({DeviceJobStatus.PENDING, DeviceJobStatus.COMPLETED, DeviceJobStatus.FAILED}),
    DeviceJobStatus.COMPLETED: frozenset(),
    DeviceJobStatus.FAILED: frozenset(),
    DeviceJobStatus.CANCELED: frozenset(),
}


def check_job_transition(current: JobStatus, new: JobStatus) -> JobStatus:
    """The one place job status changes are allowed or refused (ValueError: a bug, not bad input)."""
    if new not in _JOB_TRANSITIONS[current]:
        raise ValueError(f"job status cannot go from {current} to {new}")
    return new


def check_device_transition(current: DeviceJobStatus, new: DeviceJobStatus) -> DeviceJobStatus:
    if new not in _DEVICE_TRANSITIONS[current]:
        raise ValueError(f"device job status cannot go from {current} to {new}")
    return new


@dataclass(frozen=True, slots=True)
class DeviceJobStatistics:
    device_count: int = 0
    pending_count: int = 0
    running_count: int = 0
    succeeded_count: int = 0
    failed_count: int = 0
    canceled_count: int = 0

    @property
    def finished(self) -> bool:
        """Every device is terminal (a job with no devices is finished at once)."""
        return self.pending_count == 0 and self.running_count == 0

    def document(self) -> JsonObject:
        return {
            "deviceCount": self.device_count,
            "failedCount": self.failed_count,
            "succeededCount": self.succeeded_count,
            "runningCount": self.running_count,
            "pendingCount": self.pending_count,
            "canceledCount": self.canceled_count,
        }


def validate_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise BadRequestError(f"jobId {job_id!r} is invalid: use 1-64 ASCII letters, digits or '-'")
    return job_id


def parse_start_time(value: object, now: datetime) -> datetime:
    """ISO-8601 (``Z`` or an offset; a time without a zone is taken as UTC); absent means now."""
    if value is None or value == "":
        return now
    moment = parse_iso8601("startTime", value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def validate_twin_patch(body: object) -> JsonObject:
    """A job's ``updateTwin``: ``tags`` and ``properties.desired`` (or the 2016 preview's
    top-level ``desired``), with ``"etag": "*"`` or none: twin jobs are forced updates. The
    twin's read-only fields are accepted and ignored, an empty ``properties.reported`` too;
    anything else is refused (hub.domain.twin.parse_twin_patch). Returned in the stored shape,
    ``{"tags": ..., "properties": {"desired": ...}}``, with each section checked."""
    patch = parse_twin_patch(body, where="updateTwin", reported="refuse")
    assert isinstance(body, dict)  # parse_twin_patch refused anything else
    etag = body.get("etag")
    if etag is not None and etag != "*":
        raise BadRequestError("updateTwin jobs are forced updates: etag must be '*' or absent")
    if patch.is_empty:
        raise BadRequestError("updateTwin changes nothing: give tags or properties.desired")
    return TwinPatch(
        None if patch.tags is None else validate_section(patch.tags, Section.TAGS),
        None if patch.desired is None else validate_section(patch.desired, Section.DESIRED),
    ).document()


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated job request; exactly one of ``method`` and ``twin_patch`` is set, as ``job_type`` says."""

    job_id: str
    job_type: JobType
    query_condition: str
    start_time: datetime
    max_execution_seconds: int
    method: MethodRequest | None = None
    twin_patch: JsonObject | None = None
    controls: JobControls = NO_CONTROLS

    @classmethod
    def create(cls, job_id: object, body: Mapping[str, JsonValue], now: datetime) -> JobRequest:
        """Validate a ``PUT /jobs/v2/{jobId}`` body field by field; BadRequestError names the field.
        The query condition's syntax is checked by the caller (hub.query), which owns the language."""
        validate_job_id(job_id)
        assert isinstance(job_id, str)
        _refuse_unknown(body, JOB_REQUEST_FIELDS)
        body_id = body.get("jobId")
        if body_id is not None and body_id != job_id:
            raise BadRequestError(f"jobId {body_id!r} in the body differs from {job_id!r} in the URL")
        try:
            job_type = JobType(str(body.get("type")))
        except ValueError:
            raise BadRequestError(
                f"type must be one of {', '.join(t.value for t in JobType)}, got {body.get('type')!r}"
            ) from None
        method_body, patch_body = body.get("cloudToDeviceMethod"), body.get("updateTwin")
        if (method_body is None) == (patch_body is None):
            raise BadRequestError("give exactly one of cloudToDeviceMethod and updateTwin")
        method: MethodRequest | None = None
        patch: JsonObject | None = None
        if job_type is JobType.DEVICE_METHOD:
            if not isinstance(method_body, dict):
                raise BadRequestError("scheduleDeviceMethod needs cloudToDeviceMethod (a JSON object)")
            _refuse_unknown(method_body, _METHOD_FIELDS, "cloudToDeviceMethod")
            response_timeout = method_body.get("responseTimeoutInSeconds")
            method = MethodRequest.create(
                method_body.get("methodName"),
                method_body.get("payload"),
                method_body.get("timeoutInSeconds") if response_timeout is None else response_timeout,
                method_body.get("connectTimeoutInSeconds"),
            )
        else:
            if patch_body is None:
                raise BadRequestError("scheduleUpdateTwin needs updateTwin")
            patch = validate_twin_patch(patch_body)
        condition = body.get("queryCondition")
        if not isinstance(condition, str) or not condition.strip():
            raise BadRequestError("queryCondition must be a WHERE condition or '*'")
        max_seconds = body.get("maxExecutionTimeInSeconds")
        if max_seconds is None:
            max_seconds = DEFAULT_MAX_EXECUTION_SECONDS
        if not is_integer(max_seconds) or max_seconds <= 0:
            raise BadRequestError(f"maxExecutionTimeInSeconds must be a positive integer, got {max_seconds!r}")
        return cls(
            job_id,
            job_type,
            condition.strip(),
            parse_start_time(body.get("startTime"), now),
            max_seconds,
            method,
            patch,
            JobControls.create(body, method_job=job_type is JobType.DEVICE_METHOD),
        )


@dataclass(frozen=True, slots=True)
class DeviceJob:
    """One device's part in one job, keyed by (job_id, device_id)."""

    job_id: str
    device_id: str
    job_type: JobType
    status: DeviceJobStatus
    created_time: datetime
    last_updated_time: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    outcome: JsonObject | None = None
    error: JsonObject | None = None
    attempts: int | None = None  # method calls made, when the job retries (else None)


def _time(moment: datetime | None) -> str | None:
    return isoformat(moment) if moment is not None else None


def device_job_document(job: DeviceJob) -> JsonObject:
    """The ``devices.jobs`` item as IoT Hub returns it (times as ISO-8601 strings)."""
    doc: JsonObject = {
        "deviceId": job.device_id,
        "jobId": job.job_id,
        "jobType": job.job_type.value,
        "status": job.status.value,
        "startTimeUtc": _time(job.start_time),
        "endTimeUtc": _time(job.end_time),
        "createdDateTimeUtc": _time(job.created_time),
        "lastUpdatedDateTimeUtc": _time(job.last_updated_time),
    }
    if job.outcome is not None:
        doc["outcome"] = job.outcome
    if job.error is not None:
        doc["error"] = job.error
    if job.attempts is not None:
        doc["attempts"] = job.attempts
    return doc


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the store keeps it. ``end_time`` is None until the job is terminal;
    ``device_count`` is set when the device set is resolved at start; ``acquired_by`` /
    ``acquired_until`` are the lease of the node running it; ``revision`` versions updates."""

    job_id: str
    job_type: JobType
    status: JobStatus
    query_condition: str
    created_time: datetime
    start_time: datetime
    max_execution_seconds: int
    end_time: datetime | None = None
    method: MethodRequest | None = None
    twin_patch: JsonObject | None = None
    failure_reason: str | None = None
    status_message: str | None = None
    device_count: int = 0
    acquired_by: str | None = None
    acquired_until: datetime | None = None
    revision: int = 1
    controls: JobControls = NO_CONTROLS
    schedule_id: str | None = None  # the schedule whose run this job is

    @property
    def deadline(self) -> datetime:
        return self.start_time + timedelta(seconds=self.max_execution_seconds)

    @classmethod
    def from_request(cls, request: JobRequest, now: datetime, *, schedule_id: str | None = None) -> Job:
        """A new job for ``request``: always ``queued``, as IoT Hub answers its creation; the
        job runner makes one that starts later ``scheduled`` (queued -> scheduled -> queued
        at its start time -> running)."""
        return cls(
            job_id=request.job_id,
            job_type=request.job_type,
            status=JobStatus.QUEUED,
            query_condition=request.query_condition,
            created_time=now,
            start_time=request.start_time,
            max_execution_seconds=request.max_execution_seconds,
            method=request.method,
            twin_patch=request.twin_patch,
            controls=request.controls,
            schedule_id=schedule_id,
        )


class JobEventKind(StrEnum):
    STATUS_CHANGED = "statusChanged"
    DEVICE_FAILED = "deviceFailed"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's history; ``sequence`` is assigned by the store (0 until stored)
    and orders a job's events."""

    job_id: str
    at: datetime
    kind: JobEventKind
    message: str
    device_id: str | None = None
    data: JsonObject | None = None
    sequence: int = 0
