"""Schedules (``/schedules``) as the SDK sends and reads them: the job template, the recurrence,
the schedule document and its runs.

The recurrence rules are the hub's (``hub.domain.recurrence`` documents them: Azure
Scheduler's ``frequency``/``interval``/``schedule`` form or a six-field cron, seconds first,
evaluated in the schedule's IANA ``timeZone``). These types only shape the JSON; the hub
checks it and answers 400 with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.domain.jobs import JobStatus, JobType
from hub.domain.recurrence import Frequency, WeekDay
from hub.domain.schedules import Overlap as ScheduleOverlap
from hub.domain.schedules import ScheduleState
from job_client._json import enum_or_text, integer, text
from job_client.models import JobStatistics, MethodParams, format_timestamp, parse_timestamp
from job_client.rollout import AbortCriterion, RetryPolicy, Rollout, option_json

__all__ = [
    "DEFAULT_TEMPLATE_MAX_EXECUTION_SECONDS",
    "Frequency",
    "JobTemplate",
    "MonthlyOccurrence",
    "Recurrence",
    "RecurrenceSchedule",
    "Schedule",
    "ScheduleOverlap",
    "ScheduleRun",
    "ScheduleState",
    "WeekDay",
    "method_json",
]

DEFAULT_TEMPLATE_MAX_EXECUTION_SECONDS = 3600


def _ints(value: object) -> tuple[int, ...]:
    items: list[object] = list(value) if isinstance(value, list) else [value]
    return tuple(number for number in map(integer, items) if number is not None)


def _overlap(value: object) -> ScheduleOverlap | str:
    return enum_or_text(ScheduleOverlap, value if isinstance(value, str) and value else ScheduleOverlap.SKIP.value)


def _job_status(value: object) -> JobStatus | str | None:
    return enum_or_text(JobStatus, value) if isinstance(value, str) else None


def _week_day(value: WeekDay | str) -> WeekDay | str:
    if isinstance(value, WeekDay):
        return value
    for day in WeekDay:
        if day.value.lower() == value.strip().lower():
            return day
    return value


def _recurrence_time(moment: datetime | str) -> str:
    # An aware time is an instant (sent in UTC); a naive one is wall-clock time in the
    # schedule's time zone, as the hub reads a time without an offset.
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        return moment.isoformat()
    return format_timestamp(moment)


def _moment(value: object) -> datetime | str | None:
    parsed = parse_timestamp(value)
    if parsed is not None:
        return parsed
    return value if isinstance(value, str) and value else None


def method_json(method_params: MethodParams | Mapping[str, Any]) -> dict[str, Any]:
    """A ``cloudToDeviceMethod`` member: typed params, or a document with at least a methodName."""
    if isinstance(method_params, MethodParams):
        return method_params.to_json()
    body = dict(method_params)
    if not isinstance(body.get("methodName"), str) or not body["methodName"]:
        raise ValueError("method_params needs a methodName")
    body.setdefault("payload", None)
    body.setdefault("responseTimeoutInSeconds", 30)
    body.setdefault("connectTimeoutInSeconds", 0)
    return body


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """The job a schedule creates at each run: a job request without ``jobId`` and ``startTime``.
    Build it with ``device_method`` or ``twin_update``."""

    type: JobType
    query_condition: str
    cloud_to_device_method: dict[str, Any] | None = None
    update_twin: dict[str, Any] | None = None
    max_execution_time_in_seconds: int = DEFAULT_TEMPLATE_MAX_EXECUTION_SECONDS
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def device_method(
        cls,
        query_condition: str,
        method_params: MethodParams | Mapping[str, Any],
        *,
        max_execution_time_in_seconds: int = DEFAULT_TEMPLATE_MAX_EXECUTION_SECONDS,
        rollout: Rollout | Mapping[str, Any] | None = None,
        abort: Sequence[AbortCriterion] | AbortCriterion | Mapping[str, Any] | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        continuous: bool = False,
    ) -> JobTemplate:
        """Call a direct method on every device matching ``query_condition`` at each run."""
        return cls(
            JobType.DEVICE_METHOD,
            query_condition,
            cloud_to_device_method=method_json(method_params),
            max_execution_time_in_seconds=max_execution_time_in_seconds,
            options=option_json(rollout=rollout, abort=abort, retry=retry, continuous=continuous),
        )

    @classmethod
    def twin_update(
        cls,
        query_condition: str,
        patch: Mapping[str, Any],
        *,
        max_execution_time_in_seconds: int = DEFAULT_TEMPLATE_MAX_EXECUTION_SECONDS,
        rollout: Rollout | Mapping[str, Any] | None = None,
        abort: Sequence[AbortCriterion] | AbortCriterion | Mapping[str, Any] | None = None,
        continuous: bool = False,
    ) -> JobTemplate:
        """Merge-patch the tags and desired properties of every matching twin at each run."""
        return cls(
            JobType.UPDATE_TWIN,
            query_condition,
            update_twin={**dict(patch), "etag": "*"},
            max_execution_time_in_seconds=max_execution_time_in_seconds,
            options=option_json(rollout=rollout, abort=abort, continuous=continuous),
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type.value, "queryCondition": self.query_condition}
        if self.cloud_to_device_method is not None:
            doc["cloudToDeviceMethod"] = dict(self.cloud_to_device_method)
        if self.update_twin is not None:
            doc["updateTwin"] = dict(self.update_twin)
        doc["maxExecutionTimeInSeconds"] = self.max_execution_time_in_seconds
        doc.update(self.options)
        return doc


@dataclass(frozen=True, slots=True)
class MonthlyOccurrence:
    """``day`` of the month's ``occurrence``-th week: 1..5 from its start, -1..-5 from its end;
    None = every such weekday."""

    day: WeekDay | str
    occurrence: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"day": str(_week_day(self.day))}
        if self.occurrence is not None:
            doc["occurrence"] = self.occurrence
        return doc


@dataclass(frozen=True, slots=True)
class RecurrenceSchedule:
    """Run times inside each period (Azure Scheduler's ``schedule``); empty parts are left out.
    ``month_days`` may count from the month's end (-1 = last day)."""

    minutes: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    week_days: tuple[WeekDay | str, ...] = ()
    month_days: tuple[int, ...] = ()
    monthly_occurrences: tuple[MonthlyOccurrence, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.minutes or self.hours or self.week_days or self.month_days or self.monthly_occurrences)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.minutes:
            doc["minutes"] = list(self.minutes)
        if self.hours:
            doc["hours"] = list(self.hours)
        if self.week_days:
            doc["weekDays"] = [str(_week_day(day)) for day in self.week_days]
        if self.month_days:
            doc["monthDays"] = list(self.month_days)
        if self.monthly_occurrences:
            doc["monthlyOccurrences"] = [item.to_json() for item in self.monthly_occurrences]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RecurrenceSchedule:
        days = doc.get("weekDays")
        occurrences = doc.get("monthlyOccurrences")
        return cls(
            minutes=_ints(doc.get("minutes", [])),
            hours=_ints(doc.get("hours", [])),
            week_days=tuple(_week_day(day) for day in (days if isinstance(days, list) else []) if isinstance(day, str)),
            month_days=_ints(doc.get("monthDays", [])),
            monthly_occurrences=tuple(
                MonthlyOccurrence(_week_day(str(item.get("day", ""))), integer(item.get("occurrence")))
                for item in (occurrences if isinstance(occurrences, list) else [])
                if isinstance(item, Mapping)
            ),
        )


@dataclass(frozen=True, slots=True)
class Recurrence:
    """When a schedule runs: ``every(n, unit, ...)`` or ``from_cron(expression, ...)``.

    ``start_time`` (default: when the schedule is created) and ``end_time`` are aware datetimes
    (instants), naive ones (wall-clock time in the schedule's time zone) or ISO-8601 text;
    ``count`` caps the number of runs.
    """

    frequency: Frequency | str | None = None
    interval: int = 1
    cron: str | None = None
    schedule: RecurrenceSchedule = RecurrenceSchedule()
    start_time: datetime | str | None = None
    end_time: datetime | str | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if (self.frequency is None) == (self.cron is None):
            raise ValueError("a recurrence needs exactly one of frequency and cron")

    @classmethod
    def every(
        cls,
        interval: int,
        unit: Frequency | str,
        *,
        hours: Iterable[int] = (),
        minutes: Iterable[int] = (),
        week_days: Iterable[WeekDay | str] = (),
        month_days: Iterable[int] = (),
        monthly_occurrences: Iterable[MonthlyOccurrence] = (),
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        count: int | None = None,
    ) -> Recurrence:
        """Every ``interval`` ``unit``s (second .. month), at the given hours and minutes, on the
        given weekdays (weekly) or month days (monthly)."""
        schedule = RecurrenceSchedule(
            tuple(minutes), tuple(hours), tuple(week_days), tuple(month_days), tuple(monthly_occurrences)
        )
        frequency = Frequency(unit.strip().lower()) if isinstance(unit, str) else unit
        return cls(frequency, interval, None, schedule, start_time, end_time, count)

    @classmethod
    def from_cron(
        cls,
        expression: str,
        *,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        count: int | None = None,
    ) -> Recurrence:
        """A six-field cron expression, seconds first: ``"0 0 2 * * mon-fri"`` is 02:00 on weekdays."""
        return cls(None, 1, expression, RecurrenceSchedule(), start_time, end_time, count)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any]
        if self.cron is not None:
            doc = {"cron": self.cron}
        else:
            doc = {"frequency": str(self.frequency), "interval": self.interval}
            if not self.schedule.is_empty:
                doc["schedule"] = self.schedule.to_json()
        if self.start_time is not None:
            doc["startTime"] = _recurrence_time(self.start_time)
        if self.end_time is not None:
            doc["endTime"] = _recurrence_time(self.end_time)
        if self.count is not None:
            doc["count"] = self.count
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Recurrence:
        """The recurrence of a schedule document; ValueError when it has neither form."""
        start, end, count = _moment(doc.get("startTime")), _moment(doc.get("endTime")), integer(doc.get("count"))
        cron = text(doc.get("cron"))
        if cron is not None:
            return cls(None, 1, cron, RecurrenceSchedule(), start, end, count)
        frequency_text = text(doc.get("frequency"))
        if not frequency_text:
            raise ValueError(f"a recurrence document needs frequency or cron: {dict(doc)!r}")
        frequency: Frequency | str
        try:
            frequency = Frequency(frequency_text)
        except ValueError:
            frequency = frequency_text
        schedule = doc.get("schedule")
        return cls(
            frequency,
            integer(doc.get("interval")) or 1,
            None,
            RecurrenceSchedule.from_json(schedule) if isinstance(schedule, Mapping) else RecurrenceSchedule(),
            start,
            end,
            count,
        )

    def describe(self) -> str:
        """A short human form, e.g. ``every week at 02:00 on Mon,Fri`` or ``cron 0 */5 * * * *``."""
        if self.cron is not None:
            shown = f"cron {self.cron}"
        else:
            unit = str(self.frequency)
            shown = f"every {unit}" if self.interval == 1 else f"every {self.interval} {unit}s"
            schedule = self.schedule
            if schedule.hours:
                minutes = schedule.minutes or (0,)
                shown += " at " + ",".join(f"{h:02d}:{m:02d}" for h in schedule.hours for m in minutes)
            elif schedule.minutes:
                shown += " at minute " + ",".join(str(m) for m in schedule.minutes)
            if schedule.week_days:
                shown += " on " + ",".join(str(day)[:3] for day in schedule.week_days)
            if schedule.month_days:
                shown += " on day " + ",".join(str(day) for day in schedule.month_days)
            if schedule.monthly_occurrences:
                shown += " on " + ",".join(
                    f"{str(item.day)[:3]}#{item.occurrence}" if item.occurrence is not None else str(item.day)[:3]
                    for item in schedule.monthly_occurrences
                )
        if self.count is not None:
            shown += ", once" if self.count == 1 else f", {self.count} times"
        if self.end_time is not None:
            end = self.end_time if isinstance(self.end_time, str) else format_timestamp(self.end_time)
            shown += f", until {end}"
        return shown


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as ``GET /schedules/{id}`` returns it."""

    schedule_id: str
    job: dict[str, Any]
    recurrence: Recurrence | None
    time_zone: str
    enabled: bool
    overlap: ScheduleOverlap | str
    state: ScheduleState | str
    next_run_time: datetime | None = None
    last_run_time: datetime | None = None
    last_run_job_id: str | None = None
    last_run_status: JobStatus | str | None = None
    run_count: int = 0
    fault_reason: str | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Schedule:
        job, recurrence = doc.get("job"), doc.get("recurrence")
        parsed: Recurrence | None = None
        if isinstance(recurrence, Mapping):
            try:
                parsed = Recurrence.from_json(recurrence)
            except ValueError:
                parsed = None  # a form this SDK does not know; ``raw`` still has it
        return cls(
            schedule_id=str(doc.get("scheduleId", "")),
            job=dict(job) if isinstance(job, Mapping) else {},
            recurrence=parsed,
            time_zone=text(doc.get("timeZone")) or "UTC",
            enabled=doc.get("enabled") is not False,
            overlap=_overlap(doc.get("overlap")),
            state=enum_or_text(ScheduleState, doc.get("state")),
            next_run_time=parse_timestamp(doc.get("nextRunTime")),
            last_run_time=parse_timestamp(doc.get("lastRunTime")),
            last_run_job_id=text(doc.get("lastRunJobId")),
            last_run_status=_job_status(doc.get("lastRunStatus")),
            run_count=integer(doc.get("runCount")) or 0,
            fault_reason=text(doc.get("faultReason")),
            created_time=parse_timestamp(doc.get("createdTime")),
            updated_time=parse_timestamp(doc.get("updatedTime")),
            raw=dict(doc),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw) or {"scheduleId": self.schedule_id, "state": str(self.state)}


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One run of a schedule (an item of ``GET /schedules/{id}/runs``): the job it created and
    how that job went. Its log is the job's events (``list_events(run.job_id)``)."""

    job_id: str
    status: JobStatus | str
    created_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    failure_reason: str | None = None
    status_message: str | None = None
    device_job_statistics: JobStatistics = field(default_factory=JobStatistics)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ScheduleRun:
        stats = doc.get("deviceJobStatistics")
        end = parse_timestamp(doc.get("endTime"))
        if end is not None and end.year >= 9999:
            end = None  # IoT Hub's "not ended yet" sentinel
        return cls(
            job_id=str(doc.get("jobId", "")),
            status=_job_status(doc.get("status")) or "",
            created_time=parse_timestamp(doc.get("createdTime")),
            start_time=parse_timestamp(doc.get("startTime")),
            end_time=end,
            failure_reason=text(doc.get("failureReason")),
            status_message=text(doc.get("statusMessage")),
            device_job_statistics=JobStatistics.from_json(stats if isinstance(stats, Mapping) else {}),
            raw=dict(doc),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw) or {"jobId": self.job_id, "status": str(self.status)}
