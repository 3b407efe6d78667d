"""Jobs for the service API: create (validated, stored queued or scheduled), read with device
statistics, cancel, list, and read per-device results and the event log. Running jobs is the
job runner's part; this service only records what the API asks for."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Generic, TypeVar

from hub.domain.clock import Clock
from hub.domain.events import JobCancelled, JobCreated
from hub.domain.jobs import (
    DeviceJob,
    DeviceJobStatistics,
    DeviceJobStatus,
    Job,
    JobEvent,
    JobEventKind,
    JobRequest,
    JobStatus,
    JobType,
    check_job_transition,
)
from hub.domain.json import JsonValue
from hub.engine.metrics import JOBS_FINISHED
from hub.engine.query import DEFAULT_PAGE_SIZE
from hub.errors import BadRequestError, ConcurrencyConflictError
from hub.ports import EventBroker, JobStore
from hub.query.parser import parse_condition

__all__ = [
    "JobPage",
    "JobService",
    "cut_page",
    "decode_continuation",
    "encode_continuation",
    "parse_device_job_status",
    "parse_job_status",
    "parse_job_type",
]

_CANCEL_BATCH = 1000
_CANCEL_ATTEMPTS = 20


def parse_job_type(value: str | None) -> JobType | None:
    if value is None or value == "":
        return None
    try:
        return JobType(value)
    except ValueError:
        raise BadRequestError(f"jobType must be one of {', '.join(t.value for t in JobType)}, got {value!r}") from None


def parse_job_status(value: str | None) -> JobStatus | None:
    if value is None or value == "":
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise BadRequestError(
            f"jobStatus must be one of {', '.join(s.value for s in JobStatus)}, got {value!r}"
        ) from None


def parse_device_job_status(value: str | None) -> DeviceJobStatus | None:
    if value is None or value == "":
        return None
    try:
        return DeviceJobStatus(value)
    except ValueError:
        raise BadRequestError(
            f"status must be one of {', '.join(s.value for s in DeviceJobStatus)}, got {value!r}"
        ) from None


def encode_continuation(scope: str, after: str) -> str:
    """An opaque x-ms-continuation token for a key-ordered listing (``scope`` names the listing)."""
    raw = json.dumps({"v": 1, "s": scope, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continuation(scope: str, token: str | None) -> str | None:
    """The key the previous page ended at; a token from another listing is refused."""
    if not token:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, token_scope = body["after"], body["s"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequestError("x-ms-continuation is not a continuation token this hub issued") from None
    if token_scope != scope or not isinstance(after, str):
        raise BadRequestError("x-ms-continuation belongs to a different listing")
    return after


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobPage(Generic[T]):
    """One page of a listing and the token for the next (None on the last page)."""

    items: list[T]
    continuation: str | None


def cut_page(rows: list[T], page_size: int, scope: str, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """A listing read ``page_size + 1`` rows: the page, and the continuation token when there
    was one row more (the next page starts after the last row's ``key``)."""
    page = rows[:page_size]
    token = encode_continuation(scope, key(page[-1])) if len(rows) > page_size and page else None
    return page, token


class JobService:
    """Jobs created and cancelled are published (JobCreated, JobCancelled): the runners act
    on them at once rather than at their next poll."""

    def __init__(self, store: JobStore, clock: Clock, events: EventBroker) -> None:
        self._store = store
        self._clock = clock
        self._events = events

    async def create(self, job_id: object, body: Mapping[str, JsonValue], *, schedule_id: str | None = None) -> Job:
        """Validate and store a new job: ``scheduled`` when its startTime is later, else ``queued``.
        BadRequestError (400) for any invalid field, including the queryCondition's syntax;
        JobAlreadyExistsError (409) when the id is taken. ``schedule_id``: the job is a run of
        that schedule (hub.engine.schedules.scheduler)."""
        now = self._clock.now()
        request = self.validate(job_id, body, now)
        job = Job.from_request(request, now, schedule_id=schedule_id)
        await self._store.add_job(job)
        await self._event(job, f"job created ({job.status})")
        await self._events.publish(JobCreated(job.job_id))
        return job

    @staticmethod
    def validate(job_id: object, body: Mapping[str, JsonValue], now: datetime) -> JobRequest:
        """The request ``create`` would store, or BadRequestError; schedules check their job
        template with it when they are saved."""
        request = JobRequest.create(job_id, body, now)
        parse_condition(request.query_condition)
        return request

    async def get(self, job_id: str) -> tuple[Job, DeviceJobStatistics]:
        job = await self._store.get_job(job_id)
        return job, await self._store.count_device_jobs(job_id)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job that is not finished: it becomes ``cancelled`` at once with its end time.

        The node running it is told first, so it starts no further device; then every device
        part still pending or scheduled is marked ``canceled``, in batches. Device calls
        already in flight finish and their results are recorded. A finished job cannot be
        cancelled (BadRequestError, 400)."""
        for _ in range(_CANCEL_ATTEMPTS):
            job = await self._store.get_job(job_id)
            if job.status.is_terminal:
                raise BadRequestError(f"job {job_id!r} is already {job.status}")
            now = self._clock.now()
            cancelled = replace(
                job,
                status=check_job_transition(job.status, JobStatus.CANCELLED),
                end_time=now,
                status_message="cancelled by request",
            )
            try:
                cancelled = await self._store.update_job(cancelled, expected_revision=job.revision)
            except ConcurrencyConflictError:
                continue  # the runner renewed its lease meanwhile: read the job again
            await self._events.publish(JobCancelled(job_id))
            await self._cancel_pending(job_id, job.job_type, now)
            await self._event(cancelled, f"job cancelled (was {job.status})")
            JOBS_FINISHED.labels(job.job_type.value, JobStatus.CANCELLED.value, "request").inc()
            return cancelled
        raise ConcurrencyConflictError(f"job {job_id!r} is changing too fast to cancel; try again")

    async def _cancel_pending(self, job_id: str, job_type: JobType, now: datetime) -> None:
        after: str | None = None
        while True:
            ids = await self._store.pending_device_ids(job_id, after=after, limit=_CANCEL_BATCH)
            if not ids:
                return
            await self._store.update_device_jobs(
                [
                    DeviceJob(job_id, device_id, job_type, DeviceJobStatus.CANCELED, now, now, end_time=now)
                    for device_id in ids
                ]
            )
            if len(ids) < _CANCEL_BATCH:
                return
            after = ids[-1]

    async def query(
        self,
        job_type: JobType | None = None,
        job_status: JobStatus | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        continuation: str | None = None,
    ) -> JobPage[tuple[Job, DeviceJobStatistics]]:
        """Jobs in job id order, optionally of one type and status, a page at a time."""
        scope = f"jobs:{job_type or ''}:{job_status or ''}"
        after = decode_continuation(scope, continuation)
        rows = await self._store.list_jobs(job_type=job_type, status=job_status, after=after, limit=page_size + 1)
        jobs, token = cut_page(rows, page_size, scope, lambda job: job.job_id)
        return JobPage([(job, await self._store.count_device_jobs(job.job_id)) for job in jobs], token)

    async def device_results(
        self,
        job_id: str,
        status: DeviceJobStatus | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        continuation: str | None = None,
    ) -> JobPage[DeviceJob]:
        """One job's device parts in device id order; JobNotFoundError (404) for an unknown job."""
        await self._store.get_job(job_id)
        scope = f"devices:{job_id}:{status or ''}"
        after = decode_continuation(scope, continuation)
        rows = await self._store.list_device_jobs(job_id, status=status, after=after, limit=page_size + 1)
        return JobPage(*cut_page(rows, page_size, scope, lambda row: row.device_id))

    async def events(self, job_id: str) -> list[JobEvent]:
        """The job's whole event log in order; JobNotFoundError (404) for an unknown job."""
        await self._store.get_job(job_id)
        events: list[JobEvent] = []
        after = 0
        while True:
            batch = await self._store.list_job_events(job_id, after_sequence=after, limit=1000)
            events.extend(batch)
            if len(batch) < 1000:
                return events
            after = batch[-1].sequence

    async def _event(self, job: Job, message: str) -> None:
        await self._store.add_job_events(
            [
                JobEvent(
                    job.job_id,
                    self._clock.now(),
                    JobEventKind.STATUS_CHANGED,
                    message,
                    data={"status": job.status.value},
                )
            ]
        )
