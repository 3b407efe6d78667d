"""Devices (identity and twin in one row) and shared access policies."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in hub.storage.tables as they were at this revision.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.String(128).with_variant(postgresql.VARCHAR(128, collation="C"), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", _ID, primary_key=True),
        sa.Column("generation_id", sa.String(64), nullable=False),
        sa.Column("primary_key", sa.String(256), nullable=False),
        sa.Column("secondary_key", sa.String(256), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("status_updated_time", _TIME, nullable=True),
        sa.Column("connection_state", sa.String(32), nullable=False),
        sa.Column("connection_state_updated_time", _TIME, nullable=True),
        sa.Column("last_activity_time", _TIME, nullable=True),
        sa.Column("etag_revision", sa.BigInteger(), nullable=False),
        sa.Column("created_time", _TIME, nullable=True),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("desired", _JSON, nullable=False),
        sa.Column("desired_metadata", _JSON, nullable=False),
        sa.Column("desired_version", sa.BigInteger(), nullable=False),
        sa.Column("reported", _JSON, nullable=False),
        sa.Column("reported_metadata", _JSON, nullable=False),
        sa.Column("reported_version", sa.BigInteger(), nullable=False),
        sa.Column("twin_version", sa.BigInteger(), nullable=False),
        sa.Column("twin_revision", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_devices_status", "devices", ["status"])
    op.create_index("ix_devices_connection_state", "devices", ["connection_state"])
    op.create_table(
        "access_policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("primary_key", sa.String(256), nullable=False),
        sa.Column("secondary_key", sa.String(256), nullable=False),
        sa.Column("rights", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("access_policies")
    op.drop_index("ix_devices_connection_state", table_name="devices")
    op.drop_index("ix_devices_status", table_name="devices")
    op.drop_table("devices")
