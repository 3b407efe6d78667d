"""What every job run shares: resolving the device set, the deadline, cancellation and the
continuous job's looks. A run calls the method on each device (hub.engine.jobs.method_run)
or applies the twin patch in batches (hub.engine.jobs.twin_run) until every device has a
terminal result, the deadline passes or the job is cancelled.

The job's own row (status, lease) is the runner's (hub.engine.jobs.runner); a run only
writes device records and events, and reports how it ended."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from hub.domain.clock import Clock
from hub.domain.jobs import DeviceJob, DeviceJobStatus, Job, JobEvent, JobEventKind
from hub.domain.json import JsonObject
from hub.domain.rollout import AbortVerdict
from hub.engine.jobs.results import ResultWriter, device_result
from hub.ports import DeviceRouter, Store
from hub.query.parser import parse_condition

__all__ = [
    "JobRun",
    "JobRunContext",
    "RunEnd",
    "add_matching_devices",
    "device_error",
    "resolve_devices",
    "timed_out_error",
]

log = logging.getLogger(__name__)

_PAGE = 1000
_MIN_LOOK_GAP = 0.2  # seconds between a continuous job's looks at its query, at the least


class RunEnd(Enum):
    FINISHED = "finished"  # every device is terminal (the deadline may have failed some)
    CANCELLED = "cancelled"  # the job was cancelled while running
    ABORTED = "aborted"  # an abort criterion tripped (JobRun.abort_verdict says which)
    STOPPED = "stopped"  # the hub is stopping; the job resumes on the next start


@dataclass(frozen=True, slots=True)
class JobRunContext:
    """What a run works with: devices are reached only through ``router``."""

    store: Store
    clock: Clock
    writer: ResultWriter
    router: DeviceRouter
    call_window: int = 1000
    continuous_interval: float = 10.0  # a continuous job looks at least this often (and on changes)


def device_error(code: str, description: str) -> JsonObject:
    """A device record's ``error``: IoT Hub's ``{code, description}``."""
    return {"code": code, "description": description}


def timed_out_error(job: Job) -> JsonObject:
    return device_error("JobTimedOut", f"the job's maximum execution time ({job.max_execution_seconds} s) ran out")


async def add_matching_devices(store: Store, job: Job, now: datetime, *, known: set[str] | None = None) -> list[str]:
    """Add a pending record for every device the job's condition selects, a page at a time;
    return the ids that were not in the job yet. Records that exist already are kept, so
    resolving again after a crash is harmless. ``known``: ids already in the job, skipped
    without a write, and the ids seen here are added to it (a continuous job's later looks)."""
    condition = parse_condition(job.query_condition)
    added: list[str] = []
    after: str | None = None
    while True:
        ids = await store.query_device_ids(condition, after=after, limit=_PAGE)
        fresh = ids if known is None else [d for d in ids if d not in known]
        if fresh:
            existing = await store.add_device_jobs(
                [DeviceJob(job.job_id, d, job.job_type, DeviceJobStatus.PENDING, now, now) for d in fresh]
            )
            added.extend(d for d in fresh if (job.job_id, d) not in existing)
            if known is not None:
                known.update(fresh)
        if len(ids) < _PAGE:
            return added
        after = ids[-1]


async def resolve_devices(store: Store, job: Job, now: datetime) -> int:
    """Add the job's device set (``add_matching_devices``); return how many devices the job has."""
    await add_matching_devices(store, job, now)
    return (await store.count_device_jobs(job.job_id)).device_count


class JobRun:
    """The common part: cancellation, the deadline, and the set of unfinished devices."""

    def __init__(self, job: Job, ctx: JobRunContext) -> None:
        self.job = job
        self._ctx = ctx
        self._cancelled = asyncio.Event()
        self.abort_verdict: AbortVerdict | None = None
        self._fleet_changed = asyncio.Event()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def cancel(self) -> None:
        """The job was cancelled: start nothing new; calls in flight finish."""
        self._cancelled.set()

    def device_connected(self, device_id: str) -> None:
        """A device connected (method jobs call waiting devices then)."""

    def fleet_changed(self) -> None:
        """Devices were added or twins changed: a continuous job looks for new matches now."""
        if self.job.controls.continuous:
            self._fleet_changed.set()

    async def _until_next_look(self) -> None:
        """A continuous job's wait between looks at its query: until the fleet changes, or
        ``continuous_interval`` (changes made through another node are seen then), or the
        job is cancelled; at most one look per ``_MIN_LOOK_GAP`` however busy the fleet is."""
        await asyncio.sleep(_MIN_LOOK_GAP)
        wake = asyncio.ensure_future(self._fleet_changed.wait())
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait(
                {wake, cancelled},
                timeout=max(0.0, min(self._ctx.continuous_interval, self._seconds_left())),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            wake.cancel()
            cancelled.cancel()
        self._fleet_changed.clear()

    def _seconds_left(self) -> float:
        return (self.job.deadline - self._ctx.clock.now()).total_seconds()

    async def _unfinished_ids(self) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        while True:
            page = await self._ctx.store.pending_device_ids(self.job_id, after=after, limit=_PAGE, include_running=True)
            ids.extend(page)
            if len(page) < _PAGE:
                return ids
            after = page[-1]

    def _end_devices(self, device_ids: list[str], status: DeviceJobStatus, error: JsonObject | None) -> None:
        now = self._ctx.clock.now()
        writer = self._ctx.writer
        for device_id in device_ids:
            if error is not None and status is DeviceJobStatus.FAILED:
                writer.put(device_result(self.job, device_id, status, now, error=error))
            else:
                writer.put(device_result(self.job, device_id, status, now))
        if device_ids and error is not None:
            message = f"{len(device_ids)} devices {status}: {error['description']}"
            writer.event(JobEvent(self.job_id, now, JobEventKind.NOTE, message, data={"code": error["code"]}))

    def _record_abort(self, verdict: AbortVerdict) -> None:
        """An abort criterion tripped: remember which, and say so in the job's log."""
        self.abort_verdict = verdict
        message = f"{verdict.failure_reason}: pending devices are canceled"
        self._ctx.writer.event(JobEvent(self.job_id, self._ctx.clock.now(), JobEventKind.NOTE, message))

    async def _records(self, status: DeviceJobStatus) -> AsyncIterator[list[DeviceJob]]:
        after: str | None = None
        while True:
            page = await self._ctx.store.list_device_jobs(self.job_id, status=status, after=after, limit=_PAGE)
            if page:
                yield page
            if len(page) < _PAGE:
                return
            after = page[-1].device_id

    async def run(self) -> RunEnd:
        raise NotImplementedError
