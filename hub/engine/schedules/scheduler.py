"""The scheduler: creates each schedule's runs (ordinary jobs) when they come due.

Every pass leases the schedules that have work (``ScheduleStore.acquire_due_schedules``),
decides each one's run with the misfire rule (``hub.domain.recurrence.due_runs``: after
downtime at most one catch-up run within the grace period, never a burst), applies the
overlap rule, creates the job and writes the schedule back, releasing the lease. All state
is in the schedules table, so a restarted or another node goes on exactly where it stopped.

A run's job id comes from its run time, so a node that crashed after creating a run's job
and before recording it finds the job there and counts the run as done: exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

from hub.domain.clock import Clock
from hub.domain.events import ScheduleChanged
from hub.domain.jobs import JobEvent, JobEventKind
from hub.domain.recurrence import TICK, due_runs
from hub.domain.schedules import Overlap, Schedule, ScheduleState, run_job_id
from hub.domain.twin import isoformat
from hub.engine.metrics import SCHEDULE_RUNS
from hub.engine.schedules.service import ScheduleService, ScheduleStores
from hub.errors import (
    BadRequestError,
    ConcurrencyConflictError,
    JobAlreadyExistsError,
    ScheduleNotFoundError,
    ServiceUnavailableError,
)
from hub.ports import EventBroker

__all__ = ["DEFAULT_GRACE_SECONDS", "Scheduler"]

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 600


class Scheduler:
    """A schedule changed (ScheduleChanged): it looks at once, not at its next poll."""

    def __init__(
        self,
        service: ScheduleService,
        store: ScheduleStores,
        clock: Clock,
        events: EventBroker,
        *,
        node_id: str,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        batch_size: int = 100,
    ) -> None:
        self._service = service
        self._store = store
        self._clock = clock
        self._node_id = node_id
        self._grace = timedelta(seconds=grace_seconds)
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        events.subscribe(self._schedule_changed, [ScheduleChanged])

    def _schedule_changed(self, event: ScheduleChanged) -> None:
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Scheduler]:
        loop = asyncio.create_task(self._loop(), name="scheduler")
        try:
            yield self
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except ServiceUnavailableError:
                log.warning("scheduler waiting: database unavailable")
            except Exception:
                log.exception("scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def tick(self) -> int:
        """One pass over the schedules with work now; returns how many runs it created."""
        now = self._clock.now()
        schedules = await self._store.acquire_due_schedules(
            node_id=self._node_id, now=now, lease_seconds=self._lease_seconds, limit=self._batch_size
        )
        created = 0
        for schedule in schedules:
            try:
                created += await self._handle(schedule, now)
            except ServiceUnavailableError:
                raise
            except Exception:
                # The lease runs out (or this node takes it again) and the schedule is retried.
                log.exception("schedule %s: handling its due run failed", schedule.schedule_id)
        return created

    async def _handle(self, schedule: Schedule, now: datetime) -> int:
        schedule_id = schedule.schedule_id
        latest = await self._store.list_schedule_runs(schedule_id, limit=1)
        active = latest[0] if latest and not latest[0].status.is_terminal else None
        run_time = schedule.queued_run_time
        updated = replace(schedule, queued_run_time=None)
        if (
            schedule.state is ScheduleState.ENABLED
            and schedule.next_run_time is not None
            and schedule.next_run_time <= now
        ):
            # Every run time before next_run_time was handled already.
            due = due_runs(
                schedule.recurrence,
                schedule.time_zone,
                schedule.next_run_time - TICK,
                now,
                self._grace,
                schedule.run_count,
            )
            if due.missed_time is not None:
                SCHEDULE_RUNS.labels("missed").inc()
                log.warning(
                    "schedule %s: run at %s missed by more than the %d s grace period; not run",
                    schedule_id,
                    isoformat(due.missed_time),
                    int(self._grace.total_seconds()),
                )
            if due.run_time is not None:
                run_time = due.run_time  # a queued run and a due one make one run
        if active is not None and run_time is not None and active.job_id == run_job_id(schedule_id, run_time):
            active = None  # the run itself, created before a crash: not an overlap
        if run_time is not None and active is not None:
            SCHEDULE_RUNS.labels("queued" if schedule.overlap is Overlap.QUEUE else "skipped").inc()
            if schedule.overlap is Overlap.QUEUE:
                updated = replace(updated, queued_run_time=run_time)
                log.info(
                    "schedule %s: run at %s queued until run %s ends", schedule_id, isoformat(run_time), active.job_id
                )
            else:
                message = (
                    f"run at {isoformat(run_time)} of schedule {schedule_id} skipped: the previous run is still active"
                )
                log.info("%s (job %s)", message, active.job_id)
                await self._store.add_job_events(
                    [
                        JobEvent(
                            active.job_id,
                            now,
                            JobEventKind.NOTE,
                            message,
                            data={"scheduleId": schedule_id, "runTime": isoformat(run_time)},
                        )
                    ]
                )
            run_time = None
        job_id: str | None = None
        if run_time is not None:
            try:
                job_id = (await self._service.create_run(schedule, run_time)).job_id
                SCHEDULE_RUNS.labels("created").inc()
            except JobAlreadyExistsError:
                # This node (or another) created it and stopped before recording it.
                job_id = run_job_id(schedule_id, run_time)
                log.info("schedule %s: run %s exists already; counted as done", schedule_id, job_id)
            except BadRequestError as exc:
                reason = f"the run at {isoformat(run_time)} could not be created: {exc.message}"
                log.error("schedule %s faulted: %s", schedule_id, reason)
                updated = updated.faulted(reason)
                SCHEDULE_RUNS.labels("faulted").inc()
        if job_id is not None and run_time is not None:
            updated = updated.with_run(run_time, job_id)
        updated = replace(updated.advanced(now), acquired_by=None, acquired_until=None)
        try:
            await self._store.update_schedule(updated, expected_revision=schedule.revision)
        except ScheduleNotFoundError:
            pass  # deleted meanwhile; its run, if any, stays as a job
        except ConcurrencyConflictError:
            # Replaced, enabled or disabled meanwhile: keep that, but count the run made.
            await self._record_after_race(schedule_id, run_time, job_id)
        return 0 if job_id is None else 1

    async def _record_after_race(self, schedule_id: str, run_time: datetime | None, job_id: str | None) -> None:
        def record(current: Schedule) -> Schedule:
            if job_id is not None and run_time is not None:
                current = current.with_run(run_time, job_id)
            if current.acquired_by == self._node_id:
                current = replace(current, acquired_by=None, acquired_until=None)
            return current

        with contextlib.suppress(ScheduleNotFoundError):
            await self._service.change(schedule_id, record)
