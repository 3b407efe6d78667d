"""The scheduler on a real SQLite store with an injected clock: run times (interval, cron, DST,
month ends), overlap, catch-up after downtime, count, enable/disable, run now, crashes and restarts.

Nothing sleeps: the clock is set by hand and ``Scheduler.tick()`` is called directly. No job
runner runs, so a run stays ``queued`` (active) until a test finishes it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from hub.domain.events import JobCreated
from hub.domain.jobs import JobEventKind, JobStatus
from hub.domain.schedules import ScheduleState
from hub.engine.events import LocalEventBroker
from hub.engine.jobs.service import JobService
from hub.engine.schedules.scheduler import Scheduler
from hub.engine.schedules.service import ScheduleService
from hub.errors import BadRequestError, JobAlreadyExistsError
from hub.storage import SqlStore

START = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)  # a Monday
TEMPLATE: dict[str, Any] = {
    "type": "scheduleDeviceMethod",
    "queryCondition": "*",
    "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"n": 1}},
    "maxExecutionTimeInSeconds": 600,
}


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.current = now
        self._ticks = 0.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        self._ticks += 0.001
        return self._ticks

    def set(self, moment: datetime) -> None:
        assert moment >= self.current, "time only moves forward"
        self.current = moment


@dataclass
class Bench:
    store: SqlStore
    clock: ManualClock
    jobs: JobService
    schedules: ScheduleService
    scheduler: Scheduler
    notified: list[str]

    async def put(self, schedule_id: str, recurrence: dict[str, Any], **fields: Any) -> None:
        await self.schedules.put(schedule_id, {"job": TEMPLATE, "recurrence": recurrence, **fields})

    async def at(self, moment: datetime) -> int:
        """Set the clock and run one scheduler pass."""
        self.clock.set(moment)
        return await self.scheduler.tick()

    async def run_ids(self, schedule_id: str) -> list[str]:
        return sorted(job.job_id for job in await self.store.list_schedule_runs(schedule_id, limit=1000))

    async def finish(self, schedule_id: str) -> None:
        """Complete every run of the schedule that is still active (what the job runner would do)."""
        for job in await self.store.list_schedule_runs(schedule_id, limit=1000):
            if not job.status.is_terminal:
                await self.store.update_job(
                    replace(job, status=JobStatus.COMPLETED, end_time=self.clock.now()), expected_revision=job.revision
                )

    async def follow(self, schedule_id: str, runs: int) -> list[datetime]:
        """Jump from one next run time to the next, finishing each run; the run times created."""
        times: list[datetime] = []
        for _ in range(runs):
            schedule = await self.store.get_schedule(schedule_id)
            assert schedule.next_run_time is not None, f"{schedule_id} has no next run after {times}"
            assert await self.at(schedule.next_run_time) == 1
            ran = await self.store.get_schedule(schedule_id)
            assert ran.last_run_time is not None
            times.append(ran.last_run_time)
            await self.finish(schedule_id)
        return times


def build(store: SqlStore, clock: ManualClock, *, grace: float = 600, node_id: str = "node-a") -> Bench:
    notified: list[str] = []
    events = LocalEventBroker()
    events.subscribe(lambda event: notified.append(event.job_id), [JobCreated])
    jobs = JobService(store, clock, events)
    schedules = ScheduleService(store, clock, jobs, events, run_history=30)
    scheduler = Scheduler(schedules, store, clock, events, node_id=node_id, grace_seconds=grace)
    return Bench(store, clock, jobs, schedules, scheduler, notified)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'scheduler.db'}"


@pytest.fixture
async def bench(db_url: str) -> AsyncIterator[Bench]:
    clock = ManualClock(START)
    async with SqlStore.open(db_url, clock=clock) as store:
        yield build(store, clock)


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


async def test_interval_runs_at_its_times_and_not_between(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute", "interval": 10})
    assert (await bench.store.get_schedule(s)).next_run_time == START
    assert await bench.at(START) == 1
    assert bench.notified == [f"{s}-20260105T080000Z"]
    await bench.finish(s)
    assert await bench.at(START + timedelta(minutes=5)) == 0
    assert await bench.at(START + timedelta(minutes=9, seconds=59)) == 0
    assert await bench.at(START + timedelta(minutes=10, seconds=1)) == 1
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z", f"{s}-20260105T081000Z"]
    stored = await bench.store.get_schedule(s)
    assert stored.next_run_time == START + timedelta(minutes=20)
    assert (stored.run_count, stored.last_run_time, stored.last_run_job_id) == (
        2,
        START + timedelta(minutes=10),
        f"{s}-20260105T081000Z",
    )
    assert (stored.acquired_by, stored.acquired_until) == (None, None)
    job = await bench.store.get_job(f"{s}-20260105T081000Z")
    assert (job.schedule_id, job.status, job.start_time) == (
        s,
        JobStatus.QUEUED,
        START + timedelta(minutes=10, seconds=1),
    )
    assert job.method is not None
    assert job.method.method_name == "reboot"


async def test_cron_weekdays_in_a_time_zone(bench: Bench) -> None:
    s = sid()
    # 09:15:30 Berlin time (08:15:30 UTC in winter) on weekdays; START is Monday 2026-01-05.
    await bench.put(s, {"cron": "30 15 9 * * MON-FRI"}, timeZone="Europe/Berlin")
    times = await bench.follow(s, 6)
    assert times == [
        utc(2026, 1, 5, 8, 15, 30),
        utc(2026, 1, 6, 8, 15, 30),
        utc(2026, 1, 7, 8, 15, 30),
        utc(2026, 1, 8, 8, 15, 30),
        utc(2026, 1, 9, 8, 15, 30),
        utc(2026, 1, 12, 8, 15, 30),  # the weekend is left out
    ]


async def test_daily_wall_clock_time_across_both_dst_changes(bench: Bench) -> None:
    s = sid()
    # 02:30 Berlin every day: on 2026-03-29 02:30 does not exist (runs at 03:00 CEST, the end of
    # the gap); on 2026-10-25 it happens twice (runs once, at the first).
    await bench.put(
        s,
        {"frequency": "day", "startTime": "2026-03-27T02:30:00", "schedule": {"hours": [2], "minutes": [30]}},
        timeZone="Europe/Berlin",
    )
    assert await bench.follow(s, 4) == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]
    await bench.schedules.disable(s)
    bench.clock.set(utc(2026, 10, 23, 12, 0))
    await bench.schedules.enable(s)
    assert await bench.follow(s, 3) == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


async def test_month_end_and_leap_day(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "month", "startTime": "2027-12-31T06:00:00Z", "schedule": {"monthDays": [-1]}})
    bench.clock.set(utc(2027, 12, 1))
    assert await bench.follow(s, 4) == [
        utc(2027, 12, 31, 6),
        utc(2028, 1, 31, 6),
        utc(2028, 2, 29, 6),  # leap year
        utc(2028, 3, 31, 6),
    ]


def _schedule_runs(outcome: str) -> float:
    """The process-wide /metrics counter (hub.engine.metrics), compared before and after."""
    return REGISTRY.get_sample_value("fleethub_schedule_runs_total", {"outcome": outcome}) or 0.0


async def test_overlap_skip_writes_a_note_on_the_active_run(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute"})
    created, skipped = _schedule_runs("created"), _schedule_runs("skipped")
    assert await bench.at(START) == 1
    first = f"{s}-20260105T080000Z"
    with caplog.at_level(logging.INFO, logger="hub.engine.schedules.scheduler"):
        assert await bench.at(START + timedelta(minutes=1)) == 0
    assert (_schedule_runs("created") - created, _schedule_runs("skipped") - skipped) == (1, 1)
    assert await bench.run_ids(s) == [first]
    message = f"run at 2026-01-05T08:01:00.0000000Z of schedule {s} skipped: the previous run is still active"
    notes = [e for e in await bench.jobs.events(first) if e.kind is JobEventKind.NOTE]
    assert [e.message for e in notes] == [f"run of schedule {s}: due at 2026-01-05T08:00:00.0000000Z", message]
    assert message in caplog.text
    stored = await bench.store.get_schedule(s)
    assert (stored.run_count, stored.queued_run_time, stored.next_run_time) == (1, None, START + timedelta(minutes=2))
    await bench.finish(s)
    assert await bench.at(START + timedelta(minutes=2)) == 1
    assert await bench.run_ids(s) == [first, f"{s}-20260105T080200Z"]


async def test_overlap_queue_keeps_one_run_until_the_previous_ends(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute"}, overlap="queue")
    assert await bench.at(START) == 1
    assert await bench.at(START + timedelta(minutes=1)) == 0
    assert (await bench.store.get_schedule(s)).queued_run_time == START + timedelta(minutes=1)
    # A later due run coalesces with the queued one: still one waiting, the latest.
    assert await bench.at(START + timedelta(minutes=2, seconds=5)) == 0
    assert (await bench.store.get_schedule(s)).queued_run_time == START + timedelta(minutes=2)
    assert await bench.at(START + timedelta(minutes=2, seconds=10)) == 0
    await bench.finish(s)
    assert await bench.at(START + timedelta(minutes=2, seconds=20)) == 1
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z", f"{s}-20260105T080200Z"]
    stored = await bench.store.get_schedule(s)
    assert (stored.queued_run_time, stored.run_count, stored.next_run_time) == (
        None,
        2,
        START + timedelta(minutes=3),
    )


async def test_catch_up_after_downtime_is_one_run_never_a_burst(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute"})
    assert await bench.at(START) == 1
    await bench.finish(s)
    # Down for 7 minutes (grace 600 s): one run, for the latest missed time, never seven.
    assert await bench.at(START + timedelta(minutes=7, seconds=30)) == 1
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z", f"{s}-20260105T080700Z"]
    assert (await bench.store.get_schedule(s)).next_run_time == START + timedelta(minutes=8)
    await bench.finish(s)
    # Down for three hours: still one run, the latest (59 s old), not some 180.
    assert await bench.at(utc(2026, 1, 5, 11, 10, 59)) == 1
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z", f"{s}-20260105T080700Z", f"{s}-20260105T111000Z"]


async def test_a_missed_run_beyond_grace_is_dropped(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    s = sid()
    await bench.put(s, {"frequency": "hour"})
    assert await bench.at(START) == 1
    await bench.finish(s)
    with caplog.at_level(logging.WARNING, logger="hub.engine.schedules.scheduler"):
        assert await bench.at(START + timedelta(hours=5, minutes=11)) == 0
    assert "run at 2026-01-05T13:00:00.0000000Z missed by more than the 600 s grace period" in caplog.text
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z"]
    assert (await bench.store.get_schedule(s)).next_run_time == START + timedelta(hours=6)


async def test_count_completes_the_schedule(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "second", "interval": 30, "count": 3})
    await bench.follow(s, 3)
    stored = await bench.store.get_schedule(s)
    assert (stored.state, stored.next_run_time, stored.run_count) == (ScheduleState.COMPLETED, None, 3)
    assert await bench.at(START + timedelta(hours=1)) == 0
    assert len(await bench.run_ids(s)) == 3


async def test_manual_runs_count_towards_count(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "hour", "count": 2}, enabled=False)
    await bench.schedules.run_now(s)
    bench.clock.set(START + timedelta(seconds=1))
    await bench.schedules.enable(s)
    await bench.finish(s)
    assert await bench.at(START + timedelta(hours=1)) == 1
    stored = await bench.store.get_schedule(s)
    assert (stored.state, stored.run_count) == (ScheduleState.COMPLETED, 2)


async def test_a_disabled_schedule_creates_nothing(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "second", "interval": 5}, enabled=False)
    for minutes in (0, 1, 10, 100):
        assert await bench.at(START + timedelta(minutes=minutes)) == 0
    assert await bench.run_ids(s) == []
    stored = await bench.store.get_schedule(s)
    assert (stored.state, stored.next_run_time) == (ScheduleState.DISABLED, None)


async def test_enable_does_not_catch_up_the_disabled_time(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute", "interval": 10})
    assert await bench.at(START) == 1
    await bench.finish(s)
    await bench.schedules.disable(s)
    assert await bench.at(START + timedelta(minutes=35)) == 0
    view = await bench.schedules.enable(s)
    assert view.schedule.next_run_time == START + timedelta(minutes=40)
    assert await bench.scheduler.tick() == 0
    assert await bench.at(START + timedelta(minutes=40)) == 1
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z", f"{s}-20260105T084000Z"]


async def test_run_now_while_disabled_and_twice_in_one_second(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "day"}, enabled=False)
    bench.clock.set(START + timedelta(seconds=7, microseconds=500))
    job = await bench.schedules.run_now(s)
    assert job.job_id == f"{s}-20260105T080007Z"
    assert (job.schedule_id, job.status) == (s, JobStatus.QUEUED)
    with pytest.raises(JobAlreadyExistsError, match="a run of this schedule started this second"):
        await bench.schedules.run_now(s)
    stored = await bench.store.get_schedule(s)
    assert (stored.state, stored.run_count, stored.last_run_job_id) == (ScheduleState.DISABLED, 1, job.job_id)
    assert stored.last_run_time == START + timedelta(seconds=7)


async def test_a_run_created_before_a_crash_counts_once(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute"})
    schedule = await bench.store.get_schedule(s)
    # The node created the run's job and died before writing the schedule back.
    await bench.schedules.create_run(schedule, START)
    assert await bench.at(START + timedelta(seconds=2)) == 1
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z"]
    stored = await bench.store.get_schedule(s)
    assert (stored.run_count, stored.last_run_job_id, stored.next_run_time) == (
        1,
        f"{s}-20260105T080000Z",
        START + timedelta(minutes=1),
    )


async def test_a_lease_held_by_a_live_node_is_left_alone(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute"})
    other = build(bench.store, bench.clock, node_id="node-b")
    taken = await bench.store.acquire_due_schedules(node_id="node-b", now=START, lease_seconds=30, limit=10)
    assert [t.schedule_id for t in taken] == [s]
    assert await bench.at(START + timedelta(seconds=10)) == 0  # node-a may not touch it
    assert await bench.at(START + timedelta(seconds=30)) == 1  # node-b died: the lease ran out
    assert await other.scheduler.tick() == 0
    assert await bench.run_ids(s) == [f"{s}-20260105T080000Z"]


async def test_a_template_that_no_longer_makes_a_job_faults_the_schedule(bench: Bench) -> None:
    s = sid()
    await bench.put(s, {"frequency": "minute"})
    stored = await bench.store.get_schedule(s)
    broken = {**TEMPLATE, "queryCondition": "tags.x = "}  # stored by an older hub, say
    await bench.store.update_schedule(replace(stored, job_template=broken), expected_revision=stored.revision)
    assert await bench.at(START) == 0
    faulted = await bench.store.get_schedule(s)
    assert faulted.state is ScheduleState.FAULTED
    assert faulted.fault_reason is not None
    assert "could not be created" in faulted.fault_reason
    assert faulted.next_run_time is None
    assert await bench.at(START + timedelta(minutes=5)) == 0
    with pytest.raises(BadRequestError):
        await bench.schedules.run_now(s)
    # Replacing it with a good definition starts it again.
    await bench.put(s, {"frequency": "minute"})
    assert (await bench.store.get_schedule(s)).state is ScheduleState.ENABLED
    assert await bench.at(START + timedelta(minutes=5, seconds=1)) == 1  # it starts now
    assert await bench.run_ids(s) == [f"{s}-20260105T080500Z"]


async def test_a_restart_keeps_the_times_exactly(db_url: str) -> None:
    clock = ManualClock(START)
    s = sid()
    async with SqlStore.open(db_url, clock=clock) as store:
        first = build(store, clock)
        await first.put(
            s,
            {"frequency": "week", "schedule": {"weekDays": ["Wednesday"], "hours": [6], "minutes": [45]}},
            timeZone="America/New_York",
        )
        await first.follow(s, 1)
        before = await store.get_schedule(s)
    assert before.next_run_time == utc(2026, 1, 14, 11, 45)
    async with SqlStore.open(db_url, clock=clock) as store:
        second = build(store, clock, node_id="node-a")
        after = await store.get_schedule(s)
        assert after == before
        assert await second.follow(s, 1) == [utc(2026, 1, 14, 11, 45)]
        assert await second.run_ids(s) == [f"{s}-20260107T114500Z", f"{s}-20260114T114500Z"]
