"""Schedules: ``/schedules`` — recurring jobs: create or replace, read, list, delete, enable,
disable, run now, and list recent runs (each run is an ordinary job under ``/jobs/v2``).

Times are ISO-8601 UTC strings, null when there is none. A fleethub extension; IoT Hub has
no schedules.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import JSONResponse

from hub.api.deps import ServiceConnect, ServicesDep
from hub.api.routes.jobs import job_document
from hub.api.schemas import ERROR_RESPONSES, SCHEDULE_BODY_DOC, JobOut, ScheduleOut, ScheduleRunOut, paged_response
from hub.domain.jobs import DeviceJobStatistics, Job
from hub.domain.recurrence import recurrence_document
from hub.domain.twin import isoformat
from hub.engine.query import page_size_of
from hub.engine.schedules.service import MAX_RUN_HISTORY, ScheduleView

__all__ = ["router", "run_document", "schedule_document"]

router = APIRouter(tags=["schedules"], responses=ERROR_RESPONSES)

SCHEDULE_ITEM_TYPE = "schedule"

MaxItemCount = Annotated[str | None, Header()]
Continuation = Annotated[str | None, Header()]


def schedule_document(view: ScheduleView) -> dict[str, Any]:
    schedule = view.schedule
    return {
        "scheduleId": schedule.schedule_id,
        "job": schedule.job_template,
        "recurrence": recurrence_document(schedule.recurrence),
        "timeZone": schedule.time_zone.key,
        "enabled": schedule.enabled,
        "overlap": schedule.overlap.value,
        "state": schedule.state.value,
        "nextRunTime": None if schedule.next_run_time is None else isoformat(schedule.next_run_time),
        "lastRunTime": None if schedule.last_run_time is None else isoformat(schedule.last_run_time),
        "lastRunJobId": schedule.last_run_job_id,
        "lastRunStatus": None if view.last_run_status is None else view.last_run_status.value,
        "runCount": schedule.run_count,
        "faultReason": schedule.fault_reason,
        "createdTime": isoformat(schedule.created_time),
        "updatedTime": isoformat(schedule.updated_time),
    }


def run_document(job: Job, statistics: DeviceJobStatistics) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "status": job.status.value,
        "createdTime": isoformat(job.created_time),
        "startTime": isoformat(job.start_time),
        "endTime": None if job.end_time is None else isoformat(job.end_time),
        "failureReason": job.failure_reason,
        "statusMessage": job.status_message,
        "deviceJobStatistics": statistics.document(),
    }


@router.get("/schedules", response_model=None, responses={200: {"model": list[ScheduleOut]}})
async def list_schedules(
    services: ServicesDep,
    _: ServiceConnect,
    x_ms_max_item_count: MaxItemCount = None,
    x_ms_continuation: Continuation = None,
) -> JSONResponse:
    """Schedules in schedule id order; paged by x-ms-max-item-count and x-ms-continuation."""
    page = await services.schedules.list(page_size=page_size_of(x_ms_max_item_count), continuation=x_ms_continuation)
    return paged_response([schedule_document(view) for view in page.items], page.continuation, SCHEDULE_ITEM_TYPE)


@router.put(
    "/schedules/{schedule_id}",
    response_model=None,
    openapi_extra=SCHEDULE_BODY_DOC,
    responses={200: {"model": ScheduleOut}},
)
async def put_schedule(
    schedule_id: str, body: Annotated[dict[str, Any], Body()], services: ServicesDep, _: ServiceConnect
) -> dict[str, Any]:
    """Create or replace a schedule; a replaced one keeps its run count and last run."""
    return schedule_document(await services.schedules.put(schedule_id, body))


@router.get("/schedules/{schedule_id}", response_model=None, responses={200: {"model": ScheduleOut}})
async def get_schedule(schedule_id: str, services: ServicesDep, _: ServiceConnect) -> dict[str, Any]:
    return schedule_document(await services.schedules.get(schedule_id))


@router.delete("/schedules/{schedule_id}", status_code=204, response_class=Response, responses={204: {}})
async def delete_schedule(schedule_id: str, services: ServicesDep, _: ServiceConnect) -> Response:
    """Delete a schedule; the jobs of its runs stay."""
    await services.schedules.delete(schedule_id)
    return Response(status_code=204)


@router.post("/schedules/{schedule_id}/run", response_model=None, responses={200: {"model": JobOut}})
async def run_schedule(schedule_id: str, services: ServicesDep, _: ServiceConnect) -> dict[str, Any]:
    """Run the schedule once now, even when it is disabled; answers the run's job."""
    job = await services.schedules.run_now(schedule_id)
    return job_document(job, DeviceJobStatistics())


@router.post("/schedules/{schedule_id}/enable", response_model=None, responses={200: {"model": ScheduleOut}})
async def enable_schedule(schedule_id: str, services: ServicesDep, _: ServiceConnect) -> dict[str, Any]:
    """Enable from now on; runs missed while disabled do not catch up."""
    return schedule_document(await services.schedules.enable(schedule_id))


@router.post("/schedules/{schedule_id}/disable", response_model=None, responses={200: {"model": ScheduleOut}})
async def disable_schedule(schedule_id: str, services: ServicesDep, _: ServiceConnect) -> dict[str, Any]:
    return schedule_document(await services.schedules.disable(schedule_id))


@router.get("/schedules/{schedule_id}/runs", response_model=None, responses={200: {"model": list[ScheduleRunOut]}})
async def schedule_runs(
    schedule_id: str,
    services: ServicesDep,
    _: ServiceConnect,
    top: Annotated[int | None, Query(ge=1, le=MAX_RUN_HISTORY)] = None,
) -> list[dict[str, Any]]:
    """The latest runs, newest first (default: the hub's run history setting)."""
    return [run_document(job, stats) for job, stats in await services.schedules.runs(schedule_id, top)]
