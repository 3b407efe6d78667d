"""Mappers between table rows and hub.domain values; the only place that knows both."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import RowMapping

from hub.domain.devices import AuthKind, ConnectionState, Device, DeviceAuth, DeviceStatus, SymmetricKeys, etag_of
from hub.domain.jobs import DeviceJob, DeviceJobStatus, Job, JobEvent, JobEventKind, JobStatus, JobType
from hub.domain.json import JsonObject
from hub.domain.methods import MethodRequest
from hub.domain.policies import AccessPolicy, Right
from hub.domain.recurrence import parse_recurrence, recurrence_document
from hub.domain.rollout import JobControls
from hub.domain.schedules import Overlap, Schedule, ScheduleState
from hub.domain.twin import PropertySet, Twin

__all__ = [
    "device_from_row",
    "device_identity_values",
    "device_job_from_row",
    "device_job_values",
    "job_event_from_row",
    "job_event_values",
    "job_from_row",
    "job_values",
    "new_device_values",
    "policy_from_row",
    "policy_values",
    "schedule_from_row",
    "schedule_values",
    "twin_from_row",
    "twin_values",
]


def _auth_from_row(row: RowMapping) -> DeviceAuth:
    return DeviceAuth(AuthKind(row["auth_type"]), row["primary_thumbprint"], row["secondary_thumbprint"])


def device_from_row(row: RowMapping) -> Device:
    auth = _auth_from_row(row)
    return Device(
        device_id=row["device_id"],
        generation_id=row["generation_id"],
        keys=SymmetricKeys(row["primary_key"], row["secondary_key"]) if auth.uses_keys else None,
        auth=auth,
        status=DeviceStatus(row["status"]),
        status_reason=row["status_reason"],
        status_updated_time=row["status_updated_time"],
        connection_state=ConnectionState(row["connection_state"]),
        connection_state_updated_time=row["connection_state_updated_time"],
        last_activity_time=row["last_activity_time"],
        etag_revision=row["etag_revision"],
        created_time=row["created_time"],
    )


def device_identity_values(device: Device) -> dict[str, Any]:
    """The columns ``update_device`` may change."""
    keys = device.keys
    return {
        # Certificate devices have no keys; the columns are NOT NULL, so they hold ''.
        "primary_key": keys.primary if keys is not None else "",
        "secondary_key": keys.secondary if keys is not None else "",
        "auth_type": device.auth.kind.value,
        "primary_thumbprint": device.auth.primary_thumbprint,
        "secondary_thumbprint": device.auth.secondary_thumbprint,
        "status": device.status.value,
        "status_reason": device.status_reason,
        "status_updated_time": device.status_updated_time,
    }


def twin_values(twin: Twin) -> dict[str, Any]:
    """The columns ``save_twin`` writes."""
    return {
        "tags": twin.tags,
        "desired": twin.desired.properties,
        "desired_metadata": twin.desired.metadata,
        "desired_version": twin.desired.version,
        "reported": twin.reported.properties,
        "reported_metadata": twin.reported.metadata,
        "reported_version": twin.reported.version,
        "twin_version": twin.version,
        "twin_revision": twin.revision,
        "etag": etag_of(twin.revision),
    }


def new_device_values(device: Device) -> dict[str, Any]:
    """A whole row: the device with an empty twin."""
    values = device_identity_values(device)
    values.update(
        device_id=device.device_id,
        generation_id=device.generation_id,
        connection_state=device.connection_state.value,
        connection_state_updated_time=device.connection_state_updated_time,
        last_activity_time=device.last_activity_time,
        etag_revision=device.etag_revision,
        created_time=device.created_time,
    )
    values.update(twin_values(Twin(device_id=device.device_id)))
    return values


def _json_object(value: Any) -> JsonObject:
    # A JSON column holding anything but an object means the row was written outside the store.
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object in a JSON column, got {type(value).__name__}")
    return value


def twin_from_row(row: RowMapping) -> Twin:
    return Twin(
        device_id=row["device_id"],
        tags=_json_object(row["tags"]),
        desired=PropertySet(
            _json_object(row["desired"]), _json_object(row["desired_metadata"]), row["desired_version"]
        ),
        reported=PropertySet(
            _json_object(row["reported"]), _json_object(row["reported_metadata"]), row["reported_version"]
        ),
        version=row["twin_version"],
        revision=row["twin_revision"],
        status=DeviceStatus(row["status"]),
        status_reason=row["status_reason"],
        status_updated_time=row["status_updated_time"],
        connection_state=ConnectionState(row["connection_state"]),
        last_activity_time=row["last_activity_time"],
        device_revision=row["etag_revision"],
        auth=_auth_from_row(row),
    )


def device_job_values(job: DeviceJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "device_id": job.device_id,
        "job_type": job.job_type.value,
        "status": job.status.value,
        "created_time": job.created_time,
        "last_updated_time": job.last_updated_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "outcome": job.outcome,
        "error": job.error,
        "attempts": job.attempts,
    }


def device_job_from_row(row: RowMapping) -> DeviceJob:
    outcome, error = row["outcome"], row["error"]
    return DeviceJob(
        job_id=row["job_id"],
        device_id=row["device_id"],
        job_type=JobType(row["job_type"]),
        status=DeviceJobStatus(row["status"]),
        created_time=row["created_time"],
        last_updated_time=row["last_updated_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        outcome=None if outcome is None else _json_object(outcome),
        error=None if error is None else _json_object(error),
        attempts=row["attempts"],
    )


def _method_document(method: MethodRequest) -> JsonObject:
    return {
        "methodName": method.method_name,
        "payload": method.payload,
        "responseTimeoutInSeconds": method.response_timeout,
        "connectTimeoutInSeconds": method.connect_timeout,
    }


def _method_from_document(document: JsonObject) -> MethodRequest:
    # Not MethodRequest.create: a stored request was validated when it came in.
    response_timeout, connect_timeout = document["responseTimeoutInSeconds"], document["connectTimeoutInSeconds"]
    name = document["methodName"]
    if not isinstance(name, str) or not isinstance(response_timeout, int) or not isinstance(connect_timeout, int):
        raise TypeError("the stored method request is malformed")
    return MethodRequest(name, document.get("payload"), response_timeout, connect_timeout)


def job_values(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "job_type": job.job_type.value,
        "status": job.status.value,
        "query_condition": job.query_condition,
        "created_time": job.created_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "max_execution_seconds": job.max_execution_seconds,
        "method": None if job.method is None else _method_document(job.method),
        "twin_patch": job.twin_patch,
        "failure_reason": job.failure_reason,
        "status_message": job.status_message,
        "device_count": job.device_count,
        "acquired_by": job.acquired_by,
        "acquired_until": job.acquired_until,
        "revision": job.revision,
        "controls": job.controls.document() or None,
        "schedule_id": job.schedule_id,
    }


def job_from_row(row: RowMapping) -> Job:
    method, patch, controls = row["method"], row["twin_patch"], row["controls"]
    job_type = JobType(row["job_type"])
    return Job(
        job_id=row["job_id"],
        job_type=job_type,
        status=JobStatus(row["status"]),
        query_condition=row["query_condition"],
        created_time=row["created_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        max_execution_seconds=row["max_execution_seconds"],
        method=None if method is None else _method_from_document(_json_object(method)),
        twin_patch=None if patch is None else _json_object(patch),
        failure_reason=row["failure_reason"],
        status_message=row["status_message"],
        device_count=row["device_count"],
        acquired_by=row["acquired_by"],
        acquired_until=row["acquired_until"],
        revision=row["revision"],
        controls=(
            JobControls()
            if controls is None
            else JobControls.create(_json_object(controls), method_job=job_type is JobType.DEVICE_METHOD)
        ),
        schedule_id=row["schedule_id"],
    )


def job_event_values(event: JobEvent) -> dict[str, Any]:
    """Without ``sequence``: the database assigns it."""
    return {
        "job_id": event.job_id,
        "at": event.at,
        "kind": event.kind.value,
        "device_id": event.device_id,
        "message": event.message,
        "data": event.data,
    }


def job_event_from_row(row: RowMapping) -> JobEvent:
    data = row["data"]
    return JobEvent(
        job_id=row["job_id"],
        at=row["at"],
        kind=JobEventKind(row["kind"]),
        message=row["message"],
        device_id=row["device_id"],
        data=None if data is None else _json_object(data),
        sequence=row["sequence"],
    )


def policy_from_row(row: RowMapping) -> AccessPolicy:
    rights = frozenset(Right(name) for name in row["rights"].split(",") if name)
    return AccessPolicy(row["name"], row["primary_key"], row["secondary_key"], rights)


def policy_values(policy: AccessPolicy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "primary_key": policy.primary_key,
        "secondary_key": policy.secondary_key,
        "rights": ",".join(sorted(right.value for right in policy.rights)),
    }


def schedule_values(schedule: Schedule) -> dict[str, Any]:
    return {
        "schedule_id": schedule.schedule_id,
        "job_template": schedule.job_template,
        "recurrence": recurrence_document(schedule.recurrence),
        "time_zone": schedule.time_zone.key,
        "enabled": schedule.enabled,
        "state": schedule.state.value,
        "overlap": schedule.overlap.value,
        "created_time": schedule.created_time,
        "updated_time": schedule.updated_time,
        "next_run_time": schedule.next_run_time,
        "last_run_time": schedule.last_run_time,
        "last_run_job_id": schedule.last_run_job_id,
        "queued_run_time": schedule.queued_run_time,
        "run_count": schedule.run_count,
        "fault_reason": schedule.fault_reason,
        "acquired_by": schedule.acquired_by,
        "acquired_until": schedule.acquired_until,
        "revision": schedule.revision,
    }


def schedule_from_row(row: RowMapping) -> Schedule:
    zone = ZoneInfo(row["time_zone"])
    # The stored document always carries startTime, so the "now" it would default to is unused.
    recurrence = parse_recurrence(_json_object(row["recurrence"]), zone, row["created_time"])
    return Schedule(
        schedule_id=row["schedule_id"],
        job_template=_json_object(row["job_template"]),
        recurrence=recurrence,
        time_zone=zone,
        enabled=row["enabled"],
        state=ScheduleState(row["state"]),
        overlap=Overlap(row["overlap"]),
        created_time=row["created_time"],
        updated_time=row["updated_time"],
        next_run_time=row["next_run_time"],
        last_run_time=row["last_run_time"],
        last_run_job_id=row["last_run_job_id"],
        queued_run_time=row["queued_run_time"],
        run_count=row["run_count"],
        fault_reason=row["fault_reason"],
        acquired_by=row["acquired_by"],
        acquired_until=row["acquired_until"],
        revision=row["revision"],
    )
