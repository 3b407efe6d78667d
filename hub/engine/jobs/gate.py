"""The running side of a job's rollout control: the gate every device start passes (rate,
ramp, concurrency) and the tally that abort criteria are judged on. The rules themselves are
pure and live in hub.domain.rollout; this module adds waiting and counting."""

from __future__ import annotations

import asyncio

from hub.domain.clock import Clock
from hub.domain.jobs import DeviceJob, DeviceJobStatistics, DeviceJobStatus
from hub.domain.json import JsonObject
from hub.domain.rollout import (
    AbortConfig,
    AbortCounts,
    AbortVerdict,
    Pacer,
    RolloutConfig,
    RolloutProgress,
    evaluate_abort,
)

__all__ = ["TIMED_OUT_CODES", "AbortTally", "RolloutGate", "failure_is_timeout"]

# What abort's failureType "timedOut" counts: the device did not answer in time, or the job's
# deadline came first.
TIMED_OUT_CODES = frozenset({"GatewayTimeout", "JobTimedOut"})


def failure_is_timeout(error: JsonObject | None) -> bool:
    return error is not None and error.get("code") in TIMED_OUT_CODES


class RolloutGate:
    """Admits device starts one at a time, in the order they ask.

    A first attempt at a device spends a token of the rate (``maxPerMinute`` or the ramp in
    force at the current counts); a retry does not, since its back-off already spaces it. Both
    take one of ``maxConcurrency`` slots, given back by ``finished``. Without a rollout
    configuration the gate only counts."""

    def __init__(self, rollout: RolloutConfig | None, clock: Clock, *, notified: int = 0, succeeded: int = 0) -> None:
        self._rollout = rollout
        self._clock = clock
        self._pacer = Pacer.begin(rollout, clock.monotonic())
        self.notified = notified
        self.succeeded = succeeded
        self.in_flight = 0
        self._lock = asyncio.Lock()
        self._slot_freed = asyncio.Event()

    def resume(self, stats: DeviceJobStatistics) -> None:
        """Take the counts from a job's stored records (a job resumed after a restart): every
        device that is not pending was notified."""
        self.notified = stats.device_count - stats.pending_count
        self.succeeded = stats.succeeded_count

    @property
    def progress(self) -> RolloutProgress:
        return RolloutProgress(self.notified, self.succeeded, self.in_flight)

    async def admit(self, *, first_attempt: bool) -> None:
        """Wait until one more device may start, and count it as started (in flight)."""
        if self._rollout is None:
            self._started(first_attempt)
            return
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                allowance = self._pacer.allowance(now, self.progress)
                if allowance.concurrency_full:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                if not first_attempt or allowance.may_start is None or allowance.may_start > 0:
                    if first_attempt and allowance.may_start is not None:
                        self._pacer = self._pacer.started(now, self.progress)
                    self._started(first_attempt)
                    return
                assert allowance.next_start_at is not None  # a rate applies when may_start is 0
                await self._clock.sleep(max(0.0, allowance.next_start_at - now))

    def _started(self, first_attempt: bool) -> None:
        self.in_flight += 1
        if first_attempt:
            self.notified += 1

    def finished(self, *, succeeded: bool = False) -> None:
        """A started device's attempt ended (``succeeded``: the device completed)."""
        self.in_flight -= 1
        if succeeded:
            self.succeeded += 1
        self._slot_freed.set()

    def withdrawn(self, *, first_attempt: bool) -> None:
        """An admitted start did not happen after all (the device went offline meanwhile):
        its slot is given back, and a first attempt is not counted as notified."""
        self.in_flight -= 1
        if first_attempt:
            self.notified -= 1
        self._slot_freed.set()


class AbortTally:
    """Final device outcomes of one job, judged against its abort criteria after each one."""

    def __init__(self, config: AbortConfig | None) -> None:
        self._config = config
        self.executed = 0
        self.failed = 0
        self.timed_out = 0

    @property
    def enabled(self) -> bool:
        return self._config is not None

    def count_stored(self, records: list[DeviceJob]) -> None:
        """Count records already final (a job resumed after a restart)."""
        for record in records:
            if record.status is DeviceJobStatus.COMPLETED:
                self.record(succeeded=True)
            elif record.status is DeviceJobStatus.FAILED:
                self.record(succeeded=False, timed_out=failure_is_timeout(record.error))

    def record(self, *, succeeded: bool, timed_out: bool = False) -> AbortVerdict | None:
        """Count one final outcome; the criterion it trips, if any."""
        self.executed += 1
        if timed_out:
            self.timed_out += 1
        elif not succeeded:
            self.failed += 1
        return self.verdict()

    def verdict(self) -> AbortVerdict | None:
        return evaluate_abort(self._config, AbortCounts(self.executed, self.failed, self.timed_out))
