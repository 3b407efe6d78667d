"""SqlStore: the engine's Store on SQLAlchemy's asyncio engine, for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.domain.clock import Clock, SystemClock
from hub.domain.devices import ConnectionState, Device, DeviceStatus
from hub.domain.jobs import DeviceJob, DeviceJobStatistics, DeviceJobStatus, Job, JobEvent, JobStatus, JobType
from hub.domain.json import JsonObject
from hub.domain.policies import AccessPolicy
from hub.domain.twin import Twin
from hub.errors import (
    ConcurrencyConflictError,
    DeviceAlreadyExistsError,
    DeviceNotFoundError,
    JobAlreadyExistsError,
    JobNotFoundError,
)
from hub.ports import PresenceUpdate, TwinJobBatch
from hub.query.ast import Expr, Query
from hub.storage.certificates import SqlCertificateStore
from hub.storage.engines import create_engine
from hub.storage.failures import translate_errors
from hub.storage.mappers import (
    device_from_row,
    device_identity_values,
    device_job_from_row,
    device_job_values,
    job_event_from_row,
    job_event_values,
    job_from_row,
    job_values,
    new_device_values,
    policy_from_row,
    policy_values,
    twin_from_row,
    twin_values,
)
from hub.storage.migrate import upgrade
from hub.storage.query import SqlQueries
from hub.storage.rows import lease_is_free, take_leases, update_versioned
from hub.storage.schedules import SqlScheduleStore
from hub.storage.tables import (
    NULLABLE_JSON_TYPE,
    UtcDateTime,
    access_policies_table,
    device_jobs_table,
    devices_table,
    job_events_table,
    jobs_table,
)

__all__ = ["SqlStore"]

_devices = devices_table
_policies = access_policies_table
_device_jobs = device_jobs_table
_jobs = jobs_table
_job_events = job_events_table

_DEVICE_COLUMNS = tuple(
    _devices.c[name]
    for name in (
        "device_id",
        "generation_id",
        "primary_key",
        "secondary_key",
        "status",
        "status_reason",
        "status_updated_time",
        "connection_state",
        "connection_state_updated_time",
        "last_activity_time",
        "etag_revision",
        "created_time",
        "auth_type",
        "primary_thumbprint",
        "secondary_thumbprint",
    )
)
_TWIN_COLUMNS = tuple(
    _devices.c[name]
    for name in (
        "device_id",
        "tags",
        "desired",
        "desired_metadata",
        "desired_version",
        "reported",
        "reported_metadata",
        "reported_version",
        "twin_version",
        "twin_revision",
        "status",
        "status_reason",
        "status_updated_time",
        "connection_state",
        "last_activity_time",
        "etag_revision",
        "auth_type",
        "primary_thumbprint",
        "secondary_thumbprint",
    )
)
# Well under both SQLite's (32766) and PostgreSQL's (32767) bound-parameter limits.
_IN_CHUNK = 1000

# One statement for every kind of presence update, so a batch is a single executemany that
# keeps the caller's order; a NULL parameter leaves the column as it is.
_activity = sa.bindparam("p_activity_time", type_=UtcDateTime())
_record_presence = (
    sa.update(_devices)
    .where(_devices.c.device_id == sa.bindparam("p_device_id"))
    .values(
        connection_state=sa.func.coalesce(sa.bindparam("p_state", type_=sa.String(32)), _devices.c.connection_state),
        connection_state_updated_time=sa.func.coalesce(
            sa.bindparam("p_state_time", type_=UtcDateTime()), _devices.c.connection_state_updated_time
        ),
        # Last activity only moves forward: a batch may carry a stale touch after a reconnect.
        last_activity_time=sa.case(
            (
                sa.and_(
                    _activity.is_not(None),
                    sa.or_(_devices.c.last_activity_time.is_(None), _devices.c.last_activity_time < _activity),
                ),
                _activity,
            ),
            else_=_devices.c.last_activity_time,
        ),
    )
)


_PENDING_DEVICE_STATUSES = (DeviceJobStatus.PENDING.value, DeviceJobStatus.SCHEDULED.value)
_OPEN_DEVICE_STATUSES = tuple(status.value for status in DeviceJobStatus if not status.is_terminal)
_TERMINAL_DEVICE_STATUSES = tuple(status.value for status in DeviceJobStatus if status.is_terminal)
_TERMINAL_JOB_STATUSES = tuple(status.value for status in JobStatus if status.is_terminal)

# One executemany for a batch of device job updates; the b_ names keep clear of the columns'.
# A terminal record keeps its result: the first one wins. (The statuses are inline literals:
# an expanding IN parameter cannot be used with executemany.)
_update_device_job = (
    sa.update(_device_jobs)
    .where(
        _device_jobs.c.job_id == sa.bindparam("b_job_id"),
        _device_jobs.c.device_id == sa.bindparam("b_device_id"),
        _device_jobs.c.status.not_in([sa.literal_column(f"'{status}'") for status in _TERMINAL_DEVICE_STATUSES]),
    )
    .values(
        status=sa.bindparam("b_status", type_=sa.String(32)),
        last_updated_time=sa.bindparam("b_last_updated_time", type_=UtcDateTime()),
        start_time=sa.bindparam("b_start_time", type_=UtcDateTime()),
        end_time=sa.bindparam("b_end_time", type_=UtcDateTime()),
        outcome=sa.bindparam("b_outcome", type_=NULLABLE_JSON_TYPE),
        error=sa.bindparam("b_error", type_=NULLABLE_JSON_TYPE),
        # An update without a count (a cancel, a timeout) keeps the attempts made.
        attempts=sa.func.coalesce(sa.bindparam("b_attempts", type_=sa.Integer()), _device_jobs.c.attempts),
    )
)

# One executemany writing a batch of twins (the columns save_twin writes); t_ names likewise.
_TWIN_VALUE_COLUMNS = tuple(twin_values(Twin(device_id="")))
_REPORTED_COLUMNS = frozenset({"reported", "reported_metadata", "reported_version"})


def _twin_update(columns: Sequence[str]) -> sa.Update:
    return (
        sa.update(_devices)
        .where(_devices.c.device_id == sa.bindparam("t_device_id"))
        .values({name: sa.bindparam(f"t_{name}", type_=_devices.c[name].type) for name in columns})
    )


_update_twin = _twin_update(_TWIN_VALUE_COLUMNS)
# Back-end changes (twin jobs) leave reported properties alone: not re-serialising and
# re-writing the largest columns is a third of a twin job's database time.
_update_twin_keeping_reported = _twin_update([c for c in _TWIN_VALUE_COLUMNS if c not in _REPORTED_COLUMNS])

# Fails records (already claimed in the same transaction) whose device no longer exists.
_fail_missing_device_job = (
    sa.update(_device_jobs)
    .where(
        _device_jobs.c.job_id == sa.bindparam("m_job_id"),
        _device_jobs.c.device_id == sa.bindparam("m_device_id"),
    )
    .values(
        status=DeviceJobStatus.FAILED.value,
        outcome=None,
        error=sa.bindparam("m_error", type_=NULLABLE_JSON_TYPE),
    )
)


def _device_job_params(job: DeviceJob) -> dict[str, Any]:
    return {
        "b_job_id": job.job_id,
        "b_device_id": job.device_id,
        "b_status": job.status.value,
        "b_last_updated_time": job.last_updated_time,
        "b_start_time": job.start_time,
        "b_end_time": job.end_time,
        "b_outcome": job.outcome,
        "b_error": job.error,
        "b_attempts": job.attempts,
    }


def _twin_params(twin: Twin, *, with_reported: bool = True) -> dict[str, Any]:
    params = {
        f"t_{name}": value
        for name, value in twin_values(twin).items()
        if with_reported or name not in _REPORTED_COLUMNS
    }
    params["t_device_id"] = twin.device_id
    return params


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[start : start + _IN_CHUNK] for start in range(0, len(items), _IN_CHUNK)]


def _job_not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"Job {job_id!r} does not exist")


def _presence_params(update: PresenceUpdate) -> dict[str, Any]:
    state = update.connection_state
    return {
        "p_device_id": update.device_id,
        "p_state": state.value if state is not None else None,
        "p_state_time": update.at if state is not None else None,
        # Connecting and any traffic are activity; a disconnect is not.
        "p_activity_time": None if state is ConnectionState.DISCONNECTED else update.at,
    }


def _first_by_key(items: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows keyed by ``key``, the first occurrence winning, in input order."""
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        rows.setdefault(item[key], item)
    return list(rows.values())


class SqlStore(SqlScheduleStore, SqlCertificateStore):
    """Implements hub.ports.Store; build one with ``SqlStore.open(url)``."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock: Clock = clock or SystemClock()
        self._dialect = engine.dialect.name
        self._queries = SqlQueries(engine)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str | URL,
        *,
        migrate: bool = True,
        clock: Clock | None = None,
        connect_args: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[SqlStore]:
        """Create the engine, upgrade the schema to head (unless ``migrate`` is false), and
        dispose of the engine on exit. ``connect_args`` go to the driver's connect()."""
        engine = create_engine(url, connect_args=connect_args)
        try:
            if migrate:
                await upgrade(engine)
            yield cls(engine, clock=clock)
        finally:
            await engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        """For stores and query runners that share this database."""
        return self._engine

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self._engine.begin() as connection:
                yield connection

    def _insert_ignoring_conflicts(self, table: sa.Table, key: sa.Column[Any]) -> sa.Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
        if self._dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        raise NotImplementedError(f"unsupported database dialect {self._dialect!r}")

    @staticmethod
    async def _raise_missing_or_conflict(
        connection: AsyncConnection, device_id: str, revision: sa.Column[Any], expected: int
    ) -> None:
        query = sa.select(revision).where(_devices.c.device_id == device_id)
        actual = (await connection.execute(query)).scalar_one_or_none()
        if actual is None:
            raise DeviceNotFoundError(f"Device {device_id!r} is not registered", device_id=device_id)
        raise ConcurrencyConflictError(
            f"Device {device_id!r} changed meanwhile: revision {actual}, expected {expected}", device_id=device_id
        )

    # -- devices -------------------------------------------------------------------------

    async def add_device(self, device: Device) -> Device:
        statement = (
            self._insert_ignoring_conflicts(_devices, _devices.c.device_id)
            .values(new_device_values(device))
            .returning(_devices.c.device_id)
        )
        async with self._begin() as connection:
            inserted = (await connection.execute(statement)).first()
        if inserted is None:
            raise DeviceAlreadyExistsError(f"Device {device.device_id!r} already exists", device_id=device.device_id)
        return device

    async def add_devices(self, devices: Sequence[Device]) -> set[str]:
        if not devices:
            return set()
        rows = _first_by_key([new_device_values(device) for device in devices], "device_id")
        statement = self._insert_ignoring_conflicts(_devices, _devices.c.device_id).returning(_devices.c.device_id)
        async with self._begin() as connection:
            inserted = set((await connection.execute(statement, rows)).scalars())
        return {row["device_id"] for row in rows} - inserted

    async def get_device(self, device_id: str) -> Device:
        query = sa.select(*_DEVICE_COLUMNS).where(_devices.c.device_id == device_id)
        async with self._begin() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is None:
            raise DeviceNotFoundError(f"Device {device_id!r} is not registered", device_id=device_id)
        return device_from_row(row)

    async def list_devices(self, *, limit: int = 1000, after: str | None = None) -> list[Device]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        query = sa.select(*_DEVICE_COLUMNS).order_by(_devices.c.device_id).limit(limit)
        if after is not None:
            query = query.where(_devices.c.device_id > after)
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [device_from_row(row) for row in rows]

    async def count_devices(self) -> int:
        query = sa.select(sa.func.count()).select_from(_devices)
        async with self._begin() as connection:
            return int((await connection.execute(query)).scalar_one())

    async def count_devices_by_status(self) -> dict[DeviceStatus, int]:
        query = sa.select(_devices.c.status, sa.func.count()).group_by(_devices.c.status)
        counts = dict.fromkeys(DeviceStatus, 0)
        async with self._begin() as connection:
            for status, count in await connection.execute(query):
                counts[DeviceStatus(status)] = int(count)
        return counts

    async def update_device(self, device: Device, *, expected_revision: int) -> Device:
        statement = (
            sa.update(_devices)
            .where(_devices.c.device_id == device.device_id, _devices.c.etag_revision == expected_revision)
            .values(**device_identity_values(device), etag_revision=expected_revision + 1)
            .returning(*_DEVICE_COLUMNS)
        )
        async with self._begin() as connection:
            row = (await connection.execute(statement)).mappings().first()
            if row is None:
                await self._raise_missing_or_conflict(
                    connection, device.device_id, _devices.c.etag_revision, expected_revision
                )
        assert row is not None  # _raise_missing_or_conflict always raises
        return device_from_row(row)

    async def remove_device(self, device_id: str, *, expected_revision: int | None = None) -> None:
        statement = sa.delete(_devices).where(_devices.c.device_id == device_id)
        if expected_revision is not None:
            statement = statement.where(_devices.c.etag_revision == expected_revision)
        async with self._begin() as connection:
            deleted = (await connection.execute(statement.returning(_devices.c.device_id))).first()
            if deleted is None:
                if expected_revision is None:
                    raise DeviceNotFoundError(f"Device {device_id!r} is not registered", device_id=device_id)
                await self._raise_missing_or_conflict(
                    connection, device_id, _devices.c.etag_revision, expected_revision
                )

    async def remove_devices(self, device_ids: Sequence[str]) -> set[str]:
        wanted = list(dict.fromkeys(device_ids))
        deleted: set[str] = set()
        async with self._begin() as connection:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                statement = sa.delete(_devices).where(_devices.c.device_id.in_(chunk)).returning(_devices.c.device_id)
                deleted.update((await connection.execute(statement)).scalars())
        return set(wanted) - deleted

    # -- twins ---------------------------------------------------------------------------

    async def get_twin(self, device_id: str) -> Twin:
        query = sa.select(*_TWIN_COLUMNS).where(_devices.c.device_id == device_id)
        async with self._begin() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is None:
            raise DeviceNotFoundError(f"Device {device_id!r} is not registered", device_id=device_id)
        return twin_from_row(row)

    async def save_twin(self, twin: Twin, *, expected_revision: int) -> None:
        statement = (
            sa.update(_devices)
            .where(_devices.c.device_id == twin.device_id, _devices.c.twin_revision == expected_revision)
            .values(twin_values(twin))
        )
        async with self._begin() as connection:
            result = await connection.execute(statement)
            if result.rowcount == 0:
                await self._raise_missing_or_conflict(
                    connection, twin.device_id, _devices.c.twin_revision, expected_revision
                )

    async def get_twins(self, device_ids: Sequence[str]) -> dict[str, Twin]:
        """One SELECT per chunk of ids, so a batch of device writes costs one round trip to read."""
        wanted = list(dict.fromkeys(device_ids))
        found: dict[str, Twin] = {}
        if not wanted:
            return found
        async with self._begin() as connection:
            for chunk in _chunks(wanted):
                query = sa.select(*_TWIN_COLUMNS).where(_devices.c.device_id.in_(chunk))
                rows = (await connection.execute(query)).mappings().all()
                found.update((row["device_id"], twin_from_row(row)) for row in rows)
        return found

    async def save_twins(self, writes: Sequence[tuple[Twin, int]]) -> set[str]:
        """Write many twins, each only if its revision is still the expected one, in one transaction.

        An executemany's rowcount is a total, not per row, so the unmatched rows cannot be told
        from the UPDATE itself; and reading the revisions afterwards and looking for
        ``expected + 1`` would mistake someone else's write of that revision for ours. So the
        batch's rows are locked first, their revisions read under the lock, and only the rows
        that match are written (the revision check stays in the UPDATE as a second guard):

        - PostgreSQL: ``SELECT ... FOR UPDATE`` in device_id order (concurrent batches and
          twin job batches lock in the same order, so they cannot deadlock);
        - SQLite: the transaction starts with a write that changes nothing, so it holds the
          database's write lock before it reads (pysqlite begins the transaction only at the
          first write; a plain SELECT first would read outside the lock).
        """
        if not writes:
            return set()
        expected = {twin.device_id: revision for twin, revision in writes}
        if len(expected) != len(writes):
            raise ValueError("save_twins takes each device at most once")
        ordered = sorted(expected)
        statement = _update_twin.where(_devices.c.twin_revision == sa.bindparam("t_expected_revision"))
        async with self._begin() as connection:
            if self._dialect == "sqlite":
                take_write_lock = sa.update(_devices).where(sa.false()).values(twin_revision=_devices.c.twin_revision)
                await connection.execute(take_write_lock)
            current: dict[str, int] = {}
            for chunk in _chunks(ordered):
                query = (
                    sa.select(_devices.c.device_id, _devices.c.twin_revision)
                    .where(_devices.c.device_id.in_(chunk))
                    .order_by(_devices.c.device_id)
                    .with_for_update()
                )
                current.update((device_id, revision) for device_id, revision in await connection.execute(query))
            matching = [
                {**_twin_params(twin), "t_expected_revision": revision}
                for twin, revision in writes
                if current.get(twin.device_id) == revision
            ]
            if matching:
                await connection.execute(statement, matching)
        return {device_id for device_id, revision in expected.items() if current.get(device_id) != revision}

    # -- presence ------------------------------------------------------------------------

    async def record_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        if not updates:
            return
        params = [_presence_params(update) for update in updates]
        async with self._begin() as connection:
            if self._dialect == "postgresql":
                # Lock the rows in device_id order first, as save_twins and twin job batches do:
                # updating them in arrival order instead deadlocks against those batches.
                for chunk in _chunks(sorted({update.device_id for update in updates})):
                    lock = (
                        sa.select(_devices.c.device_id)
                        .where(_devices.c.device_id.in_(chunk))
                        .order_by(_devices.c.device_id)
                        .with_for_update()
                    )
                    await connection.execute(lock)
            await connection.execute(_record_presence, params)

    async def reset_presence(self) -> None:
        disconnected = ConnectionState.DISCONNECTED.value
        statement = (
            sa.update(_devices)
            .where(_devices.c.connection_state != disconnected)
            .values(connection_state=disconnected, connection_state_updated_time=self._clock.now())
        )
        async with self._begin() as connection:
            await connection.execute(statement)

    # -- policies ------------------------------------------------------------------------

    async def list_policies(self) -> list[AccessPolicy]:
        query = sa.select(_policies).order_by(_policies.c.name)
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [policy_from_row(row) for row in rows]

    async def add_policies(self, policies: Sequence[AccessPolicy]) -> None:
        if not policies:
            return
        rows = _first_by_key([policy_values(policy) for policy in policies], "name")
        statement = self._insert_ignoring_conflicts(_policies, _policies.c.name)
        async with self._begin() as connection:
            await connection.execute(statement, rows)

    # -- device jobs ---------------------------------------------------------------------

    async def add_device_jobs(self, jobs: Sequence[DeviceJob]) -> set[tuple[str, str]]:
        """Insert device job records in one transaction; return the (job_id, device_id) keys
        that already existed (those are not written)."""
        if not jobs:
            return set()
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for job in jobs:
            by_key.setdefault((job.job_id, job.device_id), device_job_values(job))
        rows = list(by_key.values())
        keys = [_device_jobs.c.job_id, _device_jobs.c.device_id]
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        statement = insert(_device_jobs).on_conflict_do_nothing(index_elements=keys).returning(*keys)
        async with self._begin() as connection:
            inserted = {(job_id, device_id) for job_id, device_id in (await connection.execute(statement, rows))}
        return {(row["job_id"], row["device_id"]) for row in rows} - inserted

    async def update_device_jobs(self, updates: Sequence[DeviceJob]) -> None:
        if not updates:
            return
        params = [_device_job_params(job) for job in updates]
        async with self._begin() as connection:
            await connection.execute(_update_device_job, params)

    async def complete_twin_job_batch(
        self, job_id: str, device_ids: Sequence[str], change: Callable[[Twin], Twin], now: datetime
    ) -> TwinJobBatch:
        wanted = list(dict.fromkeys(device_ids))
        if not wanted:
            return TwinJobBatch(twins=[], missing=[])
        claim = (
            sa.update(_device_jobs)
            .where(_device_jobs.c.job_id == job_id, _device_jobs.c.status.in_(_OPEN_DEVICE_STATUSES))
            .values(status=DeviceJobStatus.COMPLETED.value, start_time=now, end_time=now, last_updated_time=now)
            .returning(_device_jobs.c.device_id)
        )
        claimed: list[str] = []
        found: dict[str, Twin] = {}
        async with self._begin() as connection:
            # A write first: on SQLite the transaction then holds the write lock while it
            # reads the twins, so nobody changes them between the read and the write.
            for chunk in _chunks(wanted):
                statement = claim.where(_device_jobs.c.device_id.in_(chunk))
                claimed.extend((await connection.execute(statement)).scalars())
            if not claimed:
                return TwinJobBatch(twins=[], missing=[])
            claimed.sort()
            for chunk in _chunks(claimed):
                # Locked in device_id order (PostgreSQL), so concurrent batches cannot deadlock.
                query = (
                    sa.select(*_TWIN_COLUMNS)
                    .where(_devices.c.device_id.in_(chunk))
                    .order_by(_devices.c.device_id)
                    .with_for_update()
                )
                rows = (await connection.execute(query)).mappings().all()
                found.update((row["device_id"], twin_from_row(row)) for row in rows)
            twins = [change(found[device_id]) for device_id in claimed if device_id in found]
            missing = [device_id for device_id in claimed if device_id not in found]
            if twins:
                # ``change`` returns the reported PropertySet it was given when it leaves it alone.
                same = all(twin.reported is found[twin.device_id].reported for twin in twins)
                write = _update_twin_keeping_reported if same else _update_twin
                await connection.execute(write, [_twin_params(twin, with_reported=not same) for twin in twins])
            if missing:
                failures = [
                    {
                        "m_job_id": job_id,
                        "m_device_id": device_id,
                        "m_error": {"code": "DeviceNotFound", "description": f"device {device_id!r} no longer exists"},
                    }
                    for device_id in missing
                ]
                await connection.execute(_fail_missing_device_job, failures)
        return TwinJobBatch(twins=twins, missing=missing)

    async def list_device_jobs(
        self, job_id: str, *, status: DeviceJobStatus | None = None, after: str | None = None, limit: int = 1000
    ) -> list[DeviceJob]:
        query = (
            sa.select(_device_jobs)
            .where(_device_jobs.c.job_id == job_id)
            .order_by(_device_jobs.c.device_id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(_device_jobs.c.status == status.value)
        if after is not None:
            query = query.where(_device_jobs.c.device_id > after)
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [device_job_from_row(row) for row in rows]

    async def count_device_jobs(self, job_id: str) -> DeviceJobStatistics:
        query = (
            sa.select(_device_jobs.c.status, sa.func.count())
            .where(_device_jobs.c.job_id == job_id)
            .group_by(_device_jobs.c.status)
        )
        async with self._begin() as connection:
            counts = {status: int(count) for status, count in (await connection.execute(query)).all()}
        return DeviceJobStatistics(
            device_count=sum(counts.values()),
            pending_count=sum(counts.get(status, 0) for status in _PENDING_DEVICE_STATUSES),
            running_count=counts.get(DeviceJobStatus.RUNNING.value, 0),
            succeeded_count=counts.get(DeviceJobStatus.COMPLETED.value, 0),
            failed_count=counts.get(DeviceJobStatus.FAILED.value, 0),
            canceled_count=counts.get(DeviceJobStatus.CANCELED.value, 0),
        )

    async def pending_device_ids(
        self, job_id: str, *, after: str | None = None, limit: int = 1000, include_running: bool = False
    ) -> list[str]:
        statuses = _OPEN_DEVICE_STATUSES if include_running else _PENDING_DEVICE_STATUSES
        query = (
            sa.select(_device_jobs.c.device_id)
            .where(_device_jobs.c.job_id == job_id, _device_jobs.c.status.in_(statuses))
            .order_by(_device_jobs.c.device_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(_device_jobs.c.device_id > after)
        async with self._begin() as connection:
            return list((await connection.execute(query)).scalars())

    # -- jobs ----------------------------------------------------------------------------

    async def add_job(self, job: Job) -> Job:
        statement = (
            self._insert_ignoring_conflicts(_jobs, _jobs.c.job_id).values(job_values(job)).returning(_jobs.c.job_id)
        )
        async with self._begin() as connection:
            inserted = (await connection.execute(statement)).first()
        if inserted is None:
            raise JobAlreadyExistsError(f"Job {job.job_id!r} already exists")
        return job

    async def get_job(self, job_id: str) -> Job:
        query = sa.select(_jobs).where(_jobs.c.job_id == job_id)
        async with self._begin() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is None:
            raise _job_not_found(job_id)
        return job_from_row(row)

    async def list_jobs(
        self,
        *,
        job_type: JobType | None = None,
        status: JobStatus | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        query = sa.select(_jobs).order_by(_jobs.c.job_id).limit(limit)
        if job_type is not None:
            query = query.where(_jobs.c.job_type == job_type.value)
        if status is not None:
            query = query.where(_jobs.c.status == status.value)
        if after is not None:
            query = query.where(_jobs.c.job_id > after)
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [job_from_row(row) for row in rows]

    async def update_job(self, job: Job, *, expected_revision: int) -> Job:
        async with self._begin() as connection:
            row = await update_versioned(
                connection,
                _jobs,
                "job_id",
                job_values(job),
                expected_revision,
                what=f"Job {job.job_id!r}",
                not_found=lambda: _job_not_found(job.job_id),
            )
        return job_from_row(row)

    async def acquire_jobs(
        self,
        *,
        node_id: str,
        now: datetime,
        lease_seconds: float,
        limit: int,
        statuses: Sequence[JobStatus],
        exclude: Sequence[str] = (),
    ) -> list[Job]:
        if limit <= 0 or not statuses:
            return []
        available = sa.and_(
            _jobs.c.status.in_([status.value for status in statuses]),
            _jobs.c.start_time <= now,
            _jobs.c.job_id.not_in(list(exclude)) if exclude else sa.true(),
            lease_is_free(_jobs, node_id, now),
        )
        async with self._begin() as connection:
            rows = await take_leases(
                connection,
                self._dialect,
                _jobs,
                "job_id",
                available,
                [_jobs.c.start_time, _jobs.c.job_id],
                limit=limit,
                node_id=node_id,
                now=now,
                lease_seconds=lease_seconds,
            )
        jobs = [job_from_row(row) for row in rows]
        return sorted(jobs, key=lambda job: (job.start_time, job.job_id))

    async def promote_due_jobs(self, now: datetime) -> list[Job]:
        due = sa.and_(_jobs.c.status == JobStatus.SCHEDULED.value, _jobs.c.start_time <= now)
        return await self._move_jobs(due, JobStatus.QUEUED)

    async def defer_future_jobs(self, now: datetime) -> list[Job]:
        later = sa.and_(_jobs.c.status == JobStatus.QUEUED.value, _jobs.c.start_time > now)
        return await self._move_jobs(later, JobStatus.SCHEDULED)

    async def _move_jobs(self, where: sa.ColumnElement[bool], status: JobStatus) -> list[Job]:
        statement = (
            sa.update(_jobs).where(where).values(status=status.value, revision=_jobs.c.revision + 1).returning(*_jobs.c)
        )
        async with self._begin() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        jobs = [job_from_row(row) for row in rows]
        return sorted(jobs, key=lambda job: (job.start_time, job.job_id))

    async def add_job_events(self, events: Sequence[JobEvent]) -> list[JobEvent]:
        if not events:
            return []
        statement = sa.insert(_job_events).returning(_job_events.c.sequence, sort_by_parameter_order=True)
        async with self._begin() as connection:
            sequences = list((await connection.execute(statement, [job_event_values(e) for e in events])).scalars())
        return [replace(event, sequence=sequence) for event, sequence in zip(events, sequences, strict=True)]

    async def list_job_events(self, job_id: str, *, after_sequence: int = 0, limit: int = 1000) -> list[JobEvent]:
        query = (
            sa.select(_job_events)
            .where(_job_events.c.job_id == job_id, _job_events.c.sequence > after_sequence)
            .order_by(_job_events.c.sequence)
            .limit(limit)
        )
        async with self._begin() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [job_event_from_row(row) for row in rows]

    async def purge_jobs(self, finished_before: datetime) -> int:
        finished = sa.select(_jobs.c.job_id).where(
            _jobs.c.status.in_(_TERMINAL_JOB_STATUSES), _jobs.c.end_time < finished_before
        )
        async with self._begin() as connection:
            job_ids = list((await connection.execute(finished)).scalars())
            for start in range(0, len(job_ids), _IN_CHUNK):
                chunk = job_ids[start : start + _IN_CHUNK]
                for table in (_device_jobs, _job_events, _jobs):
                    await connection.execute(sa.delete(table).where(table.c.job_id.in_(chunk)))
        return len(job_ids)

    # -- queries -------------------------------------------------------------------------

    async def query_twins(self, condition: Expr | None, *, after: str | None, limit: int) -> list[Twin]:
        return await self._queries.query_twins(condition, after=after, limit=limit)

    async def query_device_ids(self, condition: Expr | None, *, after: str | None, limit: int) -> list[str]:
        return await self._queries.query_device_ids(condition, after=after, limit=limit)

    async def query_device_jobs(
        self, condition: Expr | None, *, after: tuple[str, str] | None, limit: int
    ) -> list[DeviceJob]:
        return await self._queries.query_device_jobs(condition, after=after, limit=limit)

    async def aggregate(self, query: Query) -> list[JsonObject]:
        return await self._queries.aggregate(query)

    async def reindex(self) -> None:
        """Refresh the query planner's statistics (after bulk loads that bypass the store)."""
        async with self._begin() as connection:
            await connection.execute(sa.text("ANALYZE"))

    # -- health --------------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._begin() as connection:
            await connection.execute(sa.text("SELECT 1"))
