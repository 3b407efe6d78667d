"""Schedule recurrence: parsing, next run times (DST, month ends, leap days), cron, and the misfire rule.

Time is injected as plain datetimes; nothing here sleeps or reads the clock.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.recurrence import (
    CronRecurrence,
    DueRuns,
    Frequency,
    IntervalRecurrence,
    MonthlyOccurrence,
    Recurrence,
    RecurrenceSchedule,
    WeekDay,
    due_runs,
    next_run_after,
    parse_recurrence,
    parse_time_zone,
    recurrence_document,
)
from hub.errors import BadRequestError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def runs(recurrence: Recurrence, zone: ZoneInfo, after: datetime, n: int) -> list[datetime]:
    """The next ``n`` run times after ``after`` (fewer when the schedule ends)."""
    found: list[datetime] = []
    moment: datetime | None = after
    while moment is not None and len(found) < n:
        moment = next_run_after(recurrence, zone, moment, runs_done=len(found))
        if moment is not None:
            found.append(moment)
    return found


def local(moments: list[datetime], zone: ZoneInfo) -> list[str]:
    return [m.astimezone(zone).strftime("%Y-%m-%d %a %H:%M:%S%z") for m in moments]


def parse(body: dict[str, Any], zone: ZoneInfo = UTC_ZONE, now: datetime = NOW) -> Recurrence:
    return parse_recurrence(body, zone, now)


# -- parsing -----------------------------------------------------------------------------


def test_interval_form_is_parsed_with_defaults() -> None:
    recurrence = parse({"frequency": "Day"})
    assert recurrence == IntervalRecurrence(Frequency.DAY, 1, NOW)


def test_full_interval_form_is_parsed_and_normalised() -> None:
    recurrence = parse(
        {
            "frequency": "month",
            "interval": 2,
            "startTime": "2026-02-01T06:00:00",
            "endTime": "2027-02-01T00:00:00Z",
            "count": 5,
            "schedule": {
                "minutes": [30, 0, 30],
                "hours": 6,
                "monthDays": [-1, 1],
                "monthlyOccurrences": [{"day": "FRIDAY", "occurrence": -1}, {"day": "monday"}],
            },
        },
        BERLIN,
    )
    assert recurrence == IntervalRecurrence(
        Frequency.MONTH,
        2,
        utc(2026, 2, 1, 5),  # a time without an offset is local to the schedule's zone
        utc(2027, 2, 1),
        5,
        RecurrenceSchedule(
            minutes=(0, 30),
            hours=(6,),
            month_days=(-1, 1),
            monthly_occurrences=(MonthlyOccurrence(WeekDay.MONDAY), MonthlyOccurrence(WeekDay.FRIDAY, -1)),
        ),
    )


def test_cron_form_is_parsed() -> None:
    recurrence = parse({"cron": " */15  * * * * MON-FRI ", "count": 3})
    assert recurrence == CronRecurrence("*/15 * * * * MON-FRI", NOW, None, 3)


def test_time_zone_defaults_to_utc_and_takes_iana_names() -> None:
    assert parse_time_zone(None) == ZoneInfo("UTC")
    assert parse_time_zone("America/New_York") == NEW_YORK


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Mars/Olympus_Mons", "not a known IANA time zone"),
        ("", "must be an IANA time zone name"),
        (5, "must be an IANA time zone name"),
        ("../../etc/passwd", "not a known IANA time zone"),
        ("/etc/localtime", "not a known IANA time zone"),
    ],
)
def test_bad_time_zones_are_refused(value: object, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason) as info:
        parse_time_zone(value)
    assert "timeZone" in info.value.message


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ([], "recurrence", "JSON object"),
        ({}, "recurrence", "exactly one of frequency and cron"),
        ({"frequency": "day", "cron": "* * * * * *"}, "recurrence", "exactly one of frequency and cron"),
        ({"frequency": "year"}, "recurrence.frequency", "must be one of second, minute, hour, day, week, month"),
        ({"frequency": "day", "interval": 0}, "recurrence.interval", "positive integer"),
        ({"frequency": "day", "interval": True}, "recurrence.interval", "positive integer"),
        ({"frequency": "day", "interval": 1.5}, "recurrence.interval", "positive integer"),
        ({"frequency": "month", "interval": 19}, "recurrence.interval", "at most 18"),
        ({"frequency": "week", "interval": 79}, "recurrence.interval", "at most 78"),
        ({"frequency": "day", "interval": 549}, "recurrence.interval", "at most 548"),
        ({"frequency": "minute", "interval": 1001}, "recurrence.interval", "at most 1000"),
        ({"frequency": "day", "count": 0}, "recurrence.count", "positive integer"),
        ({"frequency": "day", "startTime": "tomorrow"}, "recurrence.startTime", "not an ISO-8601"),
        ({"frequency": "day", "startTime": 5}, "recurrence.startTime", "ISO-8601"),
        (
            {"frequency": "day", "startTime": "2026-02-01T00:00:00Z", "endTime": "2026-01-31T00:00:00Z"},
            "recurrence.endTime",
            "before startTime",
        ),
        ({"frequency": "day", "every": 2}, "recurrence.every", "not allowed"),
        ({"cron": "* * * * * *", "interval": 2}, "recurrence.interval", "not allowed with cron"),
        ({"cron": "*/5 * * * *"}, "recurrence.cron", "6 fields"),
        ({"cron": "@hourly"}, "recurrence.cron", "6 fields"),
        ({"cron": "61 * * * * *"}, "recurrence.cron", "not a valid cron expression"),
        ({"cron": "0 0 12 * * Funday"}, "recurrence.cron", "not a valid cron expression"),
        ({"cron": 5}, "recurrence.cron", "string"),
        ({"frequency": "day", "schedule": [1]}, "recurrence.schedule", "JSON object"),
        ({"frequency": "day", "schedule": {"minutes": [60]}}, "recurrence.schedule.minutes", "from 0 to 59"),
        ({"frequency": "day", "schedule": {"minutes": [-1]}}, "recurrence.schedule.minutes", "from 0 to 59"),
        ({"frequency": "day", "schedule": {"minutes": ["5"]}}, "recurrence.schedule.minutes", "from 0 to 59"),
        ({"frequency": "day", "schedule": {"minutes": []}}, "recurrence.schedule.minutes", "at least one"),
        ({"frequency": "day", "schedule": {"hours": [24]}}, "recurrence.schedule.hours", "from 0 to 23"),
        ({"frequency": "week", "schedule": {"weekDays": ["Mon"]}}, "recurrence.schedule.weekDays", "Monday"),
        ({"frequency": "week", "schedule": {"weekDays": []}}, "recurrence.schedule.weekDays", "at least one"),
        ({"frequency": "month", "schedule": {"monthDays": [0]}}, "recurrence.schedule.monthDays", "1..31"),
        ({"frequency": "month", "schedule": {"monthDays": [32]}}, "recurrence.schedule.monthDays", "1..31"),
        ({"frequency": "month", "schedule": {"monthDays": [-32]}}, "recurrence.schedule.monthDays", "-1..-31"),
        (
            {"frequency": "month", "schedule": {"monthlyOccurrences": [{"day": "Friday", "occurrence": 6}]}},
            "recurrence.schedule.monthlyOccurrences.occurrence",
            "1..5",
        ),
        (
            {"frequency": "month", "schedule": {"monthlyOccurrences": [{"day": "Friday", "occurrence": 0}]}},
            "recurrence.schedule.monthlyOccurrences.occurrence",
            "1..5",
        ),
        (
            {"frequency": "month", "schedule": {"monthlyOccurrences": [{"occurrence": 1}]}},
            "recurrence.schedule.monthlyOccurrences",
            "need a day",
        ),
        (
            {"frequency": "month", "schedule": {"monthlyOccurrences": [{"day": "Fri"}]}},
            "recurrence.schedule.monthlyOccurrences.day",
            "must be one of Monday",
        ),
        (
            {"frequency": "month", "schedule": {"monthlyOccurrences": [{"day": "Friday", "week": 1}]}},
            "recurrence.schedule.monthlyOccurrences",
            "only day and occurrence",
        ),
        ({"frequency": "month", "schedule": {"monthlyOccurrences": []}}, "monthlyOccurrences", "non-empty"),
        ({"frequency": "day", "schedule": {"months": [1]}}, "recurrence.schedule.months", "not supported"),
        # Azure Scheduler: weekDays only weekly, monthDays and monthlyOccurrences only monthly.
        ({"frequency": "day", "schedule": {"weekDays": ["Monday"]}}, "recurrence.schedule.weekDays", "frequency day"),
        ({"frequency": "week", "schedule": {"monthDays": [1]}}, "recurrence.schedule.monthDays", "frequency week"),
        (
            {"frequency": "week", "schedule": {"monthlyOccurrences": [{"day": "Monday"}]}},
            "recurrence.schedule.monthlyOccurrences",
            "frequency week",
        ),
        ({"frequency": "hour", "schedule": {"hours": [1]}}, "recurrence.schedule.hours", "allows only minutes"),
        ({"frequency": "minute", "schedule": {"minutes": [1]}}, "recurrence.schedule.minutes", "takes no schedule"),
        ({"frequency": "second", "schedule": {"hours": [1]}}, "recurrence.schedule.hours", "takes no schedule"),
        # Schedules that can never run are refused rather than stored as silently dead.
        ({"cron": "0 0 0 30 2 *"}, "recurrence never runs", "no day"),
        (
            {"frequency": "month", "interval": 12, "startTime": "2026-02-01T00:00:00Z",
             "schedule": {"monthDays": [30]}},
            "recurrence never runs",
            "no day",
        ),
        (
            {"frequency": "day", "startTime": "2026-02-01T10:00:00Z", "endTime": "2026-02-01T11:00:00Z",
             "schedule": {"hours": [9]}},
            "recurrence never runs",
            "between startTime and endTime",
        ),
    ],
)  # fmt: skip
def test_bad_recurrences_name_the_field_and_the_reason(body: Any, field: str, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason) as info:
        parse(body)
    assert field in info.value.message
    assert info.value.code == "ArgumentInvalid"


@pytest.mark.parametrize(
    "body",
    [
        {"frequency": "minute", "interval": 5, "startTime": "2026-03-01T10:00:00+01:00", "count": 10},
        {"frequency": "week", "schedule": {"weekDays": ["friday", "Monday"], "hours": [9, 17], "minutes": [0]}},
        {
            "frequency": "month",
            "endTime": "2030-01-01T00:00:00Z",
            "schedule": {"monthDays": [1, -1], "monthlyOccurrences": [{"day": "Friday", "occurrence": -1}]},
        },
        {"cron": "0 */5 * * * *", "startTime": "2026-01-02T00:00:00Z", "endTime": "2026-02-01T00:00:00Z"},
    ],
)
def test_documents_read_back_to_the_same_recurrence(body: dict[str, Any]) -> None:
    recurrence = parse(body, BERLIN)
    assert parse(recurrence_document(recurrence), BERLIN, now=NOW + timedelta(days=9)) == recurrence


# -- elapsed frequencies -----------------------------------------------------------------


def test_minutes_count_elapsed_time_from_start_time() -> None:
    recurrence = parse({"frequency": "minute", "interval": 90, "startTime": "2026-10-24T23:00:00Z"})
    # Across Berlin's fall back the spacing stays 90 real minutes.
    assert runs(recurrence, BERLIN, utc(2026, 10, 24), 4) == [
        utc(2026, 10, 24, 23),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 3, 30),
    ]
    assert next_run_after(recurrence, BERLIN, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 2)
    assert next_run_after(recurrence, BERLIN, utc(2026, 10, 25, 0, 29, 59, 999999)) == utc(2026, 10, 25, 0, 30)


def test_seconds_frequency() -> None:
    recurrence = parse({"frequency": "second", "interval": 10, "startTime": "2026-01-01T00:00:05Z"})
    assert runs(recurrence, UTC_ZONE, utc(2026, 1, 1, 0, 0, 30), 3) == [
        utc(2026, 1, 1, 0, 0, 35),
        utc(2026, 1, 1, 0, 0, 45),
        utc(2026, 1, 1, 0, 0, 55),
    ]


def test_hour_frequency_with_minutes_runs_at_those_local_minutes() -> None:
    recurrence = parse(
        {"frequency": "hour", "interval": 2, "startTime": "2026-06-01T08:10:00", "schedule": {"minutes": [0, 45]}},
        BERLIN,
    )
    assert local(runs(recurrence, BERLIN, NOW, 4), BERLIN) == [
        "2026-06-01 Mon 08:45:00+0200",  # 08:00 is before the start time
        "2026-06-01 Mon 10:00:00+0200",
        "2026-06-01 Mon 10:45:00+0200",
        "2026-06-01 Mon 12:00:00+0200",
    ]


def test_hour_frequency_minutes_in_the_repeated_hour_run_once() -> None:
    recurrence = parse(
        {"frequency": "hour", "startTime": "2026-10-25T00:00:00", "schedule": {"minutes": [0, 30]}}, BERLIN
    )
    assert local(runs(recurrence, BERLIN, utc(2026, 10, 24, 22, 59), 6), BERLIN) == [
        "2026-10-25 Sun 01:00:00+0200",
        "2026-10-25 Sun 01:30:00+0200",
        "2026-10-25 Sun 02:00:00+0200",
        "2026-10-25 Sun 02:30:00+0200",
        "2026-10-25 Sun 03:00:00+0100",  # 02:00 and 02:30 do not run again in the second pass
        "2026-10-25 Sun 03:30:00+0100",
    ]


# -- calendar frequencies and DST --------------------------------------------------------


def test_every_two_days_at_nine_stays_at_nine_local_across_dst() -> None:
    recurrence = parse({"frequency": "day", "interval": 2, "startTime": "2026-03-25T09:00:00"}, BERLIN)
    assert local(runs(recurrence, BERLIN, NOW, 4), BERLIN) == [
        "2026-03-25 Wed 09:00:00+0100",
        "2026-03-27 Fri 09:00:00+0100",
        "2026-03-29 Sun 09:00:00+0200",
        "2026-03-31 Tue 09:00:00+0200",
    ]
    # The interval counts from startTime, not from whenever we ask.
    assert next_run_after(recurrence, BERLIN, utc(2026, 4, 1, 12)) == utc(2026, 4, 2, 7)


def test_start_time_in_the_past_runs_at_the_next_occurrence() -> None:
    # Azure Scheduler's example: start 2015-04-07 14:00, every 2 days, now 2015-04-08 13:00.
    recurrence = parse({"frequency": "day", "interval": 2, "startTime": "2015-04-07T14:00:00Z"})
    assert next_run_after(recurrence, UTC_ZONE, utc(2015, 4, 8, 13)) == utc(2015, 4, 9, 14)


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        # Spring forward: 02:30 does not exist, the run comes at the first instant after the gap.
        (
            BERLIN,
            "2026-03-28T02:30:00",
            ["2026-03-28 Sat 02:30:00+0100", "2026-03-29 Sun 03:00:00+0200", "2026-03-30 Mon 02:30:00+0200"],
        ),
        (
            NEW_YORK,
            "2026-03-07T02:30:00",
            ["2026-03-07 Sat 02:30:00-0500", "2026-03-08 Sun 03:00:00-0400", "2026-03-09 Mon 02:30:00-0400"],
        ),
        # Fall back: the repeated time runs once, at its first occurrence.
        (
            BERLIN,
            "2026-10-24T02:30:00",
            ["2026-10-24 Sat 02:30:00+0200", "2026-10-25 Sun 02:30:00+0200", "2026-10-26 Mon 02:30:00+0100"],
        ),
        (
            NEW_YORK,
            "2026-10-31T01:30:00",
            ["2026-10-31 Sat 01:30:00-0400", "2026-11-01 Sun 01:30:00-0400", "2026-11-02 Mon 01:30:00-0500"],
        ),
    ],
)
def test_daily_runs_across_dst(zone: ZoneInfo, start: str, expected: list[str]) -> None:
    recurrence = parse({"frequency": "day", "startTime": start}, zone)
    assert local(runs(recurrence, zone, NOW, 3), zone) == expected


def test_asking_during_the_repeated_hour_does_not_run_it_again() -> None:
    recurrence = parse({"frequency": "day", "startTime": "2026-10-31T01:30:00"}, NEW_YORK)
    first_pass, second_pass = utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)  # both 01:30 local
    assert next_run_after(recurrence, NEW_YORK, first_pass - timedelta(seconds=1)) == first_pass
    assert next_run_after(recurrence, NEW_YORK, first_pass) == utc(2026, 11, 2, 6, 30)
    assert next_run_after(recurrence, NEW_YORK, second_pass - timedelta(minutes=10)) == utc(2026, 11, 2, 6, 30)


def test_several_times_in_the_gap_collapse_into_one_run() -> None:
    recurrence = parse(
        {"frequency": "day", "startTime": "2026-03-29T00:00:00", "schedule": {"hours": [1, 2, 3], "minutes": [0, 30]}},
        BERLIN,
    )
    assert local(runs(recurrence, BERLIN, NOW, 5), BERLIN) == [
        "2026-03-29 Sun 01:00:00+0100",
        "2026-03-29 Sun 01:30:00+0100",
        "2026-03-29 Sun 03:00:00+0200",  # 02:00, 02:30 and 03:00 all land here
        "2026-03-29 Sun 03:30:00+0200",
        "2026-03-30 Mon 01:00:00+0200",
    ]


def test_daily_schedule_pairs_every_hour_with_every_minute() -> None:
    recurrence = parse(
        {"frequency": "day", "startTime": "2026-01-05T00:00:00Z", "schedule": {"hours": [17, 5], "minutes": [45, 15]}}
    )
    assert local(runs(recurrence, UTC_ZONE, NOW, 5), UTC_ZONE) == [
        "2026-01-05 Mon 05:15:00+0000",
        "2026-01-05 Mon 05:45:00+0000",
        "2026-01-05 Mon 17:15:00+0000",
        "2026-01-05 Mon 17:45:00+0000",
        "2026-01-06 Tue 05:15:00+0000",
    ]


def test_weekly_on_monday_and_friday_at_nine() -> None:
    recurrence = parse(
        {
            "frequency": "week",
            "startTime": "2026-03-18T12:00:00",  # a Wednesday
            "schedule": {"weekDays": ["Monday", "Friday"], "hours": [9], "minutes": [0]},
        },
        BERLIN,
    )
    assert local(runs(recurrence, BERLIN, NOW, 5), BERLIN) == [
        "2026-03-20 Fri 09:00:00+0100",
        "2026-03-23 Mon 09:00:00+0100",
        "2026-03-27 Fri 09:00:00+0100",
        "2026-03-30 Mon 09:00:00+0200",
        "2026-04-03 Fri 09:00:00+0200",
    ]


def test_every_other_week_counts_weeks_from_the_start_week() -> None:
    recurrence = parse(
        {
            "frequency": "week",
            "interval": 2,
            "startTime": "2026-01-07T08:00:00Z",
            "schedule": {"weekDays": ["Tuesday", "Sunday"]},
        }
    )
    assert local(runs(recurrence, UTC_ZONE, NOW, 4), UTC_ZONE) == [
        "2026-01-11 Sun 08:00:00+0000",  # Tuesday 6th is before the start
        "2026-01-20 Tue 08:00:00+0000",
        "2026-01-25 Sun 08:00:00+0000",
        "2026-02-03 Tue 08:00:00+0000",
    ]


def test_weekly_without_week_days_runs_on_the_start_weekday() -> None:
    recurrence = parse({"frequency": "week", "startTime": "2026-01-07T08:00:00Z"})
    assert runs(recurrence, UTC_ZONE, NOW, 2) == [utc(2026, 1, 7, 8), utc(2026, 1, 14, 8)]


# -- month ends, leap days, monthly occurrences ------------------------------------------


def test_month_day_31_runs_only_in_months_that_have_one() -> None:
    recurrence = parse({"frequency": "month", "startTime": "2027-01-01T06:00:00Z", "schedule": {"monthDays": [31]}})
    assert [m.date().isoformat() for m in runs(recurrence, UTC_ZONE, NOW, 5)] == [
        "2027-01-31",
        "2027-03-31",
        "2027-05-31",
        "2027-07-31",
        "2027-08-31",
    ]


def test_monthly_from_the_31st_without_schedule_skips_short_months() -> None:
    recurrence = parse({"frequency": "month", "startTime": "2027-01-31T06:00:00Z"})
    assert [m.date().isoformat() for m in runs(recurrence, UTC_ZONE, NOW, 3)] == [
        "2027-01-31",
        "2027-03-31",
        "2027-05-31",
    ]


@pytest.mark.parametrize(("year", "february_end"), [(2027, "2027-02-28"), (2028, "2028-02-29")])
def test_last_day_of_month_includes_leap_day(year: int, february_end: str) -> None:
    recurrence = parse(
        {"frequency": "month", "startTime": f"{year}-01-01T00:00:00", "schedule": {"monthDays": [-1], "hours": [6]}},
        BERLIN,
    )
    got = [m.astimezone(BERLIN).date().isoformat() for m in runs(recurrence, BERLIN, NOW, 3)]
    assert got == [f"{year}-01-31", february_end, f"{year}-03-31"]


def test_month_day_29_in_february_only_in_leap_years() -> None:
    recurrence = parse(
        {"frequency": "month", "interval": 12, "startTime": "2027-02-01T00:00:00Z", "schedule": {"monthDays": [29]}}
    )
    assert [m.date().isoformat() for m in runs(recurrence, UTC_ZONE, NOW, 2)] == ["2028-02-29", "2032-02-29"]


def test_negative_month_days_count_from_the_end() -> None:
    recurrence = parse(
        {"frequency": "month", "startTime": "2028-02-01T00:00:00Z", "schedule": {"monthDays": [1, -2, -31]}}
    )
    # -31 exists only in 31-day months (it is the 1st there, already chosen).
    assert [m.date().isoformat() for m in runs(recurrence, UTC_ZONE, NOW, 4)] == [
        "2028-02-01",
        "2028-02-28",
        "2028-03-01",
        "2028-03-30",
    ]


def test_first_monday_and_last_friday_of_each_month() -> None:
    recurrence = parse(
        {
            "frequency": "month",
            "startTime": "2026-01-01T00:00:00",
            "schedule": {
                "hours": [5],
                "minutes": [15],
                "monthlyOccurrences": [{"day": "Monday", "occurrence": 1}, {"day": "Friday", "occurrence": -1}],
            },
        },
        NEW_YORK,
    )
    assert local(runs(recurrence, NEW_YORK, NOW, 6), NEW_YORK) == [
        "2026-01-05 Mon 05:15:00-0500",
        "2026-01-30 Fri 05:15:00-0500",
        "2026-02-02 Mon 05:15:00-0500",
        "2026-02-27 Fri 05:15:00-0500",
        "2026-03-02 Mon 05:15:00-0500",
        "2026-03-27 Fri 05:15:00-0400",
    ]


def test_fifth_friday_runs_only_in_months_that_have_one_and_without_occurrence_every_friday() -> None:
    fifth = parse(
        {
            "frequency": "month",
            "startTime": "2026-01-01T00:00:00Z",
            "schedule": {"monthlyOccurrences": [{"day": "Friday", "occurrence": 5}]},
        }
    )
    assert [m.date().isoformat() for m in runs(fifth, UTC_ZONE, NOW, 3)] == ["2026-01-30", "2026-05-29", "2026-07-31"]
    every = parse(
        {
            "frequency": "month",
            "startTime": "2026-02-01T00:00:00Z",
            "schedule": {"monthlyOccurrences": [{"day": "friday"}]},
        }
    )
    assert [m.day for m in runs(every, UTC_ZONE, NOW, 5)] == [6, 13, 20, 27, 6]
    third_from_end = parse(
        {
            "frequency": "month",
            "startTime": "2026-02-01T00:00:00Z",
            "schedule": {"monthlyOccurrences": [{"day": "Friday", "occurrence": -3}]},
        }
    )
    assert [m.date().isoformat() for m in runs(third_from_end, UTC_ZONE, NOW, 2)] == ["2026-02-13", "2026-03-13"]


# -- count and endTime -------------------------------------------------------------------


def test_count_ends_the_schedule_after_that_many_runs() -> None:
    recurrence = parse({"frequency": "day", "startTime": "2026-01-05T10:00:00Z", "count": 3})
    assert runs(recurrence, UTC_ZONE, NOW, 10) == [utc(2026, 1, 5, 10), utc(2026, 1, 6, 10), utc(2026, 1, 7, 10)]
    assert next_run_after(recurrence, UTC_ZONE, NOW, runs_done=3) is None


def test_end_time_ends_the_schedule_and_is_inclusive() -> None:
    recurrence = parse(
        {"frequency": "hour", "interval": 6, "startTime": "2026-01-05T00:00:00Z", "endTime": "2026-01-06T00:00:00Z"}
    )
    assert runs(recurrence, UTC_ZONE, NOW, 10) == [utc(2026, 1, 5, h) for h in (0, 6, 12, 18)] + [utc(2026, 1, 6)]
    assert next_run_after(recurrence, UTC_ZONE, utc(2026, 1, 6)) is None


def test_count_and_end_time_whichever_comes_first() -> None:
    body: dict[str, Any] = {"frequency": "day", "startTime": "2026-01-05T10:00:00Z", "endTime": "2026-01-07T10:00:00Z"}
    assert len(runs(parse({**body, "count": 2}), UTC_ZONE, NOW, 10)) == 2
    assert len(runs(parse({**body, "count": 9}), UTC_ZONE, NOW, 10)) == 3


def test_nothing_runs_before_the_start_time() -> None:
    recurrence = parse({"frequency": "day", "startTime": "2026-01-05T10:00:00Z", "schedule": {"hours": [9, 11]}})
    assert next_run_after(recurrence, UTC_ZONE, NOW) == utc(2026, 1, 5, 11)


def test_naive_instants_are_a_bug_not_bad_input() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run_after(parse({"frequency": "day"}), UTC_ZONE, datetime(2026, 1, 1))


# -- cron ----------------------------------------------------------------------------------


def test_cron_with_seconds() -> None:
    recurrence = parse({"cron": "*/20 * * * * *", "startTime": "2026-01-05T00:00:00Z"})
    assert runs(recurrence, UTC_ZONE, utc(2026, 1, 5, 0, 0, 10, 500), 3) == [
        utc(2026, 1, 5, 0, 0, 20),
        utc(2026, 1, 5, 0, 0, 40),
        utc(2026, 1, 5, 0, 1),
    ]
    assert next_run_after(recurrence, UTC_ZONE, NOW) == utc(2026, 1, 5)  # the start time itself may run


def test_cron_is_evaluated_in_the_time_zone() -> None:
    recurrence = parse({"cron": "0 0 9 * * MON-FRI"}, NEW_YORK)
    assert local(runs(recurrence, NEW_YORK, utc(2026, 3, 6), 3), NEW_YORK) == [
        "2026-03-06 Fri 09:00:00-0500",
        "2026-03-09 Mon 09:00:00-0400",
        "2026-03-10 Tue 09:00:00-0400",
    ]


def test_cron_across_spring_forward_and_fall_back() -> None:
    recurrence = parse({"cron": "30 30 2 * * *"}, BERLIN)
    assert local(runs(recurrence, BERLIN, utc(2026, 3, 28), 2), BERLIN) == [
        "2026-03-28 Sat 02:30:30+0100",
        "2026-03-29 Sun 03:00:00+0200",
    ]
    assert local(runs(recurrence, BERLIN, utc(2026, 10, 25), 2), BERLIN) == [
        "2026-10-25 Sun 02:30:30+0200",
        "2026-10-26 Mon 02:30:30+0100",
    ]


def test_quarter_hourly_cron_through_the_repeated_hour() -> None:
    recurrence = parse({"cron": "0 */15 * * * *"}, NEW_YORK)
    assert local(runs(recurrence, NEW_YORK, utc(2026, 11, 1, 5, 40), 3), NEW_YORK) == [
        "2026-11-01 Sun 01:45:00-0400",
        "2026-11-01 Sun 02:00:00-0500",  # 01:00..01:45 of the second pass already ran
        "2026-11-01 Sun 02:15:00-0500",
    ]
    assert next_run_after(recurrence, NEW_YORK, utc(2026, 11, 1, 6, 20)) == utc(2026, 11, 1, 7)


# -- misfires: coalesce and grace ----------------------------------------------------------


HOURLY = IntervalRecurrence(Frequency.HOUR, 1, utc(2026, 1, 5))
GRACE = timedelta(minutes=5)


def test_a_run_on_time_is_due() -> None:
    due = due_runs(HOURLY, UTC_ZONE, utc(2026, 1, 5, 9), utc(2026, 1, 5, 10, 0, 0, 300), GRACE)
    assert due == DueRuns(run_time=utc(2026, 1, 5, 10), next_run_time=utc(2026, 1, 5, 11))
    assert due.runs == 1


def test_nothing_is_due_before_the_next_run() -> None:
    due = due_runs(HOURLY, UTC_ZONE, utc(2026, 1, 5, 9), utc(2026, 1, 5, 9, 59), GRACE)
    assert due == DueRuns(run_time=None, next_run_time=utc(2026, 1, 5, 10))
    assert due.runs == 0


def test_first_run_at_the_start_time() -> None:
    due = due_runs(HOURLY, UTC_ZONE, None, utc(2026, 1, 5, 0, 0, 1), GRACE)
    assert due == DueRuns(run_time=utc(2026, 1, 5), next_run_time=utc(2026, 1, 5, 1))


def test_after_an_outage_one_catch_up_run_within_grace() -> None:
    # Down from 09:30 to 14:03: the runs at 10, 11, 12, 13 and 14 were missed; only 14:00 runs.
    due = due_runs(HOURLY, UTC_ZONE, utc(2026, 1, 5, 9), utc(2026, 1, 5, 14, 3), GRACE)
    assert due == DueRuns(run_time=utc(2026, 1, 5, 14), next_run_time=utc(2026, 1, 5, 15))
    # Handled: asking again right away runs nothing more (never a burst).
    again = due_runs(HOURLY, UTC_ZONE, due.run_time, utc(2026, 1, 5, 14, 3, 1), GRACE)
    assert again == DueRuns(run_time=None, next_run_time=utc(2026, 1, 5, 15))


def test_after_an_outage_beyond_grace_nothing_runs_until_the_next_time() -> None:
    due = due_runs(HOURLY, UTC_ZONE, utc(2026, 1, 5, 9), utc(2026, 1, 5, 14, 6), GRACE)
    assert due == DueRuns(run_time=None, next_run_time=utc(2026, 1, 5, 15), missed_time=utc(2026, 1, 5, 14))


def test_long_outage_of_a_per_second_cron_is_cheap_and_runs_once() -> None:
    recurrence = parse({"cron": "* * * * * *", "startTime": "2026-01-05T00:00:00Z"}, BERLIN)
    now = utc(2026, 4, 1, 12, 0, 0, 400_000)
    due = due_runs(recurrence, BERLIN, utc(2026, 1, 5), now, timedelta(seconds=1))
    assert due == DueRuns(run_time=utc(2026, 4, 1, 12), next_run_time=utc(2026, 4, 1, 12, 0, 1))


def test_catch_up_respects_count_and_end_time() -> None:
    counted = IntervalRecurrence(Frequency.HOUR, 1, utc(2026, 1, 5), count=3)
    assert due_runs(counted, UTC_ZONE, utc(2026, 1, 5, 1), utc(2026, 1, 5, 5, 1), GRACE, runs_done=2) == DueRuns(
        run_time=utc(2026, 1, 5, 5), next_run_time=None
    )
    assert due_runs(counted, UTC_ZONE, utc(2026, 1, 5, 5), utc(2026, 1, 5, 9), GRACE, runs_done=3) == DueRuns(
        run_time=None, next_run_time=None
    )
    ended = IntervalRecurrence(Frequency.HOUR, 1, utc(2026, 1, 5), end_time=utc(2026, 1, 5, 3))
    assert due_runs(ended, UTC_ZONE, utc(2026, 1, 5, 2), utc(2026, 1, 5, 3, 2), GRACE) == DueRuns(
        run_time=utc(2026, 1, 5, 3), next_run_time=None
    )
    assert due_runs(ended, UTC_ZONE, utc(2026, 1, 5, 2), utc(2026, 1, 5, 9), GRACE) == DueRuns(
        run_time=None, next_run_time=None, missed_time=utc(2026, 1, 5, 3)
    )


def test_catch_up_across_dst_uses_the_real_run_times() -> None:
    recurrence = parse({"frequency": "day", "startTime": "2026-03-01T02:30:00"}, BERLIN)
    # The hub was down over the gap; the 29th's run was at 03:00 CEST (01:00 UTC).
    due = due_runs(recurrence, BERLIN, utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 4), GRACE)
    assert due == DueRuns(run_time=utc(2026, 3, 29, 1), next_run_time=utc(2026, 3, 30, 0, 30))


def test_negative_grace_is_a_bug() -> None:
    with pytest.raises(ValueError, match="grace"):
        due_runs(HOURLY, UTC_ZONE, None, NOW, timedelta(seconds=-1))


# -- properties ----------------------------------------------------------------------------

# Zones without DST (or UTC) for the brute-force comparison: there a run is simply a local
# minute that the schedule names; zones with DST get the ordering property below.
PLAIN_ZONES = [UTC_ZONE, ZoneInfo("Asia/Kolkata"), ZoneInfo("Asia/Kathmandu")]
DST_ZONES = [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe")]
WINDOW = timedelta(hours=30)
# Local midnights of 2026's DST changes in New York, Berlin and Lord Howe (a 30-minute shift).
TRANSITIONS = [datetime(2026, m, d) for m, d in ((3, 8), (3, 29), (10, 25), (11, 1), (4, 5), (10, 4))]

starts = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0)
)
minute_sets = st.sets(st.integers(0, 59), min_size=1, max_size=4).map(lambda s: sorted(s))
hour_sets = st.sets(st.integers(0, 23), min_size=1, max_size=3).map(lambda s: sorted(s))


@st.composite
def simple_schedules(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["minute", "hour", "hour-minutes", "day"]))
    start = draw(starts).isoformat()
    if kind == "minute":
        return {"frequency": "minute", "interval": draw(st.integers(1, 200)), "startTime": start}
    if kind == "hour":
        return {"frequency": "hour", "interval": draw(st.integers(1, 5)), "startTime": start}
    if kind == "hour-minutes":
        schedule = {"minutes": draw(minute_sets)}
        return {"frequency": "hour", "interval": draw(st.integers(1, 3)), "startTime": start, "schedule": schedule}
    schedule = {"hours": draw(hour_sets), "minutes": draw(minute_sets)}
    return {"frequency": "day", "interval": draw(st.integers(1, 2)), "startTime": start, "schedule": schedule}


def is_run(body: dict[str, Any], zone: ZoneInfo, start: datetime, moment: datetime) -> bool:
    """Brute force, straight from the definition, for zones without DST."""
    if moment < start:
        return False
    wall, local_start = moment.astimezone(zone), start.astimezone(zone)
    frequency, interval = body["frequency"], body["interval"]
    schedule = body.get("schedule", {})
    if frequency == "minute":
        return (moment - start) % timedelta(minutes=interval) == timedelta(0)
    if frequency == "hour" and not schedule:
        return (moment - start) % timedelta(hours=interval) == timedelta(0)
    if frequency == "hour":
        hours = (wall.replace(minute=0) - local_start.replace(minute=0)) // timedelta(hours=1)
        return hours % interval == 0 and wall.minute in schedule["minutes"]
    days = (wall.date() - local_start.date()).days
    return days % interval == 0 and wall.hour in schedule["hours"] and wall.minute in schedule["minutes"]


def scan(recurrence: Recurrence, zone: ZoneInfo, begin: datetime, end: datetime) -> list[datetime]:
    found: list[datetime] = []
    moment = next_run_after(recurrence, zone, begin)
    while moment is not None and moment <= end:
        found.append(moment)
        moment = next_run_after(recurrence, zone, moment)
    return found


@settings(max_examples=40, deadline=None)
@given(body=simple_schedules(), zone=st.sampled_from(PLAIN_ZONES), offset=st.integers(-120, 3000))
def test_next_run_after_matches_a_minute_by_minute_scan(body: dict[str, Any], zone: ZoneInfo, offset: int) -> None:
    recurrence = parse(body, zone)
    begin = recurrence.start_time + timedelta(minutes=offset)
    minutes = int(WINDOW / timedelta(minutes=1))
    expected = [begin + timedelta(minutes=i) for i in range(1, minutes + 1)]
    expected = [m for m in expected if is_run(body, zone, recurrence.start_time, m)]
    assert scan(recurrence, zone, begin, begin + WINDOW) == expected


@settings(max_examples=30, deadline=None)
@given(
    body=simple_schedules().filter(lambda b: "schedule" not in b and b["frequency"] != "day"),
    zone=st.sampled_from(DST_ZONES),
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-36 * 60, 0),
)
def test_elapsed_intervals_match_a_minute_by_minute_scan_across_dst(
    body: dict[str, Any], zone: ZoneInfo, transition: datetime, offset: int
) -> None:
    body = {**body, "startTime": (transition - timedelta(days=1, minutes=offset)).isoformat()}
    recurrence = parse(body, zone)
    begin = transition.replace(tzinfo=zone).astimezone(UTC) + timedelta(minutes=offset)
    minutes = int(WINDOW / timedelta(minutes=1))
    expected = [begin + timedelta(minutes=i) for i in range(1, minutes + 1)]
    expected = [m for m in expected if is_run(body, zone, recurrence.start_time, m)]
    assert scan(recurrence, zone, begin, begin + WINDOW) == expected


@settings(max_examples=40, deadline=None)
@given(
    body=simple_schedules(),
    zone=st.sampled_from(DST_ZONES),
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-36 * 60, 0),
)  # fmt: skip
def test_run_times_strictly_increase_and_nothing_is_skipped_across_dst(
    body: dict[str, Any], zone: ZoneInfo, transition: datetime, offset: int
) -> None:
    body = {
        **body,
        "startTime": (transition - timedelta(days=2)).replace(hour=int(body["startTime"][11:13])).isoformat(),
    }
    recurrence = parse(body, zone)
    begin = transition.replace(tzinfo=zone).astimezone(UTC) + timedelta(minutes=offset)
    found = scan(recurrence, zone, begin, begin + timedelta(hours=48))
    assert all(a < b for a, b in itertools.pairwise(found))
    # Every run lies on a wall minute the schedule names, or at the end of a DST gap.
    for moment in found:
        wall = moment.astimezone(zone)
        minutes = body.get("schedule", {}).get("minutes")
        if minutes is not None and wall.minute not in minutes:
            gap_end = _is_gap_end(moment, zone)
            assert gap_end, f"{wall} is neither a scheduled minute nor the end of a DST gap"
    # No run is skipped: asking from just before each run finds that run.
    for moment in found:
        assert next_run_after(recurrence, zone, moment - timedelta(microseconds=1)) == moment


def _is_gap_end(moment: datetime, zone: ZoneInfo) -> bool:
    before = (moment - timedelta(microseconds=1)).astimezone(zone).utcoffset()
    return before != moment.astimezone(zone).utcoffset()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Minutes given: the time is exact, whatever second the schedule was created at.
        ({"frequency": "day", "schedule": {"hours": [2], "minutes": [0]}}, datetime(2026, 5, 2, 2, 0, tzinfo=UTC)),
        ({"frequency": "hour", "schedule": {"minutes": [45]}}, datetime(2026, 5, 1, 10, 45, tzinfo=UTC)),
        # Only the hour given: minute and second come from the start, as in Azure Scheduler.
        ({"frequency": "day", "schedule": {"hours": [2]}}, datetime(2026, 5, 2, 2, 15, 30, 250000, tzinfo=UTC)),
    ],
)
def test_times_with_explicit_minutes_fall_on_second_zero(body: dict[str, Any], expected: datetime) -> None:
    created = datetime(2026, 5, 1, 10, 15, 30, 250000, tzinfo=UTC)
    recurrence = parse_recurrence(body, UTC_ZONE, created)
    assert next_run_after(recurrence, UTC_ZONE, created) == expected
