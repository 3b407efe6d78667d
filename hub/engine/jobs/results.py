"""Per-device job results and job events, written in batches: one transaction per flush,
never one per device. Every running job on a node shares one writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from hub.domain.jobs import DeviceJob, DeviceJobStatus, Job, JobEvent, JobEventKind
from hub.domain.json import JsonObject
from hub.engine.metrics import DEVICE_RESULTS
from hub.errors import ServiceUnavailableError
from hub.ports import JobStore

__all__ = ["ResultWriter", "device_result"]

log = logging.getLogger(__name__)

_RETRY_SECONDS = 1.0


def device_result(
    job: Job,
    device_id: str,
    status: DeviceJobStatus,
    now: datetime,
    *,
    start_time: datetime | None = None,
    outcome: JsonObject | None = None,
    error: JsonObject | None = None,
    attempts: int | None = None,
) -> DeviceJob:
    """A device record update; terminal statuses get ``end_time = now``; ``attempts`` None
    leaves the stored count as it is."""
    return DeviceJob(
        job.job_id,
        device_id,
        job.job_type,
        status,
        created_time=now,  # not written by update_device_jobs; the record keeps its own
        last_updated_time=now,
        start_time=start_time,
        end_time=now if status.is_terminal else None,
        outcome=outcome,
        error=error,
        attempts=attempts,
    )


class ResultWriter:
    """Collects device record updates (the latest per device wins) and events, and writes
    them every ``interval`` seconds or as soon as ``max_batch`` are waiting.

    ``flush`` writes everything put before it was called; flushes never overlap, so updates
    reach the store in the order they were put. While the database is unavailable the
    updates are kept and written when it returns."""

    def __init__(self, store: JobStore, *, interval: float = 0.1, max_batch: int = 2000) -> None:
        self._store = store
        self._interval = interval
        self._max_batch = max_batch
        self._updates: dict[tuple[str, str], DeviceJob] = {}
        self._events: list[JobEvent] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._full = asyncio.Event()

    @property
    def waiting(self) -> int:
        return len(self._updates) + len(self._events)

    def put(self, update: DeviceJob) -> None:
        if update.status.is_terminal:
            DEVICE_RESULTS.labels(update.job_type.value, update.status.value).inc()
        self._updates[(update.job_id, update.device_id)] = update
        self._signal()

    def event(self, event: JobEvent) -> None:
        self._events.append(event)
        self._signal()

    def device_failed(
        self, job: Job, device_id: str, now: datetime, error: JsonObject, *, attempts: int | None = None
    ) -> None:
        """A failed device's record and its entry in the job's log."""
        self.put(device_result(job, device_id, DeviceJobStatus.FAILED, now, error=error, attempts=attempts))
        description = str(error.get("description") or error.get("code"))
        self.event(JobEvent(job.job_id, now, JobEventKind.DEVICE_FAILED, description, device_id=device_id, data=error))

    def _signal(self) -> None:
        self._wake.set()
        if self.waiting >= self._max_batch:
            self._full.set()

    async def flush(self) -> None:
        async with self._lock:
            updates, self._updates = self._updates, {}
            events, self._events = self._events, []
            self._full.clear()
            try:
                if updates:
                    await self._store.update_device_jobs(list(updates.values()))
                    updates = {}
                if events:
                    await self._store.add_job_events(events)
            except BaseException:
                # Put back what was not written, behind nothing newer for the same device.
                for key, update in updates.items():
                    self._updates.setdefault(key, update)
                self._events[:0] = events
                raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._full.wait()
            try:
                await self.flush()
            except ServiceUnavailableError:
                log.warning("job results not written yet: database unavailable; retrying")
                self._wake.set()
                await asyncio.sleep(_RETRY_SECONDS)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ResultWriter]:
        task = asyncio.create_task(self._run(), name="job-results")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            try:
                await self.flush()
            except ServiceUnavailableError:
                log.warning("%d job results not written at shutdown: database unavailable", self.waiting)
