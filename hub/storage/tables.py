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
    "AccessPolicyRow",
    "DeviceRow",
    "UtcDateTime",
    "access_policies_table",
    "devices_table",
    "metadata",
]

# The twin query compiler targets SQLite json_extract and PostgreSQL jsonb operators.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Byte order on PostgreSQL too, so device_id order and paging match SQLite's BINARY collation.
_ID_TYPE = sa.String(128).with_variant(postgresql.VARCHAR(128, collation="C"), "postgresql")


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
    """Identity and twin of one device in one row, so twin queries never join."""

    __tablename__ = "devices"
    __table_args__ = (
        sa.Index("ix_devices_status", "status"),
        sa.Index("ix_devices_connection_state", "connection_state"),
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
    tags: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    desired: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    desired_metadata: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    desired_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    reported: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    reported_metadata: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSON_TYPE, nullable=False))
    reported_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    twin_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    twin_revision: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class AccessPolicyRow(SQLModel, table=True):
    """A shared access policy; ``rights`` is the comma-joined sorted right names."""

    __tablename__ = "access_policies"

    name: str = Field(sa_column=sa.Column(sa.String(128), primary_key=True))
    primary_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    secondary_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    rights: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


metadata: sa.MetaData = SQLModel.metadata
devices_table: sa.Table = DeviceRow.__table__  # type: ignore[attr-defined]
access_policies_table: sa.Table = AccessPolicyRow.__table__  # type: ignore[attr-defined]
