"""The ScheduleStore port on SQL (a mixin of SqlStore), with the schedule row mappers."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.domain.jobs import Job
from hub.domain.json import JsonObject
from hub.domain.recurrence import parse_recurrence, recurrence_document
from hub.domain.schedules import Overlap, Schedule, ScheduleState
from hub.errors import ConcurrencyConflictError, ScheduleNotFoundError
from hub.storage.mappers import job_from_row
from hub.storage.tables import jobs_table, schedules_table

__all__ = ["SqlScheduleStore", "schedule_from_row", "schedule_values"]

_schedules = schedules_table
_jobs = jobs_table


def schedule_values(schedule: Schedule) -> dict[str, Any]:
    return {
        "schedule_id": schedule.schedule_id,
        "job_template": schedule.job_template,
        "recurrence": recurrence_document(schedule.recurrence),
        "time_zone": schedule.time_zone.key,
        "enabled": schedule.enabled,
        "state": schedule.state.value,
        "overlap": schedule.overlap.value,
        "created_time": schedule.created_time,
        "updated_time": schedule.updated_time,
        "next_run_time": schedule.next_run_time,
        "last_run_time": schedule.last_run_time,
        "last_run_job_id": schedule.last_run_job_id,
        "queued_run_time": schedule.queued_run_time,
        "run_count": schedule.run_count,
        "fault_reason": schedule.fault_reason,
        "acquired_by": schedule.acquired_by,
        "acquired_until": schedule.acquired_until,
        "revision": schedule.revision,
    }


def _json_object(value: Any) -> JsonObject:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object in the schedules table, got {type(value).__name__}")
    return value


def schedule_from_row(row: RowMapping) -> Schedule:
    zone = ZoneInfo(row["time_zone"])
    # The stored document always carries startTime, so the "now" it would default to is unused.
    recurrence = parse_recurrence(_json_object(row["recurrence"]), zone, row["created_time"])
    return Schedule(
        schedule_id=row["schedule_id"],
        job_template=_json_object(row["job_template"]),
        recurrence=recurrence,
        time_zone=zone,
        enabled=row["enabled"],
        state=ScheduleState(row["state"]),
        overlap=Overlap(row["overlap"]),
        created_time=row["created_time"],
        updated_time=row["updated_time"],
        next_run_time=row["next_run_time"],
        last_run_time=row["last_run_time"],
        last_run_job_id=row["last_run_job_id"],
        queued_run_time=row["queued_run_time"],
        run_count=row["run_count"],
        fault_reason=row["fault_reason"],
        acquired_by=row["acquired_by"],
        acquired_until=row["acquired_until"],
        revision=row["revision"],
    )


def _not_found(schedule_id: str) -> ScheduleNotFoundError:
    return ScheduleNotFoundError(f"Schedule {schedule_id!r} does not exist")


class SqlScheduleStore:
    """hub.engine.ports.ScheduleStore for SqlStore, which provides ``_begin`` and ``_dialect``."""

    _dialect: str

    if TYPE_CHECKING:

        def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def add_or_replace_schedule(self, schedule: Schedule, *, expected_revision: int | None) -> Schedule:
        values = schedule_values(schedule)
        if expected_revision is None:
            values["revision"] = 1
            insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
            statement = (
                insert(_schedules)
                .values(values)
                .on_conflict_do_nothing(index_elements=[_schedules.c.schedule_id])
                .returning(*_schedules.c)
            )
            async with self._begin() as connection:
                row = (await connection.execute(statement)).mappings().first()
            if row is None:
                raise ConcurrencyConflictError(f"Schedule {schedule.schedule_id!r} was created meanwhile")
            return schedule_from_row(row)
        try:
            return await self.update_schedule(schedule, expected_revision=expected_revision)
        except ScheduleNotFoundError:
            raise ConcurrencyConflictError(f"Schedule {schedule.schedule_id!r} was deleted meanwhile") from None

    async def get_schedule(self, schedule_id: str) -> Schedule:
        query = sa.select(_schedules).where(_schedules.c.schedule_id == schedule_id)
        async with self._begin() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is None:
            raise _not_found(schedule_id)
        return schedule_from_row(row)

    async def list_schedules(self, *, after: str | None = None, limit: int = 100) -> list[Schedule]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        query = sa.select(_schedules).order_by(_schedules.c.schedule_id).limit(limit)
        if after is not None:
            query = query.where(_schedules.c.schedule_id > after)
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [schedule_from_row(row) for row in rows]

    async def update_schedule(self, schedule: Schedule, *, expected_revision: int) -> Schedule:
        values = schedule_values(schedule)
        del values["schedule_id"]
        values["revision"] = expected_revision + 1
        statement = (
            sa.update(_schedules)
            .where(_schedules.c.schedule_id == schedule.schedule_id, _schedules.c.revision == expected_revision)
            .values(values)
            .returning(*_schedules.c)
        )
        async with self._begin() as connection:
            row = (await connection.execute(statement)).mappings().first()
            if row is None:
                query = sa.select(_schedules.c.revision).where(_schedules.c.schedule_id == schedule.schedule_id)
                actual = (await connection.execute(query)).scalar_one_or_none()
                if actual is None:
                    raise _not_found(schedule.schedule_id)
                raise ConcurrencyConflictError(
                    f"Schedule {schedule.schedule_id!r} changed meanwhile: revision {actual}, "
                    f"expected {expected_revision}"
                )
        return schedule_from_row(row)

    async def remove_schedule(self, schedule_id: str) -> None:
        statement = (
            sa.delete(_schedules).where(_schedules.c.schedule_id == schedule_id).returning(_schedules.c.schedule_id)
        )
        async with self._begin() as connection:
            deleted = (await connection.execute(statement)).first()
        if deleted is None:
            raise _not_found(schedule_id)

    async def acquire_due_schedules(
        self, *, node_id: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[Schedule]:
        if limit <= 0:
            return []
        available = sa.and_(
            sa.or_(
                sa.and_(
                    _schedules.c.state == ScheduleState.ENABLED.value,
                    _schedules.c.next_run_time.is_not(None),
                    _schedules.c.next_run_time <= now,
                ),
                _schedules.c.queued_run_time.is_not(None),
            ),
            sa.or_(
                _schedules.c.acquired_until.is_(None),
                _schedules.c.acquired_until <= now,
                _schedules.c.acquired_by == node_id,
            ),
        )
        candidates = (
            sa.select(_schedules.c.schedule_id)
            .where(available)
            .order_by(_schedules.c.next_run_time, _schedules.c.schedule_id)
            .limit(limit)
        )
        lease = sa.update(_schedules).values(
            acquired_by=node_id,
            acquired_until=now + timedelta(seconds=lease_seconds),
            revision=_schedules.c.revision + 1,
        )
        async with self._begin() as connection:
            if self._dialect == "postgresql":
                # As acquire_jobs: lock the candidates, skipping those another node is taking.
                locked = candidates.with_for_update(skip_locked=True)
                ids = list((await connection.execute(locked)).scalars())
                statement = lease.where(_schedules.c.schedule_id.in_(ids))
            else:
                statement = lease.where(_schedules.c.schedule_id.in_(candidates.scalar_subquery()), available)
            rows = (await connection.execute(statement.returning(*_schedules.c))).mappings().all()
        schedules = [schedule_from_row(row) for row in rows]
        far = datetime.max.replace(tzinfo=now.tzinfo)
        return sorted(schedules, key=lambda s: (s.next_run_time or far, s.schedule_id))

    async def list_schedule_runs(self, schedule_id: str, *, limit: int) -> list[Job]:
        query = (
            sa.select(_jobs)
            .where(_jobs.c.schedule_id == schedule_id)
            .order_by(_jobs.c.created_time.desc(), _jobs.c.job_id.desc())
            .limit(limit)
        )
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [job_from_row(row) for row in rows]
