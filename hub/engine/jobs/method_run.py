"""A direct-method job's run: calls through a window, pacing, retries, abort, offline devices."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import datetime
from typing import Any

from hub.domain.jobs import DeviceJob, DeviceJobStatus, Job, JobEvent, JobEventKind
from hub.domain.json import JsonObject
from hub.domain.methods import MethodRequest
from hub.domain.rollout import RetryOn, decide_retry, retry_kind
from hub.engine.jobs.gate import TIMED_OUT_CODES, AbortTally, RolloutGate
from hub.engine.jobs.results import device_result
from hub.engine.jobs.runs import (
    JobRun,
    JobRunContext,
    RunEnd,
    add_matching_devices,
    device_error,
    timed_out_error,
)
from hub.engine.metrics import RETRIES
from hub.errors import (
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceReplyError,
    GatewayTimeoutError,
    ServiceUnavailableError,
    ThrottledError,
)

__all__ = ["THROTTLED_RETRY_SECONDS", "MethodJobRun"]

THROTTLED_RETRY_SECONDS = 0.5


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
        (self._queue.put_nowait if self._ctx.router.is_connected(device_id) else self._waiting.add)(device_id)

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
            self._end_devices(sorted(self._unfinished), DeviceJobStatus.FAILED, timed_out_error(self.job))
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
            self._end_devices(sorted(self._unfinished), DeviceJobStatus.FAILED, timed_out_error(self.job))

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
            if not self._ctx.router.is_connected(device_id):
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
            result = await self._ctx.router.invoke_method(device_id, self._request)
        except (DeviceNotOnlineError, ServiceUnavailableError) as exc:
            self._in_flight.discard(device_id)
            error = device_error(exc.code, exc.message)
            if self._retry is None:
                # Gone before it answered: it waits for its next connection like any offline device.
                writer.put(device_result(job, device_id, DeviceJobStatus.PENDING, clock.now()))
                self._waiting.add(device_id)
                if self._ctx.router.is_connected(device_id):
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
            error = device_error(exc.code, exc.message)
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
