"""One job's work on its devices, once it runs: resolving the device set, calling the
method on each device or applying the twin patch in batches, until every device has a
terminal result, the deadline passes or the job is cancelled.

The job's own row (status, lease) is the runner's (hub.engine.jobrunner); a run only
writes device records and events, and reports how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from hub.domain.clock import Clock
from hub.domain.jobs import DeviceJob, DeviceJobStatus, Job, JobEvent, JobEventKind
from hub.domain.json import JsonObject
from hub.domain.methods import MethodRequest
from hub.domain.twin import Twin, apply_twin_patch
from hub.engine.jobresults import ResultWriter, device_result
from hub.engine.methods import MethodService
from hub.engine.ports import DeviceLink, Store
from hub.engine.twins import TwinService
from hub.errors import (
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceReplyError,
    GatewayTimeoutError,
    HubError,
    ServiceUnavailableError,
    ThrottledError,
    TwinLimitError,
)
from hub.query.parser import parse_condition

__all__ = ["JobRun", "JobRunContext", "MethodJobRun", "RunEnd", "TwinJobRun", "resolve_devices"]

log = logging.getLogger(__name__)

_PAGE = 1000
_TWIN_BATCH = 500
THROTTLED_RETRY_SECONDS = 0.5


class RunEnd(Enum):
    FINISHED = "finished"  # every device is terminal (the deadline may have failed some)
    CANCELLED = "cancelled"  # the job was cancelled while running
    STOPPED = "stopped"  # the hub is stopping; the job resumes on the next start


@dataclass(frozen=True, slots=True)
class JobRunContext:
    store: Store
    clock: Clock
    writer: ResultWriter
    link: DeviceLink
    methods: MethodService
    twins: TwinService
    call_window: int = 1000


def _error(code: str, description: str) -> JsonObject:
    return {"code": code, "description": description}


def _timed_out(job: Job) -> JsonObject:
    return _error("JobTimedOut", f"the job's maximum execution time ({job.max_execution_seconds} s) ran out")


async def resolve_devices(store: Store, job: Job, now: datetime) -> int:
    """Add a pending record for every device the job's condition selects, a page at a time.
    Records that exist already are kept, so resolving again after a crash is harmless.
    Returns how many devices the job has."""
    condition = parse_condition(job.query_condition)
    after: str | None = None
    while True:
        ids = await store.query_device_ids(condition, after=after, limit=_PAGE)
        if ids:
            await store.add_device_jobs(
                [DeviceJob(job.job_id, d, job.job_type, DeviceJobStatus.PENDING, now, now) for d in ids]
            )
        if len(ids) < _PAGE:
            break
        after = ids[-1]
    return (await store.count_device_jobs(job.job_id)).device_count


class JobRun:
    """The common part: cancellation, the deadline, and the set of unfinished devices."""

    def __init__(self, job: Job, ctx: JobRunContext) -> None:
        self.job = job
        self._ctx = ctx
        self._cancelled = asyncio.Event()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def cancel(self) -> None:
        """The job was cancelled: start nothing new; calls in flight finish."""
        self._cancelled.set()

    def device_connected(self, device_id: str) -> None:
        """A device connected (method jobs call waiting devices then)."""

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

    async def run(self) -> RunEnd:
        raise NotImplementedError


class MethodJobRun(JobRun):
    """Connected devices are called at once through a window of ``call_window`` calls in
    flight; offline devices wait and are called when they connect. A device that drops
    before answering waits again. At the deadline every unfinished device fails with
    JobTimedOut; on cancel the calls in flight finish and the rest are canceled."""

    def __init__(self, job: Job, ctx: JobRunContext) -> None:
        super().__init__(job, ctx)
        assert job.method is not None
        # The job waits for offline devices itself; a single call never waits to connect.
        self._request: MethodRequest = replace(job.method, connect_timeout=0)
        self._unfinished: set[str] = set()
        self._waiting: set[str] = set()
        self._in_flight: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._done = asyncio.Event()
        self._accepting = False

    def device_connected(self, device_id: str) -> None:
        if self._accepting and device_id in self._waiting:
            self._waiting.discard(device_id)
            self._queue.put_nowait(device_id)

    async def run(self) -> RunEnd:
        link = self._ctx.link
        for device_id in await self._unfinished_ids():
            self._unfinished.add(device_id)
            # No await between the check and the set: a connect is seen here or in device_connected.
            (self._queue.put_nowait if link.is_connected(device_id) else self._waiting.add)(device_id)
        self._accepting = True
        if not self._unfinished:
            return RunEnd.FINISHED
        workers = [
            asyncio.create_task(self._worker(), name=f"job-{self.job_id}-call")
            for _ in range(min(self._ctx.call_window, len(self._unfinished)))
        ]
        cancelled = asyncio.create_task(self._cancelled.wait())
        done = asyncio.create_task(self._done.wait())
        try:
            await asyncio.wait(
                {cancelled, done}, timeout=max(0.0, self._seconds_left()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._accepting = False
            cancelled.cancel()
            done.cancel()
        try:
            if self._done.is_set():
                return RunEnd.FINISHED
            if self._cancelled.is_set():
                await self._finish_cancelled(workers)
                return RunEnd.CANCELLED
            await self._stop_workers(workers)
            self._end_devices(sorted(self._unfinished), DeviceJobStatus.FAILED, _timed_out(self.job))
            self._unfinished.clear()
            return RunEnd.FINISHED
        finally:
            await self._stop_workers(workers)

    async def _finish_cancelled(self, workers: list[asyncio.Task[None]]) -> None:
        self._queue = asyncio.Queue()  # nothing queued is started
        idle = self._unfinished - self._in_flight
        # The cancel marked pending records canceled; records left running by a crash are ours.
        self._end_devices(sorted(idle), DeviceJobStatus.CANCELED, None)
        self._unfinished -= idle
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(self._seconds_left(), self._request.response_timeout + 1))):
                    await self._done.wait()
        await self._stop_workers(workers)
        if self._unfinished:
            self._end_devices(sorted(self._unfinished), DeviceJobStatus.FAILED, _timed_out(self.job))

    async def _stop_workers(self, workers: list[asyncio.Task[None]]) -> None:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            device_id = await self._queue.get()
            if self._cancelled.is_set() or device_id not in self._unfinished:
                continue
            await self._call(device_id)

    def _finished(self, device_id: str) -> None:
        self._unfinished.discard(device_id)
        if not self._unfinished:
            self._done.set()

    async def _call(self, device_id: str) -> None:
        clock, writer, job = self._ctx.clock, self._ctx.writer, self.job
        started = clock.now()
        self._in_flight.add(device_id)
        writer.put(device_result(job, device_id, DeviceJobStatus.RUNNING, started, start_time=started))
        try:
            result = await self._ctx.methods.invoke(device_id, self._request)
        except (DeviceNotOnlineError, ServiceUnavailableError):
            # Gone before it answered: it waits for its next connection like any offline device.
            writer.put(device_result(job, device_id, DeviceJobStatus.PENDING, clock.now()))
            self._in_flight.discard(device_id)
            self._waiting.add(device_id)
            if self._ctx.link.is_connected(device_id):
                self.device_connected(device_id)
            return
        except ThrottledError:
            # The device already has its fill of calls in flight (others' direct calls): this
            # worker waits a moment and queues it again; the deadline still bounds it.
            self._in_flight.discard(device_id)
            writer.put(device_result(job, device_id, DeviceJobStatus.PENDING, clock.now()))
            await asyncio.sleep(THROTTLED_RETRY_SECONDS)
            self._queue.put_nowait(device_id)
            return
        except (GatewayTimeoutError, DeviceNotFoundError, DeviceReplyError) as exc:
            self._in_flight.discard(device_id)
            writer.device_failed(job, device_id, clock.now(), _error(exc.code, exc.message))
            self._finished(device_id)
            return
        except BaseException:
            self._in_flight.discard(device_id)
            raise
        self._in_flight.discard(device_id)
        now = clock.now()
        outcome: JsonObject = {"deviceMethodResponse": {"status": result.status, "payload": result.payload}}
        if 200 <= result.status < 300:
            writer.put(
                device_result(job, device_id, DeviceJobStatus.COMPLETED, now, start_time=started, outcome=outcome)
            )
        else:
            writer.put(device_result(job, device_id, DeviceJobStatus.FAILED, now, start_time=started, outcome=outcome))
            description = f"the device answered {job.method.method_name if job.method else ''} with {result.status}"
            writer.event(
                JobEvent(job.job_id, now, JobEventKind.DEVICE_FAILED, description, device_id=device_id, data=outcome)
            )
        self._finished(device_id)


class TwinJobRun(JobRun):
    """The patch is applied server-side in batches (one transaction each, records completed
    in the same transaction), then pushed to the devices that are connected."""

    def __init__(self, job: Job, ctx: JobRunContext) -> None:
        super().__init__(job, ctx)
        patch = job.twin_patch or {}
        tags = patch.get("tags")
        properties = patch.get("properties")
        desired = properties.get("desired") if isinstance(properties, dict) else None
        self._tags: JsonObject | None = tags if isinstance(tags, dict) else None
        self._desired: JsonObject | None = desired if isinstance(desired, dict) else None

    def _change(self, now: datetime) -> Callable[[Twin], Twin]:
        # JobRequest.create validated the patch (validate_twin_patch).
        return lambda twin: apply_twin_patch(twin, self._tags, self._desired, now, validated=True)

    async def run(self) -> RunEnd:
        store = self._ctx.store
        while True:
            if self._cancelled.is_set():
                self._end_devices(await self._unfinished_ids(), DeviceJobStatus.CANCELED, None)
                return RunEnd.CANCELLED
            if self._seconds_left() <= 0:
                self._end_devices(await self._unfinished_ids(), DeviceJobStatus.FAILED, _timed_out(self.job))
                return RunEnd.FINISHED
            ids = await store.pending_device_ids(self.job_id, limit=_TWIN_BATCH, include_running=True)
            if not ids:
                return RunEnd.FINISHED
            await self._apply(ids)

    async def _apply(self, ids: list[str]) -> None:
        now = self._ctx.clock.now()
        try:
            batch = await self._ctx.store.complete_twin_job_batch(self.job_id, ids, self._change(now), now)
        except TwinLimitError as exc:
            if len(ids) == 1:
                self._ctx.writer.device_failed(self.job, ids[0], now, _error(exc.code, exc.message))
                await self._ctx.writer.flush()  # before the next page is read
                return
            # Some twin would grow past a limit: apply one by one so only those devices fail.
            for device_id in ids:
                await self._apply([device_id])
            return
        writer = self._ctx.writer
        for device_id in batch.missing:
            description = f"device {device_id!r} no longer exists"
            writer.event(JobEvent(self.job_id, now, JobEventKind.DEVICE_FAILED, description, device_id=device_id))
        if self._desired:
            for twin in batch.twins:
                if self._ctx.link.is_connected(twin.device_id):
                    await self._push(twin)

    async def _push(self, twin: Twin) -> None:
        assert self._desired is not None
        try:
            await self._ctx.twins.push_desired(twin.device_id, self._desired, twin.desired.version)
        except HubError as exc:
            log.debug("desired patch for %s not pushed: %s", twin.device_id, exc)
