"""Schedules: a job template run on a recurrence; the PUT body's validation, states, run ids.

A schedule's ``enabled`` is what the operator asked for; its ``state`` is what the scheduler
does with it: ``enabled`` (runs come due), ``disabled``, ``completed`` (the recurrence has no
further run: past ``endTime`` or ``count`` runs made) or ``faulted`` (creating a run failed in
a way retrying cannot fix, ``fault_reason`` says why). Each run is an ordinary job whose id
is ``run_job_id(schedule_id, run_time)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from hub.domain.json import JsonObject, JsonValue
from hub.domain.recurrence import TICK, Recurrence, next_run_after, parse_recurrence, parse_time_zone
from hub.errors import BadRequestError

__all__ = [
    "MAX_SCHEDULE_ID_LENGTH",
    "TEMPLATE_FIELDS",
    "Overlap",
    "Schedule",
    "ScheduleRequest",
    "ScheduleState",
    "run_job_id",
    "validate_schedule_id",
]

# A run's job id adds "-YYYYMMDDTHHMMSSZ" (17 characters) and must stay within 64.
MAX_SCHEDULE_ID_LENGTH = 47
_SCHEDULE_ID = re.compile(rf"[A-Za-z0-9-]{{1,{MAX_SCHEDULE_ID_LENGTH}}}")

# What a job request has, less jobId and startTime (each run gets its own).
TEMPLATE_FIELDS = (
    "type",
    "queryCondition",
    "cloudToDeviceMethod",
    "updateTwin",
    "maxExecutionTimeInSeconds",
    "rollout",
    "abort",
    "retry",
    "continuous",
)
_BODY_FIELDS = frozenset({"scheduleId", "job", "recurrence", "timeZone", "enabled", "overlap"})


class ScheduleState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    COMPLETED = "completed"
    FAULTED = "faulted"


class Overlap(StrEnum):
    """What happens to a run that comes due while the previous run is still active."""

    SKIP = "skip"
    QUEUE = "queue"


def validate_schedule_id(schedule_id: object) -> str:
    if not isinstance(schedule_id, str) or not _SCHEDULE_ID.fullmatch(schedule_id):
        raise BadRequestError(
            f"scheduleId {schedule_id!r} is invalid: use 1-{MAX_SCHEDULE_ID_LENGTH} ASCII letters, digits or '-' "
            "(a run's job id appends its UTC time and must fit in 64 characters)"
        )
    return schedule_id


def run_job_id(schedule_id: str, run_time: datetime) -> str:
    """The job id of the run of ``schedule_id`` at ``run_time`` (to the second, UTC)."""
    if run_time.tzinfo is None:
        raise ValueError("run_time must be timezone-aware")
    return f"{schedule_id}-{run_time.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def _template(value: JsonValue, validate_job: Callable[[Mapping[str, JsonValue]], object]) -> JsonObject:
    if not isinstance(value, dict):
        raise BadRequestError("job must be a JSON object: a job request without jobId and startTime")
    for field in ("jobId", "startTime"):
        if value.get(field) is not None:
            raise BadRequestError(f"job.{field} is not allowed: each run of a schedule gets its own {field}")
    unknown = sorted(k for k, v in value.items() if v is not None and k not in TEMPLATE_FIELDS)
    if unknown:
        raise BadRequestError(f"job.{unknown[0]} is not a job request field: use {', '.join(TEMPLATE_FIELDS)}")
    template: JsonObject = {k: value[k] for k in TEMPLATE_FIELDS if value.get(k) is not None}
    try:
        validate_job(template)
    except BadRequestError as exc:
        raise BadRequestError(f"job: {exc.message}") from exc
    return template


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """A validated ``PUT /schedules/{scheduleId}`` body."""

    schedule_id: str
    job_template: JsonObject
    recurrence: Recurrence
    time_zone: ZoneInfo
    enabled: bool = True
    overlap: Overlap = Overlap.SKIP

    @classmethod
    def create(
        cls,
        schedule_id: object,
        body: Mapping[str, JsonValue],
        now: datetime,
        validate_job: Callable[[Mapping[str, JsonValue]], object],
    ) -> ScheduleRequest:
        """Validate the body field by field; BadRequestError names the field. ``validate_job``
        checks the job template as a job request (BadRequestError when it is not one)."""
        validate_schedule_id(schedule_id)
        assert isinstance(schedule_id, str)
        unknown = sorted(k for k in body if k not in _BODY_FIELDS)
        if unknown:
            raise BadRequestError(f"{unknown[0]} is not a schedule field: use {', '.join(sorted(_BODY_FIELDS))}")
        body_id = body.get("scheduleId")
        if body_id is not None and body_id != schedule_id:
            raise BadRequestError(f"scheduleId {body_id!r} in the body differs from {schedule_id!r} in the URL")
        if body.get("job") is None:
            raise BadRequestError("job is required: the job request each run creates, without jobId and startTime")
        template = _template(body["job"], validate_job)
        if body.get("recurrence") is None:
            raise BadRequestError("recurrence is required: {'frequency', 'interval', ...} or {'cron'}")
        zone = parse_time_zone(body.get("timeZone"))
        recurrence = parse_recurrence(body["recurrence"], zone, now)
        enabled = body.get("enabled")
        if enabled is None:
            enabled = True
        if not isinstance(enabled, bool):
            raise BadRequestError(f"enabled must be true or false, got {enabled!r}")
        overlap_value = body.get("overlap")
        try:
            overlap = Overlap.SKIP if overlap_value is None else Overlap(str(overlap_value))
            if overlap_value is not None and not isinstance(overlap_value, str):
                raise ValueError(overlap_value)
        except ValueError:
            raise BadRequestError(
                f"overlap must be one of {', '.join(o.value for o in Overlap)}, got {overlap_value!r}"
            ) from None
        return cls(schedule_id, template, recurrence, zone, enabled, overlap)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as the store keeps it. ``next_run_time`` is the next run the scheduler
    starts (None when there is none); ``last_run_*`` describe the latest run created
    (scheduled or manual); ``queued_run_time`` a run that waits for the previous one to end
    (overlap ``queue``); ``acquired_by`` / ``acquired_until`` the lease of the node handling
    its due runs; ``revision`` versions updates."""

    schedule_id: str
    job_template: JsonObject
    recurrence: Recurrence
    time_zone: ZoneInfo
    enabled: bool
    state: ScheduleState
    overlap: Overlap
    created_time: datetime
    updated_time: datetime
    next_run_time: datetime | None = None
    last_run_time: datetime | None = None
    last_run_job_id: str | None = None
    queued_run_time: datetime | None = None
    run_count: int = 0
    fault_reason: str | None = None
    acquired_by: str | None = None
    acquired_until: datetime | None = None
    revision: int = 1

    @classmethod
    def from_request(cls, request: ScheduleRequest, now: datetime, previous: Schedule | None = None) -> Schedule:
        """A new schedule, or ``previous`` replaced: the definition and state come from the
        request (a faulted or completed schedule starts again), the run history is kept."""
        schedule = cls(
            schedule_id=request.schedule_id,
            job_template=request.job_template,
            recurrence=request.recurrence,
            time_zone=request.time_zone,
            enabled=request.enabled,
            state=ScheduleState.DISABLED,
            overlap=request.overlap,
            created_time=now if previous is None else previous.created_time,
            updated_time=now,
        )
        if previous is not None:
            schedule = replace(
                schedule,
                last_run_time=previous.last_run_time,
                last_run_job_id=previous.last_run_job_id,
                run_count=previous.run_count,
                acquired_by=previous.acquired_by,
                acquired_until=previous.acquired_until,
                revision=previous.revision,
            )
        return schedule.enabled_from(now) if request.enabled else schedule

    def enabled_from(self, now: datetime) -> Schedule:
        """Enabled, with the next run from ``now`` on (a run at ``now`` itself counts, so a
        schedule starting now runs at once); nothing missed before ``now`` catches up."""
        after = now - TICK
        if self.last_run_time is not None and self.last_run_time > after:
            after = self.last_run_time
        upcoming = next_run_after(self.recurrence, self.time_zone, after, self.run_count)
        return replace(
            self,
            enabled=True,
            state=ScheduleState.ENABLED if upcoming is not None else ScheduleState.COMPLETED,
            next_run_time=upcoming,
            fault_reason=None,
        )

    def disabled(self) -> Schedule:
        return replace(self, enabled=False, state=ScheduleState.DISABLED, next_run_time=None, queued_run_time=None)

    def faulted(self, reason: str) -> Schedule:
        return replace(self, state=ScheduleState.FAULTED, next_run_time=None, queued_run_time=None, fault_reason=reason)

    def with_run(self, run_time: datetime, job_id: str) -> Schedule:
        """One more run created; a later run stays the last one."""
        counted = replace(self, run_count=self.run_count + 1)
        if self.last_run_time is None or run_time >= self.last_run_time:
            counted = replace(counted, last_run_time=run_time, last_run_job_id=job_id)
        if counted.recurrence.count is not None and counted.run_count >= counted.recurrence.count:
            counted = replace(counted, next_run_time=None)
            if counted.state is ScheduleState.ENABLED:
                counted = replace(counted, state=ScheduleState.COMPLETED)
        return counted

    def advanced(self, now: datetime) -> Schedule:
        """An enabled schedule's next run after ``now`` (completed when there is none)."""
        if self.state is not ScheduleState.ENABLED:
            return self
        upcoming = next_run_after(self.recurrence, self.time_zone, now, self.run_count)
        if upcoming is None:
            return replace(self, next_run_time=None, state=ScheduleState.COMPLETED)
        return replace(self, next_run_time=upcoming)
