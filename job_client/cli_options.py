"""Parsing and checking of ``fleethub-jobs`` option values for rollout control and schedules.

Every function raises ``typer.BadParameter`` (exit code 2, before any request) with a message
that names the option. Beyond the syntax, values are checked with the hub's own rules
(``hub.domain``), so the CLI refuses exactly what the hub would answer 400 to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from hub.domain.jobs import JobRequest
from hub.domain.recurrence import Frequency, WeekDay, parse_recurrence, parse_time_zone
from hub.domain.rollout import JobControls
from hub.domain.schedules import ScheduleRequest
from hub.errors import BadRequestError
from job_client.rollout import (
    AbortCriterion,
    FailureType,
    RateIncreaseCriterion,
    RetryOn,
    RetryPolicy,
    Rollout,
    RolloutRamp,
)
from job_client.schedules import Recurrence

__all__ = [
    "RAMP_SYNTAX",
    "check_job_options",
    "check_recurrence",
    "check_schedule_body",
    "parse_abort",
    "parse_at",
    "parse_month_days",
    "parse_ramp",
    "parse_retry_backoff",
    "parse_retry_on",
    "parse_week_days",
    "read_schedule_file",
    "recurrence_options",
    "retry_options",
    "rollout_options",
]

RAMP_SYNTAX = "BASE,FACTOR,notified:N or BASE,FACTOR,succeeded:N"

_RAMP_CRITERIA = {"notified": RateIncreaseCriterion.NOTIFIED, "succeeded": RateIncreaseCriterion.SUCCEEDED}
_FAILURE_TYPES = {"failed": FailureType.FAILED, "timedout": FailureType.TIMED_OUT, "all": FailureType.ALL}
_RETRY_ON = {kind.value.lower(): kind for kind in RetryOn}
_WEEK_DAYS = list(WeekDay)
_TIME = re.compile(r"(?:(\d{1,2}))?:(\d{2})")


def _int(text: str, option: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{option}: {what} must be a whole number, got {text.strip()!r}") from None


def _float(text: str, option: str, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{option}: {what} must be a number, got {text.strip()!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# -- rollout control -----------------------------------------------------------------------


def parse_ramp(text: str) -> RolloutRamp:
    """``--ramp 50,2,notified:1000``: start at 50 per minute and double after every 1000
    devices notified (``succeeded:N`` counts successes instead)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or ":" not in parts[2]:
        raise typer.BadParameter(f"--ramp {text!r} must be {RAMP_SYNTAX}, e.g. 50,2,notified:1000")
    base = _int(parts[0], "--ramp", "BASE (devices per minute)")
    factor = float(_float(parts[1], "--ramp", "FACTOR"))
    kind, _, count = parts[2].partition(":")
    criterion = _RAMP_CRITERIA.get(kind.strip().lower())
    if criterion is None:
        raise typer.BadParameter(f"--ramp: the increase criterion must be notified:N or succeeded:N, got {parts[2]!r}")
    return RolloutRamp(base, factor, _int(count, "--ramp", "N (devices per step)"), criterion)


def parse_abort(text: str) -> AbortCriterion:
    """``--abort failed:30:10``: abort when 30 % of at least 10 finished devices failed
    (TYPE is failed, timedOut or all)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise typer.BadParameter(
            f"--abort {text!r} must be TYPE:PERCENT:MIN, e.g. failed:30:10 (TYPE failed, timedOut or all)"
        )
    failure_type = _FAILURE_TYPES.get(parts[0].strip().lower().replace("-", "").replace("_", ""))
    if failure_type is None:
        raise typer.BadParameter(f"--abort: TYPE must be failed, timedOut or all, got {parts[0].strip()!r}")
    percent = _float(parts[1].strip().rstrip("%"), "--abort", "PERCENT")
    return AbortCriterion(failure_type, percent, _int(parts[2], "--abort", "MIN (executed devices)"))


def parse_retry_backoff(text: str) -> tuple[float, float | None]:
    """``--retry-backoff 10`` (seconds between attempts) or ``10,2`` (then doubling each time)."""
    parts = [part.strip() for part in text.split(",")]
    if not 1 <= len(parts) <= 2:
        raise typer.BadParameter(f"--retry-backoff {text!r} must be SECONDS or SECONDS,FACTOR, e.g. 10,2")
    seconds = _float(parts[0], "--retry-backoff", "SECONDS")
    factor = _float(parts[1], "--retry-backoff", "FACTOR") if len(parts) == 2 else None
    return seconds, factor


def parse_retry_on(text: str) -> tuple[RetryOn, ...]:
    """``--retry-on DeviceNotOnline,GatewayTimeout,failed`` (any case)."""
    kinds: list[RetryOn] = []
    for item in _items(text):
        kind = _RETRY_ON.get(item.lower())
        if kind is None:
            known = ", ".join(kind.value for kind in RetryOn)
            raise typer.BadParameter(f"--retry-on: {item!r} is not one of {known}")
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise typer.BadParameter("--retry-on needs at least one of DeviceNotOnline, GatewayTimeout, failed")
    return tuple(kinds)


def rollout_options(max_per_minute: int | None, ramp: str | None, max_concurrency: int | None) -> Rollout | None:
    if max_per_minute is None and ramp is None and max_concurrency is None:
        return None
    return Rollout(max_per_minute, parse_ramp(ramp) if ramp is not None else None, max_concurrency)


def retry_options(attempts: int | None, backoff: str | None, retry_on: str | None) -> RetryPolicy | None:
    if attempts is None:
        if backoff is not None or retry_on is not None:
            raise typer.BadParameter("--retry-backoff and --retry-on need --retry ATTEMPTS")
        return None
    seconds, factor = parse_retry_backoff(backoff) if backoff is not None else (None, None)
    return RetryPolicy(attempts, seconds, factor, parse_retry_on(retry_on) if retry_on is not None else None)


def check_job_options(options: Mapping[str, Any], *, method_job: bool) -> None:
    """The rollout-control members of a job request, checked by the hub's rules."""
    try:
        JobControls.create(dict(options), method_job=method_job)
    except BadRequestError as exc:
        raise typer.BadParameter(exc.message) from None


# -- recurrence ----------------------------------------------------------------------------


def parse_at(values: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``--at 02:00`` (repeatable, or comma-separated) as (hours, minutes); ``--at :15`` is a
    minute of every hour. A schedule runs at every hour with every minute listed, so the times
    must form such a grid: 08:00,08:30,17:00,17:30 is fine, 08:00,17:30 is not."""
    times: set[tuple[int | None, int]] = set()
    for value in values:
        for item in _items(value):
            match = _TIME.fullmatch(item)
            hour = int(match.group(1)) if match and match.group(1) is not None else None
            if match is None or not 0 <= int(match.group(2)) <= 59 or (hour is not None and not 0 <= hour <= 23):
                raise typer.BadParameter(f"--at {item!r} must be HH:MM (00:00 to 23:59) or :MM")
            times.add((hour, int(match.group(2))))
    if not times:
        raise typer.BadParameter("--at needs a time such as 02:00")
    hours = sorted({hour for hour, _ in times if hour is not None})
    minutes = sorted({minute for _, minute in times})
    if hours and any(hour is None for hour, _ in times):
        raise typer.BadParameter("--at: give either HH:MM times or :MM minutes, not both")
    if hours and len(times) != len(hours) * len(minutes):
        raise typer.BadParameter(
            "--at: a schedule runs at every listed hour with every listed minute; give all of "
            + ",".join(f"{h:02d}:{m:02d}" for h in hours for m in minutes)
            + " or use two schedules"
        )
    return tuple(hours), tuple(minutes)


def _week_day(text: str) -> WeekDay:
    name = text.strip().lower()
    if len(name) >= 2:
        for day in _WEEK_DAYS:
            if day.value.lower().startswith(name):
                return day
    raise typer.BadParameter(f"--week-days: {text.strip()!r} is not a day (mon, tue, ..., sun)")


def parse_week_days(text: str) -> tuple[WeekDay, ...]:
    """``--week-days mon,wed`` or a range ``mon-fri`` (full names too, any case)."""
    chosen: set[WeekDay] = set()
    for item in _items(text):
        first, dash, last = item.partition("-")
        if dash:
            low, high = _week_day(first).number, _week_day(last).number
            if low > high:
                raise typer.BadParameter(f"--week-days: the range {item!r} runs backwards (weeks start on Monday)")
            chosen.update(_WEEK_DAYS[low : high + 1])
        else:
            chosen.add(_week_day(item))
    if not chosen:
        raise typer.BadParameter("--week-days needs at least one day, e.g. mon,wed or mon-fri")
    return tuple(sorted(chosen, key=lambda day: day.number))


def parse_month_days(text: str) -> tuple[int, ...]:
    """``--month-days 1,15,-1`` (negative days count from the month's end; -1 is the last)."""
    days: set[int] = set()
    for item in _items(text):
        day = _int(item, "--month-days", "a day")
        if day == 0 or not -31 <= day <= 31:
            raise typer.BadParameter(f"--month-days: {day} is not a day (1..31, or -1..-31 from the month's end)")
        days.add(day)
    if not days:
        raise typer.BadParameter("--month-days needs at least one day, e.g. 1,-1")
    return tuple(sorted(days))


def _iso(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{option} {text!r} is not an ISO-8601 date and time (without an offset it is local to --time-zone)"
        ) from None
    return text.strip()


def recurrence_options(
    *,
    every: int | None,
    unit: str | None,
    cron: str | None,
    at: Sequence[str],
    week_days: str | None,
    month_days: str | None,
    start: str | None,
    end: str | None,
    count: int | None,
) -> Recurrence:
    """The recurrence of ``schedule create``: ``--cron``, or ``--every N --unit U`` with
    ``--at``, ``--week-days`` and ``--month-days``. Without ``--unit``, week days make it weekly,
    month days monthly and ``--at`` alone daily."""
    start_time, end_time = _iso(start, "--start"), _iso(end, "--end")
    if cron is not None:
        given = [name for name, value in (("--every", every), ("--unit", unit), ("--week-days", week_days)) if value]
        given += ["--month-days"] if month_days else []
        given += ["--at"] if at else []
        if given:
            raise typer.BadParameter(f"--cron cannot be combined with {', '.join(given)}")
        return Recurrence.from_cron(cron, start_time=start_time, end_time=end_time, count=count)
    days = parse_week_days(week_days) if week_days is not None else ()
    month = parse_month_days(month_days) if month_days is not None else ()
    hours, minutes = parse_at(at) if at else ((), ())
    if unit is None:
        if days:
            unit = Frequency.WEEK
        elif month:
            unit = Frequency.MONTH
        elif hours:
            unit = Frequency.DAY
        elif minutes:
            unit = Frequency.HOUR
        elif every is not None:
            raise typer.BadParameter("--every needs --unit second|minute|hour|day|week|month")
        else:
            raise typer.BadParameter("give --every N --unit UNIT, --at, --week-days, --month-days or --cron")
    try:
        frequency = Frequency(unit.strip().lower())
    except ValueError:
        raise typer.BadParameter(
            f"--unit must be one of {', '.join(f.value for f in Frequency)}, got {unit!r}"
        ) from None
    return Recurrence.every(
        every if every is not None else 1,
        frequency,
        hours=hours,
        minutes=minutes,
        week_days=days,
        month_days=month,
        start_time=start_time,
        end_time=end_time,
        count=count,
    )


def check_recurrence(recurrence: Recurrence, time_zone: str | None) -> None:
    """The recurrence and time zone checked by the hub's rules (e.g. weekDays need unit week)."""
    try:
        zone = parse_time_zone(time_zone)
        parse_recurrence(recurrence.to_json(), zone, datetime.now(UTC))
    except BadRequestError as exc:
        raise typer.BadParameter(exc.message) from None


# -- whole schedule bodies -----------------------------------------------------------------


def read_schedule_file(path: Path) -> dict[str, Any]:
    """``--from-file``: a whole ``PUT /schedules/{id}`` body as JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"--from-file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"--from-file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise typer.BadParameter(f"--from-file {str(path)!r} must hold a JSON object (the schedule body)")
    return body


def check_schedule_body(schedule_id: str, body: Mapping[str, Any]) -> None:
    """A schedule body checked as the hub checks a PUT (the query's syntax is left to the hub)."""
    now = datetime.now(UTC)
    try:
        ScheduleRequest.create(schedule_id, dict(body), now, lambda template: JobRequest.create("check", template, now))
    except BadRequestError as exc:
        raise typer.BadParameter(exc.message) from None
