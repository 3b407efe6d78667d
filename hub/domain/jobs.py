"""Jobs: per-device job records (what ``devices.jobs`` queries return)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from hub.domain.json import JsonObject
from hub.domain.twin import isoformat

__all__ = ["DeviceJob", "DeviceJobStatus", "JobType", "device_job_document"]


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
    return doc
