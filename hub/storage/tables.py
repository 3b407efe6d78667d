"""SQLModel table classes; rows, not domain objects (see hub.storage.mappers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

__all__ = [
    "JSON_TYPE",
    "NULLABLE_JSON_TYPE",
    "AccessPolicyRow",
    "CertificateRow",
    "DeviceJobRow",
    "DeviceRow",
    "JobEventRow",
    "JobRow",
    "ScheduleRow",
    "UtcDateTime",
    "access_policies_table",
    "certificates_table",
    "device_jobs_table",
    "devices_table",
    "job_events_table",
    "jobs_table",
    "metadata",
    "schedules_table",
]

# The twin query compiler targets SQLite json_extract and PostgreSQL jsonb operators.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# For optional documents: None is SQL NULL, not the JSON text 'null'.
NULLABLE_JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

# Byte order on PostgreSQL too, so device_id order and paging match SQLite's BINARY collation.
_ID_TYPE = sa.String(128).with_variant(postgresql.VARCHAR(128, collation="C"), "postgresql")
_JOB_ID_TYPE = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timestamps stored in UTC; SQLite drops the zone, so naive values read back as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes UTC-aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class DeviceRow(SQLModel, table=True):
    """Identity and twin of one device in one row, so twin queries never join.

    On SQLite, migration 0002 also keeps ``device_tag_values`` (every string in each twin's
    tags, hub.query.sql.TAG_VALUES_TABLE) up to date with triggers on this table; it is no
    model because the store never writes it."""

    __tablename__ = "devices"
    __table_args__ = (
        sa.Index("ix_devices_status", "status"),
        sa.Index("ix_devices_connection_state", "connection_state"),
        # GIN over tags serves the twin query compiler's `tags @> {...}` prefilter for tag
        # equality on PostgreSQL. SQLite has no use for it: there the same name is an empty
        # partial index (WHERE 0), so that one table definition matches both databases.
        sa.Index(
            "ix_devices_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
            sqlite_where=sa.false(),
        ),
    )

    device_id: str = Field(sa_column=sa.Column(_ID_TYPE, primary_key=True))
    generation_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    primary_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    secondary_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    status_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    status_updated_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    connection_state: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    connection_state_updated_time: datetime | None = Field(
        default=None, sa_column=sa.Column(UtcDateTime, nullable=True)
    )
    last_activity_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    etag_revision: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    created_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    # hub.domain.devices.AuthKind; devices with certificates keep '' in the key columns.
    auth_type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, server_default="sas"))
    primary_thumbprint: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    secondary_thumbprint: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    tags: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    desired: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    desired_metadata: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    desired_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    reported: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    reported_metadata: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    reported_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    twin_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    twin_revision: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    # The twin etag (hub.domain.devices.etag_of(twin_revision)), kept so that queries can read it.
    etag: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))


class DeviceJobRow(SQLModel, table=True):
    """One device's part in one job (hub.domain.jobs.DeviceJob); what ``devices.jobs`` queries."""

    __tablename__ = "device_jobs"
    __table_args__ = (
        # deviceId-ordered paging of devices.jobs queries, and one job's devices by status.
        sa.Index("ix_device_jobs_device_job", "device_id", "job_id"),
        sa.Index("ix_device_jobs_job_status", "job_id", "status"),
    )

    job_id: str = Field(sa_column=sa.Column(_JOB_ID_TYPE, primary_key=True))
    device_id: str = Field(sa_column=sa.Column(_ID_TYPE, primary_key=True))
    job_type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    created_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    last_updated_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    start_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    end_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    outcome: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=True))
    error: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=True))
    # Method calls made to the device, counted when the job has a retry policy (else NULL).
    attempts: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))


class JobRow(SQLModel, table=True):
    """One job (hub.domain.jobs.Job); ``method`` is the cloudToDeviceMethod document."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_status", "status"),
        sa.Index("ix_jobs_type_status", "job_type", "status"),
        sa.Index("ix_jobs_schedule_created", "schedule_id", "created_time"),
    )

    job_id: str = Field(sa_column=sa.Column(_JOB_ID_TYPE, primary_key=True))
    job_type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    query_condition: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    start_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    end_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    max_execution_seconds: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    method: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=True))
    twin_patch: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=True))
    failure_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    status_message: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    device_count: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    acquired_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    acquired_until: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    revision: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    # rollout / abort / retry / continuous as the request gave them (JobControls.document()).
    controls: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=True))
    schedule_id: str | None = Field(default=None, sa_column=sa.Column(_JOB_ID_TYPE, nullable=True))


class JobEventRow(SQLModel, table=True):
    """One entry of a job's history (hub.domain.jobs.JobEvent); ``sequence`` orders them."""

    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job_sequence", "job_id", "sequence"),)

    sequence: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=True))
    job_id: str = Field(sa_column=sa.Column(_JOB_ID_TYPE, nullable=False))
    at: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    device_id: str | None = Field(default=None, sa_column=sa.Column(_ID_TYPE, nullable=True))
    message: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    data: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=True))


class ScheduleRow(SQLModel, table=True):
    """A recurring job (hub.domain.schedules.Schedule); leased by the node whose scheduler
    handles its due runs, like jobs."""

    __tablename__ = "schedules"
    __table_args__ = (sa.Index("ix_schedules_state_next_run", "state", "next_run_time"),)

    schedule_id: str = Field(sa_column=sa.Column(_JOB_ID_TYPE, primary_key=True))
    job_template: dict[str, Any] = Field(sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=False))
    recurrence: dict[str, Any] = Field(sa_column=sa.Column(NULLABLE_JSON_TYPE, nullable=False))
    time_zone: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    enabled: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    overlap: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    created_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    updated_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    next_run_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    last_run_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    last_run_job_id: str | None = Field(default=None, sa_column=sa.Column(_JOB_ID_TYPE, nullable=True))
    # A run that came due while the previous one was active, kept when overlap is "queue".
    queued_run_time: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    run_count: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    fault_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    acquired_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    acquired_until: datetime | None = Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=True))
    revision: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class AccessPolicyRow(SQLModel, table=True):
    """A shared access policy; ``rights`` is the comma-joined sorted right names."""

    __tablename__ = "access_policies"

    name: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    primary_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    secondary_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    rights: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


class CertificateRow(SQLModel, table=True):
    """A CA certificate an operator registered (hub.domain.certificates.CaCertificate)."""

    __tablename__ = "certificates"

    name: str = Field(sa_column=sa.Column(sa.String(256), primary_key=True))
    pem: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    thumbprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    created_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    updated_time: datetime = Field(sa_column=sa.Column(UtcDateTime, nullable=False))
    revision: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


metadata: sa.MetaData = SQLModel.metadata
devices_table: sa.Table = DeviceRow.__table__  # type: ignore[attr-defined]
access_policies_table: sa.Table = AccessPolicyRow.__table__  # type: ignore[attr-defined]
certificates_table: sa.Table = CertificateRow.__table__  # type: ignore[attr-defined]
device_jobs_table: sa.Table = DeviceJobRow.__table__  # type: ignore[attr-defined]
jobs_table: sa.Table = JobRow.__table__  # type: ignore[attr-defined]
job_events_table: sa.Table = JobEventRow.__table__  # type: ignore[attr-defined]
schedules_table: sa.Table = ScheduleRow.__table__  # type: ignore[attr-defined]
