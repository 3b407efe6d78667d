"""Jobs: ``/jobs/v2`` — create, read, cancel and list jobs, and read their device results and events.

Times are ISO-8601 UTC strings. ``endTime`` is null until the job is finished (IoT Hub sends a
``9999-12-31`` sentinel there instead; null says the same thing without a fake date).
``api-version`` is accepted and ignored like everywhere in the hub.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header
from fastapi.responses import JSONResponse

from hub.api.deps import ServiceConnect, ServicesDep
from hub.api.quirks import JOB_ITEM_TYPE, job_listing_body
from hub.api.schemas import (
    ERROR_RESPONSES,
    JOB_BODY_DOC,
    DeviceJobOut,
    JobEventOut,
    JobOut,
    JobQueryResultOut,
    paged_response,
)
from hub.domain.jobs import DeviceJobStatistics, Job, JobEvent, device_job_document
from hub.domain.twin import isoformat
from hub.engine.jobs.service import parse_device_job_status, parse_job_status, parse_job_type
from hub.engine.query import ItemType, page_size_of

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

MaxItemCount = Annotated[str | None, Header()]
Continuation = Annotated[str | None, Header()]
UserAgent = Annotated[str | None, Header()]


def job_document(job: Job, statistics: DeviceJobStatistics) -> dict[str, Any]:
    """The JobResponse of IoT Hub's ``/jobs/v2`` API."""
    doc: dict[str, Any] = {
        "jobId": job.job_id,
        "type": job.job_type.value,
        "status": job.status.value,
        "queryCondition": job.query_condition,
        "createdTime": isoformat(job.created_time),
        "startTime": isoformat(job.start_time),
        "endTime": isoformat(job.end_time) if job.end_time is not None else None,
        "maxExecutionTimeInSeconds": job.max_execution_seconds,
        "failureReason": job.failure_reason,
        "statusMessage": job.status_message,
        "deviceJobStatistics": statistics.document(),
    }
    if job.method is not None:
        doc["cloudToDeviceMethod"] = {
            "methodName": job.method.method_name,
            "payload": job.method.payload,
            "responseTimeoutInSeconds": job.method.response_timeout,
            "connectTimeoutInSeconds": job.method.connect_timeout,
        }
    if job.twin_patch is not None:
        doc["updateTwin"] = job.twin_patch
    # fleethub's extensions, present only when set so a plain job reads exactly as IoT Hub's.
    doc.update(job.controls.document())
    if job.schedule_id is not None:
        doc["scheduleId"] = job.schedule_id
    return doc


def event_document(event: JobEvent) -> dict[str, Any]:
    return {
        "time": isoformat(event.at),
        "type": event.kind.value,
        "message": event.message,
        "deviceId": event.device_id,
    }


# Declared before /jobs/v2/{job_id} so that "query" is never taken for a job id.
@router.get("/jobs/v2/query", response_model=None, responses={200: {"model": list[JobOut] | JobQueryResultOut}})
async def query_jobs(
    services: ServicesDep,
    _: ServiceConnect,
    jobType: str | None = None,  # IoT Hub's parameter name
    jobStatus: str | None = None,  # IoT Hub's parameter name
    x_ms_max_item_count: MaxItemCount = None,
    x_ms_continuation: Continuation = None,
    user_agent: UserAgent = None,
) -> JSONResponse:
    """Jobs in job id order, optionally of one type and status; paged by x-ms-max-item-count
    and x-ms-continuation. A JSON array, except for the Python SDK's generated client
    (``hub.api.quirks``)."""
    page = await services.jobs.query(
        parse_job_type(jobType),
        parse_job_status(jobStatus),
        page_size=page_size_of(x_ms_max_item_count),
        continuation=x_ms_continuation,
    )
    items = [job_document(job, stats) for job, stats in page.items]
    return paged_response(job_listing_body(items, page.continuation, user_agent), page.continuation, JOB_ITEM_TYPE)


@router.put("/jobs/v2/{job_id}", response_model=None, openapi_extra=JOB_BODY_DOC, responses={200: {"model": JobOut}})
async def create_job(
    job_id: str, body: Annotated[dict[str, Any], Body()], services: ServicesDep, _: ServiceConnect
) -> dict[str, Any]:
    """Schedule a device method or twin update job; it is queued, or scheduled for a later startTime."""
    job = await services.jobs.create(job_id, body)
    return job_document(job, DeviceJobStatistics())


@router.get("/jobs/v2/{job_id}", response_model=None, responses={200: {"model": JobOut}})
async def get_job(job_id: str, services: ServicesDep, _: ServiceConnect) -> dict[str, Any]:
    return job_document(*await services.jobs.get(job_id))


@router.post("/jobs/v2/{job_id}/cancel", response_model=None, responses={200: {"model": JobOut}})
async def cancel_job(job_id: str, services: ServicesDep, _: ServiceConnect) -> dict[str, Any]:
    """Cancel a job that has not finished; 400 when it already has."""
    cancelled = await services.jobs.cancel(job_id)
    stats = await services.store.count_device_jobs(job_id)
    return job_document(cancelled, stats)


@router.get("/jobs/v2/{job_id}/devices", response_model=None, responses={200: {"model": list[DeviceJobOut]}})
async def job_devices(
    job_id: str,
    services: ServicesDep,
    _: ServiceConnect,
    status: str | None = None,
    x_ms_max_item_count: MaxItemCount = None,
    x_ms_continuation: Continuation = None,
) -> JSONResponse:
    """The job's per-device results (a fleethub extension), in device id order, paged."""
    page = await services.jobs.device_results(
        job_id,
        parse_device_job_status(status),
        page_size=page_size_of(x_ms_max_item_count),
        continuation=x_ms_continuation,
    )
    return paged_response(
        [device_job_document(row) for row in page.items], page.continuation, ItemType.DEVICE_JOB.value
    )


@router.get("/jobs/v2/{job_id}/events", response_model=None, responses={200: {"model": list[JobEventOut]}})
async def job_events(job_id: str, services: ServicesDep, _: ServiceConnect) -> list[dict[str, Any]]:
    """The job's event log, oldest first (a fleethub extension)."""
    return [event_document(event) for event in await services.jobs.events(job_id)]


__all__ = ["event_document", "job_document", "router"]
