"""Schedules for the service API: create or replace, read, list, delete, enable, disable, run
now and list runs; and creating one run, which the scheduler (hub.engine.schedules.scheduler) shares."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from hub.domain.clock import Clock
from hub.domain.events import ScheduleChanged
from hub.domain.jobs import DeviceJobStatistics, Job, JobEvent, JobEventKind, JobStatus
from hub.domain.json import JsonObject, JsonValue
from hub.domain.schedules import Schedule, ScheduleRequest, run_job_id
from hub.domain.twin import isoformat
from hub.engine.jobs.service import JobPage, JobService, cut_page, decode_continuation
from hub.engine.metrics import SCHEDULE_RUNS
from hub.engine.query import DEFAULT_PAGE_SIZE
from hub.errors import (
    BadRequestError,
    ConcurrencyConflictError,
    JobAlreadyExistsError,
    JobNotFoundError,
    ScheduleNotFoundError,
)
from hub.ports import EventBroker, JobStore, ScheduleStore

__all__ = [
    "DEFAULT_RUN_HISTORY",
    "MAX_RUN_HISTORY",
    "ScheduleService",
    "ScheduleStores",
    "ScheduleView",
]

log = logging.getLogger(__name__)

DEFAULT_RUN_HISTORY = 30
MAX_RUN_HISTORY = 1000
_UPDATE_ATTEMPTS = 20
# Any valid job id: a template is checked as a job request before it has a run.
_PLACEHOLDER_JOB_ID = "schedule-template"


class ScheduleStores(ScheduleStore, JobStore, Protocol):
    """What schedules need: their own table and the jobs that are their runs."""


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule with the status its last run has now (None: no run, or purged)."""

    schedule: Schedule
    last_run_status: JobStatus | None


class ScheduleService:
    def __init__(
        self,
        store: ScheduleStores,
        clock: Clock,
        jobs: JobService,
        events: EventBroker,
        *,
        run_history: int = DEFAULT_RUN_HISTORY,
    ) -> None:
        self._store = store
        self._clock = clock
        self._jobs = jobs
        self._events = events
        self.run_history = run_history

    async def put(self, schedule_id: object, body: Mapping[str, JsonValue]) -> ScheduleView:
        """Create or replace a schedule (BadRequestError for any invalid field). A replaced
        schedule keeps its run count and last run; its state follows the new definition."""
        now = self._clock.now()
        request = ScheduleRequest.create(
            schedule_id, body, now, lambda template: JobService.validate(_PLACEHOLDER_JOB_ID, template, now)
        )
        for _ in range(_UPDATE_ATTEMPTS):
            previous: Schedule | None
            try:
                previous = await self._store.get_schedule(request.schedule_id)
            except ScheduleNotFoundError:
                previous = None
            schedule = Schedule.from_request(request, now, previous)
            try:
                stored = await self._store.add_or_replace_schedule(
                    schedule, expected_revision=None if previous is None else previous.revision
                )
            except ConcurrencyConflictError:
                continue
            await self._changed(stored.schedule_id)
            return await self._view(stored)
        raise ConcurrencyConflictError(f"schedule {request.schedule_id!r} is changing too fast; try again")

    async def get(self, schedule_id: str) -> ScheduleView:
        """ScheduleNotFoundError (404) when there is none."""
        return await self._view(await self._store.get_schedule(schedule_id))

    async def list(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, continuation: str | None = None
    ) -> JobPage[ScheduleView]:
        """Schedules in schedule id order, a page at a time."""
        after = decode_continuation("schedules", continuation)
        rows = await self._store.list_schedules(after=after, limit=page_size + 1)
        schedules, token = cut_page(rows, page_size, "schedules", lambda schedule: schedule.schedule_id)
        return JobPage([await self._view(schedule) for schedule in schedules], token)

    async def delete(self, schedule_id: str) -> None:
        """Delete the schedule; the jobs of its runs stay, as jobs."""
        await self._store.remove_schedule(schedule_id)
        await self._changed(schedule_id)

    async def enable(self, schedule_id: str) -> ScheduleView:
        """Enabled from now on: runs missed while it was disabled do not catch up."""
        now = self._clock.now()
        stored = await self.change(schedule_id, lambda schedule: replace(schedule, updated_time=now).enabled_from(now))
        await self._changed(schedule_id)
        return await self._view(stored)

    async def disable(self, schedule_id: str) -> ScheduleView:
        now = self._clock.now()
        stored = await self.change(schedule_id, lambda schedule: replace(schedule, updated_time=now).disabled())
        await self._changed(schedule_id)
        return await self._view(stored)

    async def run_now(self, schedule_id: str) -> Job:
        """Create a run at once, even when the schedule is disabled; its time is now to the
        second. JobAlreadyExistsError (409) when a run of this schedule started this second."""
        schedule = await self._store.get_schedule(schedule_id)
        run_time = self._clock.now().replace(microsecond=0)
        try:
            job = await self.create_run(schedule, run_time, requested=True)
        except JobAlreadyExistsError:
            raise JobAlreadyExistsError(
                f"a run of this schedule started this second (job {run_job_id(schedule_id, run_time)!r}); "
                "try again in a second"
            ) from None
        await self.change(schedule_id, lambda current: current.with_run(run_time, job.job_id))
        SCHEDULE_RUNS.labels("requested").inc()
        return job

    async def runs(self, schedule_id: str, top: int | None = None) -> builtins.list[tuple[Job, DeviceJobStatistics]]:
        """The latest ``top`` (default: the run history setting) runs, newest first, with their
        device statistics; ScheduleNotFoundError (404) when the schedule does not exist."""
        limit = self.run_history if top is None else top
        if not 1 <= limit <= MAX_RUN_HISTORY:
            raise BadRequestError(f"top must be from 1 to {MAX_RUN_HISTORY}, got {limit}")
        await self._store.get_schedule(schedule_id)
        jobs = await self._store.list_schedule_runs(schedule_id, limit=limit)
        return [(job, await self._store.count_device_jobs(job.job_id)) for job in jobs]

    # -- shared with the scheduler ------------------------------------------------------------

    async def create_run(self, schedule: Schedule, run_time: datetime, *, requested: bool = False) -> Job:
        """Create the job of the run at ``run_time``, starting now (``requested``: by run now,
        which its log says). JobAlreadyExistsError when that run's job exists already;
        BadRequestError when the template no longer makes a job."""
        body: JsonObject = dict(schedule.job_template)
        now = self._clock.now()
        body["startTime"] = isoformat(now)
        job_id = run_job_id(schedule.schedule_id, run_time)
        job = await self._jobs.create(job_id, body, schedule_id=schedule.schedule_id)
        why = "run now, by request" if requested else f"due at {isoformat(run_time)}"
        message = f"run of schedule {schedule.schedule_id}: {why}"
        data: JsonObject = {"scheduleId": schedule.schedule_id, "runTime": isoformat(run_time), "requested": requested}
        await self._store.add_job_events([JobEvent(job_id, now, JobEventKind.NOTE, message, data=data)])
        log.info("schedule %s: %s; job %s", schedule.schedule_id, why, job_id)
        return job

    async def change(self, schedule_id: str, edit: Callable[[Schedule], Schedule]) -> Schedule:
        """Apply ``edit`` to the stored schedule and write it, reading it again after a lost race."""
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self._store.get_schedule(schedule_id)
            try:
                return await self._store.update_schedule(edit(current), expected_revision=current.revision)
            except ConcurrencyConflictError:
                continue
        raise ConcurrencyConflictError(f"schedule {schedule_id!r} is changing too fast; try again")

    async def last_run_status(self, schedule: Schedule) -> JobStatus | None:
        if schedule.last_run_job_id is None:
            return None
        try:
            return (await self._store.get_job(schedule.last_run_job_id)).status
        except JobNotFoundError:
            return None

    async def _view(self, schedule: Schedule) -> ScheduleView:
        return ScheduleView(schedule, await self.last_run_status(schedule))

    async def _changed(self, schedule_id: str) -> None:
        await self._events.publish(ScheduleChanged(schedule_id))
