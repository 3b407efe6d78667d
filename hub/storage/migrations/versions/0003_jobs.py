"""Jobs: the jobs table (leases, versioned updates) and the job_events history."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in hub.storage.tables as they were at this revision.
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_ID = sa.String(128).with_variant(postgresql.VARCHAR(128, collation="C"), "postgresql")
_JOB_ID = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", _JOB_ID, primary_key=True),
        sa.Column("job_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("query_condition", sa.Text, nullable=False),
        sa.Column("created_time", _TIME, nullable=False),
        sa.Column("start_time", _TIME, nullable=False),
        sa.Column("end_time", _TIME, nullable=True),
        sa.Column("max_execution_seconds", sa.Integer, nullable=False),
        sa.Column("method", _JSON, nullable=True),
        sa.Column("twin_patch", _JSON, nullable=True),
        sa.Column("failure_reason", sa.Text, nullable=True),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("device_count", sa.Integer, nullable=False),
        sa.Column("acquired_by", sa.String(128), nullable=True),
        sa.Column("acquired_until", _TIME, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_type_status", "jobs", ["job_type", "status"])

    op.create_table(
        "job_events",
        sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", _JOB_ID, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("device_id", _ID, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", _JSON, nullable=True),
    )
    op.create_index("ix_job_events_job_sequence", "job_events", ["job_id", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_job_events_job_sequence", table_name="job_events")
    op.drop_table("job_events")
    op.drop_index("ix_jobs_type_status", table_name="jobs")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
