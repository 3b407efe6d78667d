"""Schedule recurrence: the JSON forms parsed and checked, the next run time, and the misfire rule.

Two forms, as issue 7 gives them, each with the schedule's ``timeZone`` (IANA, default UTC):

- ``{"frequency", "interval", "startTime", "endTime", "count", "schedule"}`` with Azure
  Scheduler's meaning. ``second``, ``minute`` and ``hour`` count elapsed time from
  ``startTime`` (``every 90 minutes`` is 90 real minutes, DST or not). ``day``, ``week`` and
  ``month`` count calendar periods in the time zone, so ``every 2 days`` at 09:00 stays at
  09:00 local time across DST. The ``schedule`` picks run times inside each period: hour
  periods take ``minutes``; day periods ``hours`` and ``minutes``; week periods also
  ``weekDays`` (weeks start on Monday); month periods ``monthDays`` and
  ``monthlyOccurrences`` instead (the union of the two). Hours and minutes that are left
  out come from ``startTime``, and so do the seconds (0 when ``minutes`` are given, so
  ``hours: [2], minutes: [0]`` is 02:00:00), the weekday of a weekly schedule and
  the day of a monthly one. ``monthDays: [31]`` (or a month schedule that starts on the
  31st) runs only in months that have a 31st, as in Azure Scheduler; ``-1`` is the last
  day of every month (Feb 29 in leap years). ``occurrence`` is 1..5 from the start of the
  month or -1..-5 from its end; without it, every such weekday of the month runs.
- ``{"cron": "<sec min hour day-of-month month day-of-week>"}``, evaluated by croniter on
  local wall-clock time (day-of-month and day-of-week combine with OR, as in Vixie cron).

Both may have ``startTime`` (no run before it; absent = now; a time without an offset is
local to the time zone), ``endTime`` (no run after it) and ``count`` (at most that many
runs; with ``endTime`` too, whichever comes first ends the schedule).

Wall-clock times meet DST like this: a local time that does not exist (spring forward) runs
at the first instant after the gap; a local time that happens twice (fall back) runs once,
at its first occurrence. All instants in and out are UTC-aware datetimes.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]

from hub.domain.clock import parse_iso8601
from hub.domain.json import JsonObject, JsonValue, is_integer
from hub.domain.twin import isoformat
from hub.errors import BadRequestError

__all__ = [
    "MAX_INTERVAL",
    "TICK",
    "UTC_ZONE",
    "CronRecurrence",
    "DueRuns",
    "Frequency",
    "IntervalRecurrence",
    "MonthlyOccurrence",
    "Recurrence",
    "RecurrenceSchedule",
    "WeekDay",
    "due_runs",
    "next_run_after",
    "parse_recurrence",
    "parse_time_zone",
    "recurrence_document",
]

UTC_ZONE = ZoneInfo("UTC")
TICK = timedelta(microseconds=1)  # the smallest step of a datetime: "just before"
# A month schedule can select no day for years (day 31 every 12 months from February never
# comes); after a whole 400-year Gregorian cycle the calendar repeats, so it never will.
_MAX_PERIODS = 400 * 12 + 2


class Frequency(StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


# Azure Scheduler's limits (18 months, 78 weeks, 548 days, 1..1000 for minute and hour).
MAX_INTERVAL: Mapping[Frequency, int] = {
    Frequency.SECOND: 1000,
    Frequency.MINUTE: 1000,
    Frequency.HOUR: 1000,
    Frequency.DAY: 548,
    Frequency.WEEK: 78,
    Frequency.MONTH: 18,
}

_ELAPSED_UNIT: Mapping[Frequency, timedelta] = {
    Frequency.SECOND: timedelta(seconds=1),
    Frequency.MINUTE: timedelta(minutes=1),
    Frequency.HOUR: timedelta(hours=1),
}


class WeekDay(StrEnum):
    """Azure Scheduler's spelling; input is matched without regard to case."""

    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"

    @property
    def number(self) -> int:
        """Monday 0 .. Sunday 6, as ``date.weekday()`` counts."""
        return list(WeekDay).index(self)


@dataclass(frozen=True, slots=True)
class MonthlyOccurrence:
    """``occurrence`` 1..5 counts from the month's start, -1..-5 from its end; None = every one."""

    day: WeekDay
    occurrence: int | None = None


@dataclass(frozen=True, slots=True)
class RecurrenceSchedule:
    """The refinements inside each period, sorted and without duplicates; empty = not given."""

    minutes: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    week_days: tuple[WeekDay, ...] = ()
    month_days: tuple[int, ...] = ()
    monthly_occurrences: tuple[MonthlyOccurrence, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.minutes or self.hours or self.week_days or self.month_days or self.monthly_occurrences)


@dataclass(frozen=True, slots=True)
class IntervalRecurrence:
    frequency: Frequency
    interval: int
    start_time: datetime
    end_time: datetime | None = None
    count: int | None = None
    schedule: RecurrenceSchedule = RecurrenceSchedule()


@dataclass(frozen=True, slots=True)
class CronRecurrence:
    """``cron`` has six fields, seconds first."""

    cron: str
    start_time: datetime
    end_time: datetime | None = None
    count: int | None = None


Recurrence: TypeAlias = IntervalRecurrence | CronRecurrence


@dataclass(frozen=True, slots=True)
class DueRuns:
    """What the scheduler does now: start one run for ``run_time`` (or none), and wake at
    ``next_run_time`` (None: the schedule is over). ``missed_time`` is the most recent run
    time that was missed by more than the grace period and is dropped (for the log)."""

    run_time: datetime | None
    next_run_time: datetime | None
    missed_time: datetime | None = None

    @property
    def runs(self) -> int:
        return 0 if self.run_time is None else 1


# -- wall clock <-> instants -------------------------------------------------------------


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of an instant."""
    return moment.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a local wall-clock time runs at: the first occurrence of an ambiguous
    time, the end of the gap for a time that does not exist. Non-decreasing in ``wall``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first
    # In a gap fold=0 applies the offset from before it (an instant after the gap) and fold=1
    # the offset from after it (an instant before the gap): the transition lies between.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    while high - low > TICK:
        middle = low + (high - low) // 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high


def _last_wall_at_or_before(moment: datetime, zone: ZoneInfo) -> datetime:
    """The latest wall time whose run instant is at or before ``moment``: every later wall time
    runs after it. It is the local time of ``moment`` except in the second pass of a repeated
    hour, whose wall times already ran in the first pass."""
    wall = _wall(moment, zone)
    if _instant(wall, zone) == moment:
        return wall
    step = timedelta(hours=1)
    while _instant(wall + step, zone) <= moment:
        step *= 2
    low, high = wall, wall + step
    while high - low > TICK:
        middle = low + (high - low) // 2
        if _instant(middle, zone) <= moment:
            low = middle
        else:
            high = middle
    return low


# -- parsing -----------------------------------------------------------------------------


def parse_time_zone(value: object) -> ZoneInfo:
    """A schedule's ``timeZone``: an IANA name such as ``Europe/Berlin``; absent means UTC."""
    if value is None:
        return UTC_ZONE
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"timeZone must be an IANA time zone name such as 'Europe/Berlin', got {value!r}")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadRequestError(f"timeZone {value!r} is not a known IANA time zone name") from None


def _parse_time(field: str, value: object, zone: ZoneInfo) -> datetime:
    moment = parse_iso8601(f"recurrence.{field}", value)
    if moment.tzinfo is None:
        return _instant(moment, zone)
    return moment.astimezone(UTC)


def _int_list(field: str, value: JsonValue, low: int, high: int, what: str) -> tuple[int, ...]:
    items: Sequence[JsonValue] = value if isinstance(value, list) else [value]
    if not items:
        raise BadRequestError(f"recurrence.schedule.{field} must list at least one {what}")
    chosen: set[int] = set()
    for item in items:
        if not is_integer(item) or not low <= item <= high:
            raise BadRequestError(f"recurrence.schedule.{field} must hold {what}s from {low} to {high}, got {item!r}")
        chosen.add(item)
    return tuple(sorted(chosen))


def _week_day(field: str, value: JsonValue) -> WeekDay:
    if isinstance(value, str):
        for day in WeekDay:
            if day.value.lower() == value.strip().lower():
                return day
    names = ", ".join(day.value for day in WeekDay)
    raise BadRequestError(f"{field} must be one of {names}, got {value!r}")


def _parse_schedule(value: JsonValue, frequency: Frequency) -> RecurrenceSchedule:
    if value is None:
        return RecurrenceSchedule()
    if not isinstance(value, dict):
        raise BadRequestError("recurrence.schedule must be a JSON object")
    allowed = _ALLOWED_PARTS[frequency]
    for key in value:
        if key not in _SCHEDULE_PARTS:
            raise BadRequestError(
                f"recurrence.schedule.{key} is not supported: use {', '.join(sorted(_SCHEDULE_PARTS))}"
            )
    for key in _SCHEDULE_PARTS:
        if value.get(key) is not None and key not in allowed:
            rule = f"it allows only {', '.join(sorted(allowed))}" if allowed else "it takes no schedule"
            raise BadRequestError(f"recurrence.schedule.{key} is not allowed with frequency {frequency}: {rule}")
    minutes = value.get("minutes")
    hours = value.get("hours")
    week_days = value.get("weekDays")
    month_days = value.get("monthDays")
    occurrences = value.get("monthlyOccurrences")
    schedule = RecurrenceSchedule(
        minutes=() if minutes is None else _int_list("minutes", minutes, 0, 59, "minute"),
        hours=() if hours is None else _int_list("hours", hours, 0, 23, "hour"),
    )
    if week_days is not None:
        items = week_days if isinstance(week_days, list) else [week_days]
        if not items:
            raise BadRequestError("recurrence.schedule.weekDays must list at least one day")
        days = {_week_day("recurrence.schedule.weekDays", item) for item in items}
        schedule = _replace_schedule(schedule, week_days=tuple(sorted(days, key=lambda day: day.number)))
    if month_days is not None:
        items = month_days if isinstance(month_days, list) else [month_days]
        if not items:
            raise BadRequestError("recurrence.schedule.monthDays must list at least one day")
        for item in items:
            if not is_integer(item) or item == 0 or not -31 <= item <= 31:
                raise BadRequestError(
                    "recurrence.schedule.monthDays must hold days 1..31 or -1..-31 (counted from the "
                    f"month's end, -1 = last day), got {item!r}"
                )
        schedule = _replace_schedule(schedule, month_days=tuple(sorted({i for i in items if isinstance(i, int)})))
    if occurrences is not None:
        schedule = _replace_schedule(schedule, monthly_occurrences=_parse_occurrences(occurrences))
    return schedule


def _replace_schedule(
    schedule: RecurrenceSchedule,
    *,
    week_days: tuple[WeekDay, ...] | None = None,
    month_days: tuple[int, ...] | None = None,
    monthly_occurrences: tuple[MonthlyOccurrence, ...] | None = None,
) -> RecurrenceSchedule:
    return RecurrenceSchedule(
        minutes=schedule.minutes,
        hours=schedule.hours,
        week_days=schedule.week_days if week_days is None else week_days,
        month_days=schedule.month_days if month_days is None else month_days,
        monthly_occurrences=schedule.monthly_occurrences if monthly_occurrences is None else monthly_occurrences,
    )


def _parse_occurrences(value: JsonValue) -> tuple[MonthlyOccurrence, ...]:
    field = "recurrence.schedule.monthlyOccurrences"
    if not isinstance(value, list) or not value:
        raise BadRequestError(f"{field} must be a non-empty list of {{'day', 'occurrence'}} objects")
    found: set[MonthlyOccurrence] = set()
    for item in value:
        if not isinstance(item, dict):
            raise BadRequestError(f"{field} must hold {{'day', 'occurrence'}} objects, got {item!r}")
        unknown = sorted(set(item) - {"day", "occurrence"})
        if unknown:
            raise BadRequestError(f"{field} items take only day and occurrence, not {', '.join(unknown)}")
        if item.get("day") is None:
            raise BadRequestError(f"{field} items need a day")
        day = _week_day(f"{field}.day", item["day"])
        occurrence = item.get("occurrence")
        if occurrence is not None and (not is_integer(occurrence) or occurrence == 0 or not -5 <= occurrence <= 5):
            raise BadRequestError(
                f"{field}.occurrence must be 1..5 (from the month's start) or -1..-5 (from its end, "
                f"-1 = last), got {occurrence!r}"
            )
        found.add(MonthlyOccurrence(day, occurrence if isinstance(occurrence, int) else None))
    return tuple(sorted(found, key=lambda o: (o.day.number, 0 if o.occurrence is None else o.occurrence)))


_SCHEDULE_PARTS = ("minutes", "hours", "weekDays", "monthDays", "monthlyOccurrences")
# Azure Scheduler: weekDays only weekly, monthDays and monthlyOccurrences only monthly;
# hours and minutes pick times inside a day, minutes alone inside an hour.
_ALLOWED_PARTS: Mapping[Frequency, frozenset[str]] = {
    Frequency.SECOND: frozenset(),
    Frequency.MINUTE: frozenset(),
    Frequency.HOUR: frozenset({"minutes"}),
    Frequency.DAY: frozenset({"minutes", "hours"}),
    Frequency.WEEK: frozenset({"minutes", "hours", "weekDays"}),
    Frequency.MONTH: frozenset({"minutes", "hours", "monthDays", "monthlyOccurrences"}),
}
_COMMON_KEYS = frozenset({"startTime", "endTime", "count"})
_INTERVAL_KEYS = _COMMON_KEYS | {"frequency", "interval", "schedule"}
_CRON_KEYS = _COMMON_KEYS | {"cron"}


def _parse_cron(value: JsonValue) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"recurrence.cron must be a cron expression string, got {value!r}")
    fields = value.split()
    if len(fields) != 6:
        raise BadRequestError(
            f"recurrence.cron {value!r} must have 6 fields: second minute hour day-of-month month day-of-week"
        )
    expression = " ".join(fields)
    try:
        croniter(expression, datetime(2000, 1, 1), second_at_beginning=True)
    except (CroniterError, ValueError, TypeError, KeyError) as exc:
        raise BadRequestError(f"recurrence.cron {value!r} is not a valid cron expression: {exc}") from None
    return expression


def parse_recurrence(body: object, time_zone: ZoneInfo, now: datetime) -> Recurrence:
    """Validate a schedule's ``recurrence`` field by field; BadRequestError names the field and
    the reason. ``now`` is the default ``startTime``; a recurrence that can never run is refused."""
    if not isinstance(body, dict):
        raise BadRequestError("recurrence must be a JSON object with frequency or cron")
    return _parse_fields(body, time_zone, now)


def _parse_fields(body: Mapping[str, JsonValue], time_zone: ZoneInfo, now: datetime) -> Recurrence:
    has_cron = body.get("cron") is not None
    has_frequency = body.get("frequency") is not None
    if has_cron == has_frequency:
        raise BadRequestError("recurrence needs exactly one of frequency and cron")
    keys = _CRON_KEYS if has_cron else _INTERVAL_KEYS
    unknown = sorted(k for k, v in body.items() if k not in keys and v is not None)
    if unknown:
        raise BadRequestError(
            f"recurrence.{unknown[0]} is not allowed {'with cron' if has_cron else 'here'}: "
            f"use {', '.join(sorted(keys))}"
        )
    start_value = body.get("startTime")
    start = _utc(now, "now") if start_value is None else _parse_time("startTime", start_value, time_zone)
    end_value = body.get("endTime")
    end = None if end_value is None else _parse_time("endTime", end_value, time_zone)
    if end is not None and end < start:
        raise BadRequestError(f"recurrence.endTime {end_value!r} is before startTime")
    count = body.get("count")
    if count is not None and (not is_integer(count) or count < 1):
        raise BadRequestError(f"recurrence.count must be a positive integer, got {count!r}")
    recurrence: Recurrence
    if has_cron:
        recurrence = CronRecurrence(_parse_cron(body["cron"]), start, end, count)
    else:
        raw_frequency = body["frequency"]
        try:
            frequency = Frequency(str(raw_frequency).strip().lower())
        except ValueError:
            raise BadRequestError(
                f"recurrence.frequency must be one of {', '.join(f.value for f in Frequency)}, got {raw_frequency!r}"
            ) from None
        interval = body.get("interval")
        if interval is None:
            interval = 1
        if not is_integer(interval) or interval < 1:
            raise BadRequestError(f"recurrence.interval must be a positive integer, got {interval!r}")
        if interval > MAX_INTERVAL[frequency]:
            raise BadRequestError(
                f"recurrence.interval {interval} is too large for frequency {frequency}: "
                f"at most {MAX_INTERVAL[frequency]}"
            )
        schedule = _parse_schedule(body.get("schedule"), frequency)
        recurrence = IntervalRecurrence(frequency, interval, start, end, count, schedule)
    if _next_time(recurrence, time_zone, start - TICK) is None:
        raise BadRequestError(
            "recurrence never runs: no run time between startTime and endTime"
            if end is not None
            else "recurrence never runs: its schedule selects no day that exists"
        )
    return recurrence


def recurrence_document(recurrence: Recurrence) -> JsonObject:
    """The JSON form of a parsed recurrence (times in UTC); ``parse_recurrence`` reads it back."""
    doc: JsonObject
    if isinstance(recurrence, CronRecurrence):
        doc = {"cron": recurrence.cron}
    else:
        doc = {"frequency": recurrence.frequency.value, "interval": recurrence.interval}
        schedule = recurrence.schedule
        parts: JsonObject = {}
        if schedule.minutes:
            parts["minutes"] = list(schedule.minutes)
        if schedule.hours:
            parts["hours"] = list(schedule.hours)
        if schedule.week_days:
            parts["weekDays"] = [day.value for day in schedule.week_days]
        if schedule.month_days:
            parts["monthDays"] = list(schedule.month_days)
        if schedule.monthly_occurrences:
            occurrences: list[JsonValue] = []
            for item in schedule.monthly_occurrences:
                occurrence: JsonObject = {"day": item.day.value}
                if item.occurrence is not None:
                    occurrence["occurrence"] = item.occurrence
                occurrences.append(occurrence)
            parts["monthlyOccurrences"] = occurrences
        if parts:
            doc["schedule"] = parts
    doc["startTime"] = isoformat(recurrence.start_time)
    if recurrence.end_time is not None:
        doc["endTime"] = isoformat(recurrence.end_time)
    if recurrence.count is not None:
        doc["count"] = recurrence.count
    return doc


# -- run times ---------------------------------------------------------------------------


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC)


def next_run_after(recurrence: Recurrence, time_zone: ZoneInfo, after: datetime, runs_done: int = 0) -> datetime | None:
    """The first run time strictly after ``after``, or None when the schedule is over: past its
    ``endTime``, or ``count`` runs already done (``runs_done``)."""
    if recurrence.count is not None and runs_done >= recurrence.count:
        return None
    return _next_time(recurrence, time_zone, _utc(after, "after"))


def _next_time(recurrence: Recurrence, zone: ZoneInfo, after: datetime) -> datetime | None:
    """``next_run_after`` without ``count``."""
    start = recurrence.start_time
    end = recurrence.end_time
    try:
        for moment in _run_times(recurrence, zone, max(after, start - TICK)):
            if moment < start or moment <= after:
                continue
            return None if end is not None and moment > end else moment
    except OverflowError:
        pass  # past year 9999: no more runs
    return None


def _run_times(recurrence: Recurrence, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Run instants in non-decreasing order, at least all of those after ``after``
    (possibly with some before it, which the caller drops)."""
    if isinstance(recurrence, CronRecurrence):
        return _cron_times(recurrence, zone, after)
    if recurrence.frequency in _ELAPSED_UNIT:
        if recurrence.schedule.minutes:
            return _hour_times(recurrence, zone, after)
        return _elapsed_times(recurrence, after)
    return _calendar_times(recurrence, zone, after)


def _elapsed_times(recurrence: IntervalRecurrence, after: datetime) -> Iterator[datetime]:
    step = _ELAPSED_UNIT[recurrence.frequency] * recurrence.interval
    k = max(0, (after - recurrence.start_time) // step + 1)
    while True:
        yield recurrence.start_time + k * step
        k += 1


def _hour_times(recurrence: IntervalRecurrence, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Hour periods count elapsed time from startTime; the minutes are wall-clock minutes of
    each period's local hour."""
    start = recurrence.start_time
    step = _ELAPSED_UNIT[recurrence.frequency] * recurrence.interval
    k = max(0, (after - start) // step - 1)
    while True:
        hour = _wall(start + k * step, zone).replace(minute=0, second=0, microsecond=0)
        for minute in recurrence.schedule.minutes:
            # A minute given in the schedule is exact: it starts at second 0.
            yield _instant(hour.replace(minute=minute), zone)
        k += 1


def _calendar_times(recurrence: IntervalRecurrence, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    local_start = _wall(recurrence.start_time, zone)
    schedule = recurrence.schedule
    hours = schedule.hours or (local_start.hour,)
    minutes = schedule.minutes or (local_start.minute,)
    # "at 02:00" means 02:00:00; only a time of day taken whole from startTime keeps its seconds.
    second, micro = (0, 0) if schedule.minutes else (local_start.second, local_start.microsecond)
    times = [time(h, m, second, micro) for h in hours for m in minutes]
    threshold = _last_wall_at_or_before(after, zone)
    k = max(0, _period_index(recurrence, local_start.date(), threshold.date()))
    for _ in range(_MAX_PERIODS):
        for day in _period_days(recurrence, local_start.date(), k):
            for clock in times:
                wall = datetime.combine(day, clock)
                if wall > threshold:
                    yield _instant(wall, zone)
        k += 1


def _month_number(day: date) -> int:
    return day.year * 12 + day.month - 1


def _period_index(recurrence: IntervalRecurrence, start: date, day: date) -> int:
    """The period (0 = the one holding startTime) that ``day`` lies in; negative before it."""
    if recurrence.frequency is Frequency.DAY:
        return (day - start).days // recurrence.interval
    if recurrence.frequency is Frequency.WEEK:
        weeks = ((day - timedelta(days=day.weekday())) - (start - timedelta(days=start.weekday()))).days // 7
        return weeks // recurrence.interval
    return (_month_number(day) - _month_number(start)) // recurrence.interval


def _period_days(recurrence: IntervalRecurrence, start: date, k: int) -> list[date]:
    schedule = recurrence.schedule
    if recurrence.frequency is Frequency.DAY:
        return [start + timedelta(days=k * recurrence.interval)]
    if recurrence.frequency is Frequency.WEEK:
        monday = start - timedelta(days=start.weekday()) + timedelta(weeks=k * recurrence.interval)
        indexes = [day.number for day in schedule.week_days] or [start.weekday()]
        return [monday + timedelta(days=i) for i in indexes]
    year, month = divmod(_month_number(start) + k * recurrence.interval, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise OverflowError("past the last representable year")
    return [date(year, month, d) for d in _month_days(year, month, schedule, start.day)]


def _month_days(year: int, month: int, schedule: RecurrenceSchedule, start_day: int) -> list[int]:
    length = calendar.monthrange(year, month)[1]
    chosen: set[int] = set()
    month_days = schedule.month_days
    if not month_days and not schedule.monthly_occurrences:
        month_days = (start_day,)
    for day in month_days:
        resolved = day if day > 0 else length + 1 + day
        if 1 <= resolved <= length:
            chosen.add(resolved)
    first_weekday = date(year, month, 1).weekday()
    for item in schedule.monthly_occurrences:
        matching = list(range(1 + (item.day.number - first_weekday) % 7, length + 1, 7))
        if item.occurrence is None:
            chosen.update(matching)
        elif abs(item.occurrence) <= len(matching):
            chosen.add(matching[item.occurrence - 1 if item.occurrence > 0 else item.occurrence])
    return sorted(chosen)


def _cron_times(recurrence: CronRecurrence, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    threshold = _last_wall_at_or_before(after, zone)
    iterator = croniter(recurrence.cron, threshold, second_at_beginning=True)
    while True:
        try:
            wall = iterator.get_next(datetime)
        except CroniterBadDateError:
            return
        if not isinstance(wall, datetime):
            raise TypeError(f"croniter returned {wall!r}, not a datetime")
        yield _instant(wall, zone)


# -- misfires ----------------------------------------------------------------------------


def _latest_run_between(recurrence: Recurrence, zone: ZoneInfo, low: datetime, high: datetime) -> datetime | None:
    """The latest run time in ``(low, high]``, found by bisection on ``_next_time`` so a long
    outage of a per-second schedule costs some 60 steps, not one per missed run."""
    limit = high
    first = _next_time(recurrence, zone, low)
    if first is None or first > limit:
        return None
    # Invariant: the next run after ``low`` is at most ``limit``, the next after ``high`` is not;
    # so the latest run up to ``limit`` lies in (low, high].
    while high - low > TICK:
        middle = low + (high - low) // 2
        candidate = _next_time(recurrence, zone, middle)
        if candidate is not None and candidate <= limit:
            low = middle
        else:
            high = middle
    return high


def due_runs(
    recurrence: Recurrence,
    time_zone: ZoneInfo,
    last_run: datetime | None,
    now: datetime,
    grace: timedelta,
    runs_done: int = 0,
) -> DueRuns:
    """The misfire rule (APScheduler's coalesce with ``misfire_grace_time``): of the run times
    after ``last_run`` (the run time of the last run handled; None = none yet) up to ``now``,
    only the latest counts; it runs now if it is at most ``grace`` old, otherwise it is
    dropped. Either way the schedule goes on from ``now``: at most one run, never a burst.
    Missed runs do not count towards ``count``; ``runs_done`` are the runs that happened."""
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    now = _utc(now, "now")
    if recurrence.count is not None and runs_done >= recurrence.count:
        return DueRuns(run_time=None, next_run_time=None)
    low = recurrence.start_time - TICK if last_run is None else _utc(last_run, "last_run")
    latest = _latest_run_between(recurrence, time_zone, low, now) if low < now else None
    if latest is None:
        return DueRuns(run_time=None, next_run_time=next_run_after(recurrence, time_zone, now, runs_done))
    if now - latest <= grace:
        return DueRuns(run_time=latest, next_run_time=next_run_after(recurrence, time_zone, now, runs_done + 1))
    return DueRuns(
        run_time=None, next_run_time=next_run_after(recurrence, time_zone, now, runs_done), missed_time=latest
    )
