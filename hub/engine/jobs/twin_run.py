"""A twin update job's run: the patch applied server-side in batches, then pushed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from hub.domain.jobs import DeviceJobStatus, Job, JobEvent, JobEventKind
from hub.domain.json import JsonObject
from hub.domain.rollout import AbortCounts, evaluate_abort
from hub.domain.twin import Twin, apply_twin_patch
from hub.engine.jobs.gate import RolloutGate
from hub.engine.jobs.runs import JobRun, JobRunContext, RunEnd, add_matching_devices, device_error, timed_out_error
from hub.engine.metrics import DEVICE_RESULTS
from hub.errors import HubError, TwinLimitError

__all__ = ["TwinJobRun"]

log = logging.getLogger(__name__)

_TWIN_BATCH = 500


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
                self._end_devices(await self._unfinished_ids(), DeviceJobStatus.FAILED, timed_out_error(self.job))
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
                self._ctx.writer.device_failed(self.job, ids[0], now, device_error(exc.code, exc.message))
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
                if self._ctx.router.is_connected(twin.device_id):
                    await self._push(twin)

    async def _push(self, twin: Twin) -> None:
        assert self._desired is not None
        try:
            await self._ctx.router.push_desired(twin.device_id, self._desired, twin.desired.version)
        except HubError as exc:
            log.debug("desired patch for %s not pushed: %s", twin.device_id, exc)
