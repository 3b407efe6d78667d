"""The ScheduleStore port on SQL (a mixin of SqlStore); the row mappers are in hub.storage.mappers."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.domain.jobs import Job
from hub.domain.schedules import Schedule, ScheduleState
from hub.errors import ConcurrencyConflictError, ScheduleNotFoundError
from hub.storage.mappers import job_from_row, schedule_from_row, schedule_values
from hub.storage.rows import lease_is_free, take_leases, update_versioned
from hub.storage.tables import jobs_table, schedules_table

__all__ = ["SqlScheduleStore"]

_schedules = schedules_table
_jobs = jobs_table


def _not_found(schedule_id: str) -> ScheduleNotFoundError:
    return ScheduleNotFoundError(f"Schedule {schedule_id!r} does not exist")


class SqlScheduleStore:
    """hub.ports.ScheduleStore for SqlStore, which provides ``_begin`` and ``_dialect``."""

    _dialect: str

    if TYPE_CHECKING:

        def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

        def _insert_ignoring_conflicts(self, table: sa.Table, key: sa.Column[Any]) -> sa.Insert: ...

    async def add_or_replace_schedule(self, schedule: Schedule, *, expected_revision: int | None) -> Schedule:
        if expected_revision is None:
            insert = self._insert_ignoring_conflicts(_schedules, _schedules.c.schedule_id)
            statement = insert.values({**schedule_values(schedule), "revision": 1}).returning(*_schedules.c)
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
        async with self._begin() as connection:
            row = await update_versioned(
                connection,
                _schedules,
                "schedule_id",
                schedule_values(schedule),
                expected_revision,
                what=f"Schedule {schedule.schedule_id!r}",
                not_found=lambda: _not_found(schedule.schedule_id),
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
            lease_is_free(_schedules, node_id, now),
        )
        async with self._begin() as connection:
            rows = await take_leases(
                connection,
                self._dialect,
                _schedules,
                "schedule_id",
                available,
                [_schedules.c.next_run_time, _schedules.c.schedule_id],
                limit=limit,
                node_id=node_id,
                now=now,
                lease_seconds=lease_seconds,
            )
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
