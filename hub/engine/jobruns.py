"""One job's work on its devices, once it runs: resolving the device set, calling the
method on each device or applying the twin patch in batches, until every device has a
terminal result, the deadline passes or the job is cancelled.

The job's own row (status, lease) is the runner's (hub.engine.jobrunner); a run only
writes device records and events, and reports how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any

from hub.domain.clock import Clock
from hub.domain.jobs import DeviceJob, DeviceJobStatus, Job, JobEvent, JobEventKind
from hub.domain.json import JsonObject
from hub.domain.methods import MethodRequest
from hub.domain.rollout import AbortCounts, AbortVerdict, RetryOn, decide_retry, evaluate_abort, retry_kind
from hub.domain.twin import Twin, apply_twin_patch
from hub.engine.jobresults import ResultWriter, device_result
from hub.engine.methods import MethodService
from hub.engine.metrics import DEVICE_RESULTS, RETRIES
from hub.engine.ports import DeviceLink, Store
from hub.engine.rolloutgate import TIMED_OUT_CODES, AbortTally, RolloutGate
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
_MIN_LOOK_GAP = 0.2  # seconds between a continuous job's looks at its query, at the least


class RunEnd(Enum):
    FINISHED = "finished"  # every device is terminal (the deadline may have failed some)
    CANCELLED = "cancelled"  # the job was cancelled while running
    ABORTED = "aborted"  # an abort criterion tripped (JobRun.abort_verdict says which)
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
    continuous_interval: float = 10.0  # a continuous job looks at least this often (and on changes)


def _error(code: str, description: str) -> JsonObject:
    return {"code": code, "description": description}


def _timed_out(job: Job) -> JsonObject:
    return _error("JobTimedOut", f"the job's maximum execution time ({job.max_execution_seconds} s) ran out")


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


class MethodJobRun(JobRun):
    """Connected devices are called at once through a window of ``call_window`` calls in
    flight; offline devices wait and are called when they connect. A device that drops
    before answering waits again. At the deadline every unfinished device fails with
    JobTimedOut; on cancel the calls in flight finish and the rest are canceled.

    The job's controls (hub.domain.rollout) shape this: every start passes the rollout gate;
    with a retry policy each call is an attempt, and the policy decides what happens after
    one that did not succeed (a later attempt after the back-off, or the device fails with
    that outcome); an abort criterion that trips ends the job like a cancel, as ``failed``;
    a continuous job also takes devices that come to match its query, until its deadline."""

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
        controls = job.controls
        self._retry = controls.retry
        self._attempts: dict[str, int] = {}  # calls made per device, kept with a retry policy
        self._gate = RolloutGate(controls.rollout, ctx.clock)
        self._tally = AbortTally(controls.abort)
        self._timers: set[asyncio.Task[None]] = set()

    def device_connected(self, device_id: str) -> None:
        if self._accepting and device_id in self._waiting:
            self._waiting.discard(device_id)
            self._queue.put_nowait(device_id)

    def _enqueue(self, device_id: str) -> None:
        # No await between the check and the set: a connect is seen here or in device_connected.
        (self._queue.put_nowait if self._ctx.link.is_connected(device_id) else self._waiting.add)(device_id)

    async def run(self) -> RunEnd:
        await self._resume_counts()
        for device_id in await self._unfinished_ids():
            self._unfinished.add(device_id)
            self._enqueue(device_id)
        self._accepting = True
        continuous = self.job.controls.continuous
        if not self._unfinished and not continuous:
            return RunEnd.FINISHED
        window = self._ctx.call_window if continuous else min(self._ctx.call_window, len(self._unfinished))
        workers = [asyncio.create_task(self._worker(), name=f"job-{self.job_id}-call") for _ in range(window)]
        if continuous:
            workers.append(asyncio.create_task(self._follow_query(), name=f"job-{self.job_id}-follow"))
        cancelled = asyncio.create_task(self._cancelled.wait())
        done = asyncio.create_task(self._done.wait())
        try:
            # A continuous job runs to its deadline even when every device it has is done.
            await asyncio.wait(
                {cancelled} if continuous else {cancelled, done},
                timeout=max(0.0, self._seconds_left()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self._accepting = False
            cancelled.cancel()
            done.cancel()
        try:
            # A criterion that trips on the last device still fails the job: its threshold was crossed.
            if self._cancelled.is_set():
                await self._finish_cancelled(workers)
                return RunEnd.ABORTED if self.abort_verdict is not None else RunEnd.CANCELLED
            if self._done.is_set() and not continuous:
                return RunEnd.FINISHED
            await self._stop_workers(workers)
            self._end_devices(sorted(self._unfinished), DeviceJobStatus.FAILED, _timed_out(self.job))
            self._unfinished.clear()
            return RunEnd.FINISHED
        finally:
            await self._stop_workers(workers)

    async def _resume_counts(self) -> None:
        """After a restart, pick up the counts that pacing, abort and attempts build on."""
        controls = self.job.controls
        if controls.rollout is not None:
            self._gate.resume(await self._ctx.store.count_device_jobs(self.job_id))
        wanted: list[DeviceJobStatus] = []
        if self._tally.enabled:
            wanted += [DeviceJobStatus.COMPLETED, DeviceJobStatus.FAILED]
        if self._retry is not None:
            wanted += [DeviceJobStatus.PENDING, DeviceJobStatus.RUNNING]
        for status in wanted:
            async for records in self._records(status):
                if status.is_terminal:
                    self._tally.count_stored(records)
                else:
                    self._attempts.update((r.device_id, r.attempts) for r in records if r.attempts)

    async def _follow_query(self) -> None:
        """A continuous job: at each look, devices that match the query now and are not yet
        in the job join it."""
        known: set[str] = set()
        while True:
            await self._until_next_look()
            now = self._ctx.clock.now()
            joined = await add_matching_devices(self._ctx.store, self.job, now, known=known)
            if joined and self._accepting:
                self._ctx.writer.event(
                    JobEvent(self.job_id, now, JobEventKind.NOTE, f"{len(joined)} devices joined the job")
                )
                for device_id in joined:
                    self._unfinished.add(device_id)
                    self._enqueue(device_id)

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
        tasks = [*workers, *self._timers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            device_id = await self._queue.get()
            if self._cancelled.is_set() or device_id not in self._unfinished:
                continue
            first = device_id not in self._attempts
            await self._gate.admit(first_attempt=first)
            if self._cancelled.is_set() or device_id not in self._unfinished:
                self._gate.withdrawn(first_attempt=first)
                continue
            if not self._ctx.link.is_connected(device_id):
                # Gone while it waited for the gate: not an attempt; it waits for its connection.
                self._gate.withdrawn(first_attempt=first)
                self._enqueue(device_id)
                continue
            succeeded = False
            try:
                succeeded = await self._call(device_id)
            finally:
                self._gate.finished(succeeded=succeeded)

    def _finished(self, device_id: str, *, succeeded: bool, timed_out: bool = False) -> None:
        self._unfinished.discard(device_id)
        verdict = self._tally.record(succeeded=succeeded, timed_out=timed_out)
        if verdict is not None and self.abort_verdict is None:
            self._record_abort(verdict)
            self._cancelled.set()
        if not self._unfinished:
            self._done.set()

    def _attempt_count(self, device_id: str) -> int | None:
        """What the device's record shows as ``attempts``: None without a retry policy."""
        return self._attempts.get(device_id) if self._retry is not None else None

    def _attempt_result(self, device_id: str, status: DeviceJobStatus, now: datetime, **fields: Any) -> DeviceJob:
        return device_result(self.job, device_id, status, now, attempts=self._attempt_count(device_id), **fields)

    def _retry_later(self, device_id: str, outcome: str | int, error: JsonObject | None) -> bool:
        """After an attempt that did not succeed: True when the retry policy tries again (the
        device waits for its back-off, then for its connection); False when it does not."""
        if self._retry is None or self._cancelled.is_set():
            return False
        attempt = self._attempts.get(device_id, 1)
        decision = decide_retry(self._retry, attempt, outcome, seconds_left=self._seconds_left())
        if not decision.retry:
            return False
        kind = retry_kind(outcome)
        assert kind is not None  # decide_retry retries only outcomes that have a kind
        RETRIES.labels(kind.value).inc()
        now = self._ctx.clock.now()
        self._ctx.writer.put(self._attempt_result(device_id, DeviceJobStatus.PENDING, now, error=error))
        timer = asyncio.create_task(self._after_backoff(device_id, decision.delay_seconds))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)
        return True

    async def _after_backoff(self, device_id: str, delay: float) -> None:
        await self._ctx.clock.sleep(delay)
        if self._accepting and device_id in self._unfinished:
            self._enqueue(device_id)

    async def _call(self, device_id: str) -> bool:
        """One attempt at one device; True when the device completed."""
        clock, writer, job = self._ctx.clock, self._ctx.writer, self.job
        started = clock.now()
        self._in_flight.add(device_id)
        if self._retry is not None:
            self._attempts[device_id] = self._attempts.get(device_id, 0) + 1
        writer.put(self._attempt_result(device_id, DeviceJobStatus.RUNNING, started, start_time=started))
        try:
            result = await self._ctx.methods.invoke(device_id, self._request)
        except (DeviceNotOnlineError, ServiceUnavailableError) as exc:
            self._in_flight.discard(device_id)
            error = _error(exc.code, exc.message)
            if self._retry is None:
                # Gone before it answered: it waits for its next connection like any offline device.
                writer.put(device_result(job, device_id, DeviceJobStatus.PENDING, clock.now()))
                self._waiting.add(device_id)
                if self._ctx.link.is_connected(device_id):
                    self.device_connected(device_id)
            elif not self._retry_later(device_id, RetryOn.DEVICE_NOT_ONLINE.value, error):
                writer.put(self._attempt_result(device_id, DeviceJobStatus.FAILED, clock.now(), error=error))
                self._finished(device_id, succeeded=False)
            return False
        except ThrottledError:
            # The device already has its fill of calls in flight (others' direct calls): this
            # worker waits a moment and queues it again; the deadline still bounds it. Not an
            # attempt: nothing reached the device.
            self._in_flight.discard(device_id)
            if self._retry is not None:
                # Kept at 0, not removed: the device was notified and spent its rate token once.
                self._attempts[device_id] -= 1
            writer.put(self._attempt_result(device_id, DeviceJobStatus.PENDING, clock.now()))
            await clock.sleep(THROTTLED_RETRY_SECONDS)
            self._queue.put_nowait(device_id)
            return False
        except (GatewayTimeoutError, DeviceNotFoundError, DeviceReplyError) as exc:
            self._in_flight.discard(device_id)
            error = _error(exc.code, exc.message)
            if not self._retry_later(device_id, exc.code, error):
                writer.device_failed(job, device_id, clock.now(), error, attempts=self._attempt_count(device_id))
                self._finished(device_id, succeeded=False, timed_out=exc.code in TIMED_OUT_CODES)
            return False
        except BaseException:
            self._in_flight.discard(device_id)
            raise
        self._in_flight.discard(device_id)
        now = clock.now()
        outcome: JsonObject = {"deviceMethodResponse": {"status": result.status, "payload": result.payload}}
        if 200 <= result.status < 300:
            writer.put(
                self._attempt_result(device_id, DeviceJobStatus.COMPLETED, now, start_time=started, outcome=outcome)
            )
            self._finished(device_id, succeeded=True)
            return True
        if self._retry_later(device_id, result.status, None):
            return False
        writer.put(self._attempt_result(device_id, DeviceJobStatus.FAILED, now, start_time=started, outcome=outcome))
        description = f"the device answered {job.method.method_name if job.method else ''} with {result.status}"
        writer.event(
            JobEvent(job.job_id, now, JobEventKind.DEVICE_FAILED, description, device_id=device_id, data=outcome)
        )
        self._finished(device_id, succeeded=False)
        return False


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
        self._known: set[str] = set()  # a continuous job's devices, as its looks saw them

    def _change(self, now: datetime) -> Callable[[Twin], Twin]:
        # JobRequest.create validated the patch (validate_twin_patch).
        return lambda twin: apply_twin_patch(twin, self._tags, self._desired, now, validated=True)

    async def run(self) -> RunEnd:
        store, controls = self._ctx.store, self.job.controls
        rollout = controls.rollout
        paced = rollout is not None and rollout.rate_per_minute(0, 0) is not None
        batch_size = _TWIN_BATCH
        if rollout is not None and rollout.max_concurrency is not None:
            batch_size = min(batch_size, rollout.max_concurrency)
        gate = RolloutGate(rollout, self._ctx.clock)
        gate.resume(await store.count_device_jobs(self.job_id))
        while True:
            if self._cancelled.is_set():
                self._end_devices(await self._unfinished_ids(), DeviceJobStatus.CANCELED, None)
                return RunEnd.CANCELLED
            if self._seconds_left() <= 0:
                self._end_devices(await self._unfinished_ids(), DeviceJobStatus.FAILED, _timed_out(self.job))
                return RunEnd.FINISHED
            ids = await store.pending_device_ids(self.job_id, limit=1 if paced else batch_size, include_running=True)
            if not ids:
                if not controls.continuous:
                    return RunEnd.FINISHED
                await self._wait_for_joiners()
                continue
            if paced:
                await gate.admit(first_attempt=True)
            await self._apply(ids)
            if paced:
                gate.finished(succeeded=True)
            if controls.abort is not None and await self._check_abort():
                self._end_devices(await self._unfinished_ids(), DeviceJobStatus.CANCELED, None)
                return RunEnd.ABORTED

    async def _wait_for_joiners(self) -> None:
        """A continuous twin job with every device done: wait a while, then look for devices
        that came to match its query (they get pending records and the patch next)."""
        await self._until_next_look()
        if not self._cancelled.is_set() and self._seconds_left() > 0:
            await add_matching_devices(self._ctx.store, self.job, self._ctx.clock.now(), known=self._known)

    async def _check_abort(self) -> bool:
        await self._ctx.writer.flush()
        stats = await self._ctx.store.count_device_jobs(self.job_id)
        # A twin update fails only for a limit or a vanished device; none of that is a timeout.
        counts = AbortCounts(stats.succeeded_count + stats.failed_count, stats.failed_count)
        verdict = evaluate_abort(self.job.controls.abort, counts)
        if verdict is None:
            return False
        self._record_abort(verdict)
        return True

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
        DEVICE_RESULTS.labels(self.job.job_type.value, DeviceJobStatus.COMPLETED.value).inc(len(batch.twins))
        DEVICE_RESULTS.labels(self.job.job_type.value, DeviceJobStatus.FAILED.value).inc(len(batch.missing))
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
