"""Jobs (``/jobs/v2``) and schedules (``/schedules``): schedule method and twin update jobs over
a query, with rollout controls, follow them, read their per-device results; define recurring
jobs and read their runs. The async core and its blocking wrapper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from job_client._http import FromConnectionString, ServiceHttp
from job_client._json import json_object
from job_client._sync import SyncRunner
from job_client.errors import FleetHubError, FleetHubTimeoutError
from job_client.models import (
    DeviceJobResult,
    DeviceJobStatus,
    Job,
    JobEvent,
    JobStatus,
    JobType,
    MethodParams,
    Page,
    format_timestamp,
)
from job_client.rollout import AbortCriterion, RetryPolicy, Rollout, option_json
from job_client.schedules import JobTemplate, Recurrence, Schedule, ScheduleOverlap, ScheduleRun, method_json

__all__ = ["DEFAULT_MAX_EXECUTION_SECONDS", "AbortOption", "AsyncJobClient", "JobClient", "schedule_body"]

DEFAULT_MAX_EXECUTION_SECONDS = 3600

ProgressCallback = Callable[[Job], None]
# Criteria, one criterion, or the ``abort`` document as the hub takes it.
AbortOption = Sequence[AbortCriterion] | AbortCriterion | Mapping[str, Any]


def _job_path(job_id: str, *rest: str) -> str:
    return "/".join([f"/jobs/v2/{quote(job_id, safe='')}", *rest])


def _schedule_path(schedule_id: str, *rest: str) -> str:
    return "/".join([f"/schedules/{quote(schedule_id, safe='')}", *rest])


def _schedule(value: Any) -> Schedule:
    return Schedule.from_json(json_object(value, "a schedule"))


def schedule_body(
    job: JobTemplate | Mapping[str, Any],
    recurrence: Recurrence | Mapping[str, Any],
    *,
    time_zone: str | None = None,
    enabled: bool = True,
    overlap: ScheduleOverlap | str | None = None,
) -> dict[str, Any]:
    """The ``PUT /schedules/{id}`` body; ``time_zone`` and ``overlap`` left None take the hub's
    defaults (UTC, skip)."""
    body: dict[str, Any] = {
        "job": job.to_json() if isinstance(job, JobTemplate) else dict(job),
        "recurrence": recurrence.to_json() if isinstance(recurrence, Recurrence) else dict(recurrence),
        "enabled": enabled,
    }
    if time_zone is not None:
        body["timeZone"] = time_zone
    if overlap is not None:
        body["overlap"] = str(overlap)
    return body


def _job(value: Any) -> Job:
    return Job.from_json(json_object(value, "a job"))


def _quote_sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class AsyncJobClient(FromConnectionString):
    """Jobs over the REST API; an async context manager.

    Build it with ``from_connection_string`` (it then owns and closes its HTTP core) or around a
    shared ``ServiceHttp`` (the caller closes that).
    """

    def __init__(self, http: ServiceHttp, *, owns_http: bool = False) -> None:
        self._http = http
        self._owns_http = owns_http

    @classmethod
    def _over_http(cls, http: ServiceHttp) -> Self:
        return cls(http, owns_http=True)

    @property
    def hostname(self) -> str:
        return self._http.credentials.hostname

    # -- scheduling ----------------------------------------------------------------------

    async def _create(
        self,
        job_id: str,
        job_type: JobType,
        query_condition: str,
        member: tuple[str, dict[str, Any]],
        start_time: datetime | None,
        max_execution_time_in_seconds: int,
        options: dict[str, Any],
    ) -> Job:
        body: dict[str, Any] = {"jobId": job_id, "type": str(job_type), member[0]: member[1]}
        body["queryCondition"] = query_condition
        if start_time is not None:
            body["startTime"] = format_timestamp(start_time)
        body["maxExecutionTimeInSeconds"] = max_execution_time_in_seconds
        body.update(options)
        return _job(await self._http.request_json("PUT", _job_path(job_id), json_body=body))

    async def schedule_device_method(
        self,
        job_id: str,
        query_condition: str,
        method_params: MethodParams | Mapping[str, Any],
        start_time: datetime | None = None,
        max_execution_time_in_seconds: int = DEFAULT_MAX_EXECUTION_SECONDS,
        *,
        rollout: Rollout | Mapping[str, Any] | None = None,
        abort: AbortOption | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        continuous: bool = False,
    ) -> Job:
        """Call a direct method on every device matching ``query_condition`` (a WHERE clause or ``*``).

        ``rollout`` paces the calls, ``abort`` criteria stop the job when too many fail, ``retry``
        calls a device again after a failed attempt, and a ``continuous`` job also reaches
        devices that come to match the query before its deadline."""
        return await self._create(
            job_id,
            JobType.DEVICE_METHOD,
            query_condition,
            ("cloudToDeviceMethod", method_json(method_params)),
            start_time,
            max_execution_time_in_seconds,
            option_json(rollout=rollout, abort=abort, retry=retry, continuous=continuous),
        )

    async def schedule_twin_update(
        self,
        job_id: str,
        query_condition: str,
        patch: Mapping[str, Any],
        start_time: datetime | None = None,
        max_execution_time_in_seconds: int = DEFAULT_MAX_EXECUTION_SECONDS,
        *,
        rollout: Rollout | Mapping[str, Any] | None = None,
        abort: AbortOption | None = None,
        continuous: bool = False,
    ) -> Job:
        """Merge-patch tags and desired properties of every matching twin (a forced update: etag ``*``);
        ``rollout``, ``abort`` and ``continuous`` as for ``schedule_device_method`` (twin jobs do not retry)."""
        body = {**dict(patch), "etag": "*"}
        return await self._create(
            job_id,
            JobType.UPDATE_TWIN,
            query_condition,
            ("updateTwin", body),
            start_time,
            max_execution_time_in_seconds,
            option_json(rollout=rollout, abort=abort, continuous=continuous),
        )

    # -- reading -------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        return _job(await self._http.request_json("GET", _job_path(job_id)))

    async def cancel_job(self, job_id: str) -> Job:
        return _job(await self._http.request_json("POST", _job_path(job_id, "cancel")))

    async def query_jobs(
        self,
        job_type: JobType | str | None = None,
        job_status: JobStatus | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Job]:
        """Every job (optionally of one type and status) across ``GET /jobs/v2/query`` pages."""
        params: dict[str, str | int] = {}
        if job_type is not None:
            params["jobType"] = str(job_type)
        if job_status is not None:
            params["jobStatus"] = str(job_status)
        async for item in self._items(self._http.pages("GET", "/jobs/v2/query", params=params, page_size=page_size)):
            yield _job(item)

    async def list_device_results(
        self,
        job_id: str,
        status: DeviceJobStatus | str | None = None,
        page_size: int = 100,
        *,
        via_query: bool = False,
    ) -> AsyncIterator[DeviceJobResult]:
        """Every device's part in a job, from ``GET /jobs/v2/{id}/devices`` (a fleethub extension),
        or with ``via_query`` from IoT Hub's ``SELECT * FROM devices.jobs`` query."""
        pages: AsyncGenerator[Page, None]
        if via_query:
            sql = f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = {_quote_sql(job_id)}"
            if status is not None:
                sql += f" AND devices.jobs.status = {_quote_sql(str(status))}"
            pages = self._http.pages("POST", "/devices/query", json_body={"query": sql}, page_size=page_size)
        else:
            params: dict[str, str | int] = {} if status is None else {"status": str(status)}
            pages = self._http.pages("GET", _job_path(job_id, "devices"), params=params, page_size=page_size)
        async for item in self._items(pages):
            if not isinstance(item, Mapping):
                raise FleetHubError("expected a JSON object for a device job", code="InvalidResponse")
            yield DeviceJobResult.from_json(item)

    async def list_events(self, job_id: str) -> list[JobEvent]:
        """The job's event log (``GET /jobs/v2/{id}/events``, a fleethub extension)."""
        doc = await self._http.request_json("GET", _job_path(job_id, "events"))
        if isinstance(doc, Mapping):
            doc = doc.get("events", doc.get("items"))
        if not isinstance(doc, list):
            raise FleetHubError("expected a JSON list of job events", code="InvalidResponse")
        return [JobEvent.from_json(item) for item in doc if isinstance(item, Mapping)]

    async def wait_for_job(
        self,
        job_id: str,
        poll_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Poll until the job is completed, failed or cancelled and return it; ``on_progress``
        sees every polled state. ``FleetHubTimeoutError`` after ``timeout`` seconds."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.is_terminal:
                return job
            delay = poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FleetHubTimeoutError(f"job {job_id!r} is still {job.status} after {timeout} s")
                delay = min(delay, left)
            await asyncio.sleep(delay)

    # -- schedules -----------------------------------------------------------------------

    async def create_schedule(
        self,
        schedule_id: str,
        job: JobTemplate | Mapping[str, Any],
        recurrence: Recurrence | Mapping[str, Any],
        *,
        time_zone: str | None = None,
        enabled: bool = True,
        overlap: ScheduleOverlap | str | None = None,
    ) -> Schedule:
        """Create or replace a schedule: ``job`` runs at every time of ``recurrence``, read in
        ``time_zone`` (IANA, default UTC); ``overlap`` says what a run due while the previous one
        is still active does (skip, the default, or queue)."""
        body = schedule_body(job, recurrence, time_zone=time_zone, enabled=enabled, overlap=overlap)
        return await self.put_schedule(schedule_id, body)

    async def put_schedule(self, schedule_id: str, body: Mapping[str, Any]) -> Schedule:
        """Create or replace a schedule from a whole ``PUT /schedules/{id}`` body (e.g. read from a file)."""
        return _schedule(await self._http.request_json("PUT", _schedule_path(schedule_id), json_body=dict(body)))

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return _schedule(await self._http.request_json("GET", _schedule_path(schedule_id)))

    async def list_schedules(self, page_size: int = 100) -> AsyncIterator[Schedule]:
        """Every schedule across ``GET /schedules`` pages."""
        async for item in self._items(self._http.pages("GET", "/schedules", page_size=page_size)):
            yield _schedule(item)

    async def run_schedule(self, schedule_id: str) -> Job:
        """Run the schedule once now (also when it is disabled); the job that run created."""
        return _job(await self._http.request_json("POST", _schedule_path(schedule_id, "run")))

    async def enable_schedule(self, schedule_id: str) -> Schedule:
        return _schedule(await self._http.request_json("POST", _schedule_path(schedule_id, "enable")))

    async def disable_schedule(self, schedule_id: str) -> Schedule:
        return _schedule(await self._http.request_json("POST", _schedule_path(schedule_id, "disable")))

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule; the jobs its runs created stay."""
        await self._http.request("DELETE", _schedule_path(schedule_id))

    async def list_schedule_runs(self, schedule_id: str, top: int | None = None) -> list[ScheduleRun]:
        """The schedule's latest runs, newest first (``top`` of them; the hub's default otherwise).
        A run's log is its job's events: ``list_events(run.job_id)``."""
        if top is not None and top < 1:
            raise ValueError("top must be at least 1")
        params: dict[str, str | int] = {} if top is None else {"top": top}
        doc = await self._http.request_json("GET", _schedule_path(schedule_id, "runs"), params=params)
        if not isinstance(doc, list):
            raise FleetHubError("expected a JSON list of schedule runs", code="InvalidResponse")
        return [ScheduleRun.from_json(json_object(item, "a schedule run")) for item in doc]

    @staticmethod
    async def _items(pages: AsyncGenerator[Page, None]) -> AsyncIterator[Any]:
        try:
            async for page in pages:
                for item in page.items:
                    yield item
        finally:
            await pages.aclose()

    # -- lifecycle -----------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class JobClient(FromConnectionString):
    """The blocking twin of ``AsyncJobClient``: every call runs the async core on a private loop.

    Not for use inside a running event loop (use the async client there). A context manager.
    """

    def __init__(self, http: ServiceHttp) -> None:
        """Wrap ``http`` (this client owns and closes it); usually built by ``from_connection_string``."""
        self._runner = SyncRunner()
        self._async = AsyncJobClient(http, owns_http=True)

    @classmethod
    def _over_http(cls, http: ServiceHttp) -> Self:
        return cls(http)

    @property
    def hostname(self) -> str:
        return self._async.hostname

    def schedule_device_method(
        self,
        job_id: str,
        query_condition: str,
        method_params: MethodParams | Mapping[str, Any],
        start_time: datetime | None = None,
        max_execution_time_in_seconds: int = DEFAULT_MAX_EXECUTION_SECONDS,
        *,
        rollout: Rollout | Mapping[str, Any] | None = None,
        abort: AbortOption | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        continuous: bool = False,
    ) -> Job:
        return self._runner.run(
            self._async.schedule_device_method(
                job_id,
                query_condition,
                method_params,
                start_time,
                max_execution_time_in_seconds,
                rollout=rollout,
                abort=abort,
                retry=retry,
                continuous=continuous,
            )
        )

    def schedule_twin_update(
        self,
        job_id: str,
        query_condition: str,
        patch: Mapping[str, Any],
        start_time: datetime | None = None,
        max_execution_time_in_seconds: int = DEFAULT_MAX_EXECUTION_SECONDS,
        *,
        rollout: Rollout | Mapping[str, Any] | None = None,
        abort: AbortOption | None = None,
        continuous: bool = False,
    ) -> Job:
        return self._runner.run(
            self._async.schedule_twin_update(
                job_id,
                query_condition,
                patch,
                start_time,
                max_execution_time_in_seconds,
                rollout=rollout,
                abort=abort,
                continuous=continuous,
            )
        )

    def get_job(self, job_id: str) -> Job:
        return self._runner.run(self._async.get_job(job_id))

    def cancel_job(self, job_id: str) -> Job:
        return self._runner.run(self._async.cancel_job(job_id))

    def query_jobs(
        self,
        job_type: JobType | str | None = None,
        job_status: JobStatus | str | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        return self._runner.iterate(self._async.query_jobs(job_type, job_status, page_size))

    def list_device_results(
        self,
        job_id: str,
        status: DeviceJobStatus | str | None = None,
        page_size: int = 100,
        *,
        via_query: bool = False,
    ) -> Iterator[DeviceJobResult]:
        return self._runner.iterate(self._async.list_device_results(job_id, status, page_size, via_query=via_query))

    def list_events(self, job_id: str) -> list[JobEvent]:
        return self._runner.run(self._async.list_events(job_id))

    def wait_for_job(
        self,
        job_id: str,
        poll_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Job:
        return self._runner.run(self._async.wait_for_job(job_id, poll_interval, on_progress, timeout))

    def create_schedule(
        self,
        schedule_id: str,
        job: JobTemplate | Mapping[str, Any],
        recurrence: Recurrence | Mapping[str, Any],
        *,
        time_zone: str | None = None,
        enabled: bool = True,
        overlap: ScheduleOverlap | str | None = None,
    ) -> Schedule:
        return self._runner.run(
            self._async.create_schedule(
                schedule_id, job, recurrence, time_zone=time_zone, enabled=enabled, overlap=overlap
            )
        )

    def put_schedule(self, schedule_id: str, body: Mapping[str, Any]) -> Schedule:
        return self._runner.run(self._async.put_schedule(schedule_id, body))

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self._runner.run(self._async.get_schedule(schedule_id))

    def list_schedules(self, page_size: int = 100) -> Iterator[Schedule]:
        return self._runner.iterate(self._async.list_schedules(page_size))

    def run_schedule(self, schedule_id: str) -> Job:
        return self._runner.run(self._async.run_schedule(schedule_id))

    def enable_schedule(self, schedule_id: str) -> Schedule:
        return self._runner.run(self._async.enable_schedule(schedule_id))

    def disable_schedule(self, schedule_id: str) -> Schedule:
        return self._runner.run(self._async.disable_schedule(schedule_id))

    def delete_schedule(self, schedule_id: str) -> None:
        self._runner.run(self._async.delete_schedule(schedule_id))

    def list_schedule_runs(self, schedule_id: str, top: int | None = None) -> list[ScheduleRun]:
        return self._runner.run(self._async.list_schedule_runs(schedule_id, top))

    def close(self) -> None:
        self._runner.close(self._async.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
