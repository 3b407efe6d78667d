"""The rollout gate and abort tally on a virtual clock: exact start times, no real waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from hub.domain.jobs import DeviceJob, DeviceJobStatus, JobType
from hub.domain.rollout import (
    AbortConfig,
    AbortCriterion,
    ExponentialRate,
    FailureType,
    RateIncreaseCriterion,
    RolloutConfig,
)
from hub.engine.jobs.gate import AbortTally, RolloutGate, failure_is_timeout

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class VirtualClock:
    def __init__(self) -> None:
        self.elapsed = 0.0

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.elapsed += max(0.0, seconds)
        await asyncio.sleep(0)


async def _admit_times(gate: RolloutGate, clock: VirtualClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await gate.admit(first_attempt=True)
        times.append(round(clock.elapsed, 6))
        gate.finished(succeeded=True)
    return times


async def test_without_rollout_the_gate_only_counts() -> None:
    clock = VirtualClock()
    gate = RolloutGate(None, clock)
    assert await _admit_times(gate, clock, 3) == [0.0, 0.0, 0.0]
    assert (gate.notified, gate.succeeded, gate.in_flight) == (3, 3, 0)


async def test_a_constant_rate_starts_one_per_interval_without_a_burst() -> None:
    clock = VirtualClock()
    gate = RolloutGate(RolloutConfig(max_per_minute=120), clock)
    assert await _admit_times(gate, clock, 4) == [0.0, 0.5, 1.0, 1.5]


async def test_a_ramp_steps_up_on_notified_devices() -> None:
    clock = VirtualClock()
    ramp = ExponentialRate(60, 2.0, RateIncreaseCriterion.NOTIFIED, 2)
    gate = RolloutGate(RolloutConfig(exponential_rate=ramp), clock)
    assert await _admit_times(gate, clock, 6) == [0.0, 1.0, 1.5, 2.0, 2.25, 2.5]


async def test_a_resumed_ramp_starts_where_the_counts_left_it() -> None:
    clock = VirtualClock()
    ramp = ExponentialRate(60, 2.0, RateIncreaseCriterion.SUCCEEDED, 2)
    gate = RolloutGate(RolloutConfig(exponential_rate=ramp), clock, notified=5, succeeded=4)
    # 4 succeeded: two steps up, 240 a minute; the sixth success makes it 480.
    assert await _admit_times(gate, clock, 3) == [0.0, 0.25, 0.375]


async def test_retries_skip_the_rate_but_not_the_concurrency() -> None:
    clock = VirtualClock()
    gate = RolloutGate(RolloutConfig(max_per_minute=1, max_concurrency=1), clock)
    await gate.admit(first_attempt=True)
    waiter = asyncio.create_task(gate.admit(first_attempt=False))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # the one slot is taken
    gate.finished()
    await waiter
    assert clock.elapsed == 0.0  # no rate token was needed
    assert (gate.notified, gate.in_flight) == (1, 1)


async def test_a_withdrawn_start_gives_back_its_slot_and_count() -> None:
    clock = VirtualClock()
    gate = RolloutGate(RolloutConfig(max_concurrency=1), clock)
    await gate.admit(first_attempt=True)
    gate.withdrawn(first_attempt=True)
    assert (gate.notified, gate.in_flight) == (0, 0)
    await asyncio.wait_for(gate.admit(first_attempt=True), 1)


def _record(status: DeviceJobStatus, code: str | None = None) -> DeviceJob:
    error = None if code is None else {"code": code, "description": code}
    return DeviceJob("job", f"d-{code}-{status}", JobType.DEVICE_METHOD, status, T0, T0, error=error)


@pytest.mark.parametrize(
    ("code", "timed_out"), [("GatewayTimeout", True), ("JobTimedOut", True), ("DeviceNotOnline", False), (None, False)]
)
def test_timeouts_are_gateway_and_job_timeouts(code: str | None, timed_out: bool) -> None:
    error = None if code is None else {"code": code}
    assert failure_is_timeout(error) is timed_out


def test_the_tally_resumes_from_stored_records_and_trips() -> None:
    config = AbortConfig((AbortCriterion(FailureType.TIMED_OUT, 50.0, 4),))
    tally = AbortTally(config)
    tally.count_stored(
        [
            _record(DeviceJobStatus.COMPLETED),
            _record(DeviceJobStatus.FAILED, "GatewayTimeout"),
            _record(DeviceJobStatus.FAILED, "DeviceNotFound"),
            _record(DeviceJobStatus.CANCELED),
        ]
    )
    assert (tally.executed, tally.failed, tally.timed_out) == (3, 1, 1)
    assert tally.verdict() is None  # 3 executed, under the minimum of 4
    verdict = tally.record(succeeded=False, timed_out=True)
    assert verdict is not None
    assert (
        verdict.failure_reason == "abort: 50.0% of 4 executed devices timed out (threshold 50%, failureType timedOut)"
    )


def test_a_tally_without_criteria_never_trips() -> None:
    tally = AbortTally(None)
    assert not tally.enabled
    assert all(tally.record(succeeded=False) is None for _ in range(10))
