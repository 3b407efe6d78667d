"""The job runner: starts jobs at their start time, at most ``max_active_jobs`` at once,
holds a lease on each job it runs, resumes unfinished jobs after a restart, finishes them,
and purges finished jobs after the retention period.

Several hubs may share one database: a job runs on the node holding its lease (taken with
``JobStore.acquire_jobs``, renewed every third of ``lease_seconds``). A node that dies
stops renewing, and another node takes the job over when the lease runs out; a restarted
node with the same ``node_id`` takes its own jobs back at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hub.domain.events import DeviceConnected, DevicesAdded, JobCancelled, JobCreated, TwinChanged
from hub.domain.jobs import Job, JobEvent, JobEventKind, JobStatus, JobType, check_job_transition
from hub.domain.twin import isoformat
from hub.engine.jobs.method_run import MethodJobRun
from hub.engine.jobs.runs import JobRun, JobRunContext, RunEnd, resolve_devices
from hub.engine.jobs.twin_run import TwinJobRun
from hub.engine.metrics import JOBS_FINISHED
from hub.errors import ConcurrencyConflictError, JobNotFoundError, ServiceUnavailableError
from hub.ports import EventBroker

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)

_UPDATE_ATTEMPTS = 20


class _JobEnded(Exception):
    """The job became terminal elsewhere (cancelled) or was deleted."""


class JobRunner:
    """Events make it act at once rather than at its next poll: a job created (look for work)
    or cancelled (its run stops starting devices), a device connected (a method job calls it
    if it waits for it), devices added or a twin changed (continuous jobs look again)."""

    def __init__(
        self,
        ctx: JobRunContext,
        events: EventBroker,
        *,
        node_id: str,
        max_active_jobs: int = 10,
        retention_days: int = 30,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        purge_interval: float = 3600.0,
    ) -> None:
        self._ctx = ctx
        self._node_id = node_id
        self._max_active = max_active_jobs
        self._retention = timedelta(days=retention_days)
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._purge_interval = purge_interval
        self._jobs: dict[str, Job] = {}  # the latest stored row of each job this node runs
        self._runs: dict[str, JobRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._next_renewal = 0.0
        self._next_purge = 0.0
        events.subscribe(self._job_created, [JobCreated])
        events.subscribe(self._job_cancelled, [JobCancelled])
        events.subscribe(self._device_connected, [DeviceConnected])
        events.subscribe(self._fleet_changed, [DevicesAdded, TwinChanged])

    @property
    def active_job_ids(self) -> list[str]:
        return sorted(self._tasks)

    def _job_created(self, event: JobCreated) -> None:
        self._wake.set()

    def _job_cancelled(self, event: JobCancelled) -> None:
        if (run := self._runs.get(event.job_id)) is not None:
            run.cancel()
        self._wake.set()

    def _device_connected(self, event: DeviceConnected) -> None:
        for run in self._runs.values():
            run.device_connected(event.device_id)

    def _fleet_changed(self, event: DevicesAdded | TwinChanged) -> None:
        for run in self._runs.values():
            run.fleet_changed()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[JobRunner]:
        clock = self._ctx.clock
        # The first purge waits a little: start-up is busy enough.
        self._next_purge = clock.monotonic() + min(self._purge_interval, 10.0)
        async with self._ctx.writer.running():
            loop = asyncio.create_task(self._loop(), name="job-runner")
            try:
                yield self
            finally:
                loop.cancel()
                tasks = list(self._tasks.values())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(loop, *tasks, return_exceptions=True)

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except ServiceUnavailableError:
                log.warning("job runner waiting: database unavailable")
            except Exception:
                log.exception("job runner tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def tick(self) -> None:
        """One pass: queue jobs whose start time came, renew leases, start what fits, purge."""
        store, clock, writer = self._ctx.store, self._ctx.clock, self._ctx.writer
        now = clock.now()
        for job in await store.defer_future_jobs(now):
            writer.event(self._status_event(job, f"starts at {isoformat(job.start_time)}; scheduled"))
        for job in await store.promote_due_jobs(now):
            writer.event(self._status_event(job, "start time reached; queued"))
        if clock.monotonic() >= self._next_renewal:
            await self._renew_leases()
            self._next_renewal = clock.monotonic() + self._lease_seconds / 3
        for statuses in ((JobStatus.RUNNING,), (JobStatus.QUEUED,)):
            free = self._max_active - len(self._tasks)
            if free <= 0:
                break
            jobs = await store.acquire_jobs(
                node_id=self._node_id,
                now=clock.now(),
                lease_seconds=self._lease_seconds,
                limit=free,
                statuses=statuses,
                exclude=list(self._tasks),
            )
            for job in jobs:
                self._start(job)
        if clock.monotonic() >= self._next_purge:
            self._next_purge = clock.monotonic() + self._purge_interval
            await self.purge()

    async def purge(self, *, now: datetime | None = None) -> int:
        """Delete jobs that finished more than the retention period before ``now`` (default:
        the clock's now) with their device records and events; return how many."""
        cutoff = (now or self._ctx.clock.now()) - self._retention
        purged = await self._ctx.store.purge_jobs(cutoff)
        if purged:
            log.info("purged %d jobs finished before %s", purged, cutoff.isoformat())
        return purged

    def _start(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._tasks[job.job_id] = asyncio.create_task(self._execute(job.job_id), name=f"job-{job.job_id}")

    async def _renew_leases(self) -> None:
        for job_id in list(self._tasks):
            until = self._ctx.clock.now() + timedelta(seconds=self._lease_seconds)
            with contextlib.suppress(_JobEnded):
                await self._update(job_id, acquired_by=self._node_id, acquired_until=until)

    # -- one job ---------------------------------------------------------------------------

    async def _execute(self, job_id: str) -> None:
        writer = self._ctx.writer
        try:
            job = self._jobs[job_id]
            if job.status is not JobStatus.RUNNING:
                job = await self._update(job_id, status=JobStatus.RUNNING)
                writer.event(self._status_event(job, "job started"))
            if job.device_count == 0:
                # A fresh start, or a crash before the device set was recorded: resolving again
                # keeps the records that exist.
                count = await resolve_devices(self._ctx.store, job, self._ctx.clock.now())
                job = await self._update(job_id, device_count=count)
                writer.event(self._status_event(job, f"{count} devices selected by {job.query_condition!r}"))
            # A run starts from the stored records: write the results this node still holds
            # (kept while the database was away) first, or finished devices would run again.
            await writer.flush()
            run: JobRun = (
                MethodJobRun(job, self._ctx) if job.job_type is JobType.DEVICE_METHOD else TwinJobRun(job, self._ctx)
            )
            self._runs[job_id] = run
            end = await run.run()
            await writer.flush()
            if end is RunEnd.FINISHED:
                await self._finish(job_id)
            elif end is RunEnd.ABORTED and run.abort_verdict is not None:
                await self._finish(job_id, failure_reason=run.abort_verdict.failure_reason)
        except _JobEnded:
            await writer.flush()
        except ServiceUnavailableError:
            # The lease runs out and the job is taken up again when the database is back.
            log.warning("job %s paused: database unavailable", job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed", job_id)
            with contextlib.suppress(Exception):
                await writer.flush()
                job = await self._update(
                    job_id,
                    status=JobStatus.FAILED,
                    end_time=self._ctx.clock.now(),
                    failure_reason=f"internal error: {exc}",
                    acquired_by=None,
                    acquired_until=None,
                )
                writer.event(self._status_event(job, f"job failed: {exc}"))
                JOBS_FINISHED.labels(job.job_type.value, job.status.value, "error").inc()
        finally:
            self._runs.pop(job_id, None)
            self._tasks.pop(job_id, None)
            self._jobs.pop(job_id, None)
            self._wake.set()

    async def _finish(self, job_id: str, *, failure_reason: str | None = None) -> None:
        """The job's run ended: ``completed``, or ``failed`` when an abort criterion tripped
        (``failure_reason`` names it)."""
        stats = await self._ctx.store.count_device_jobs(job_id)
        message = (
            f"{stats.succeeded_count} succeeded, {stats.failed_count} failed, {stats.canceled_count} canceled "
            f"of {stats.device_count}"
        )
        job = await self._update(
            job_id,
            status=JobStatus.COMPLETED if failure_reason is None else JobStatus.FAILED,
            end_time=self._ctx.clock.now(),
            failure_reason=failure_reason,
            status_message=message,
            acquired_by=None,
            acquired_until=None,
        )
        outcome = f"job completed: {message}" if failure_reason is None else f"job failed: {failure_reason}"
        self._ctx.writer.event(self._status_event(job, outcome))
        JOBS_FINISHED.labels(job.job_type.value, job.status.value, "" if failure_reason is None else "abort").inc()

    def _status_event(self, job: Job, message: str) -> JobEvent:
        return JobEvent(
            job.job_id, self._ctx.clock.now(), JobEventKind.STATUS_CHANGED, message, data={"status": job.status.value}
        )

    async def _update(self, job_id: str, **changes: Any) -> Job:
        """Write ``changes`` over the latest row; on a lost race read it again and retry,
        unless the job ended meanwhile (_JobEnded; its run is told to stop)."""
        store = self._ctx.store
        for _ in range(_UPDATE_ATTEMPTS):
            current = self._jobs[job_id]
            if current.status.is_terminal:
                raise _JobEnded(job_id)
            status = changes.get("status", current.status)
            if status is not current.status:
                check_job_transition(current.status, status)
            try:
                stored = await store.update_job(replace(current, **changes), expected_revision=current.revision)
            except ConcurrencyConflictError:
                try:
                    fresh = await store.get_job(job_id)
                except JobNotFoundError:
                    raise _JobEnded(job_id) from None
                self._jobs[job_id] = fresh
                if fresh.status.is_terminal and (run := self._runs.get(job_id)) is not None:
                    run.cancel()
                continue
            except JobNotFoundError:
                raise _JobEnded(job_id) from None
            self._jobs[job_id] = stored
            return stored
        raise ConcurrencyConflictError(f"job {job_id!r} keeps changing; giving up this update")
