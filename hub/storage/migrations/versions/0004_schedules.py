"""Schedules and rollout control: the schedules table, each job's controls (rollout, abort,
retry, continuous) and schedule, and a device's attempt count in its job record."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in hub.storage.tables as they were at this revision.
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_JOB_ID = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("controls", _JSON, nullable=True))
    op.add_column("jobs", sa.Column("schedule_id", _JOB_ID, nullable=True))
    op.create_index("ix_jobs_schedule_created", "jobs", ["schedule_id", "created_time"])
    op.add_column("device_jobs", sa.Column("attempts", sa.Integer, nullable=True))

    op.create_table(
        "schedules",
        sa.Column("schedule_id", _JOB_ID, primary_key=True),
        sa.Column("job_template", _JSON, nullable=False),
        sa.Column("recurrence", _JSON, nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("created_time", _TIME, nullable=False),
        sa.Column("updated_time", _TIME, nullable=False),
        sa.Column("next_run_time", _TIME, nullable=True),
        sa.Column("last_run_time", _TIME, nullable=True),
        sa.Column("last_run_job_id", _JOB_ID, nullable=True),
        sa.Column("queued_run_time", _TIME, nullable=True),
        sa.Column("run_count", sa.Integer, nullable=False),
        sa.Column("fault_reason", sa.Text, nullable=True),
        sa.Column("acquired_by", sa.String(128), nullable=True),
        sa.Column("acquired_until", _TIME, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_schedules_state_next_run", "schedules", ["state", "next_run_time"])


def downgrade() -> None:
    op.drop_index("ix_schedules_state_next_run", table_name="schedules")
    op.drop_table("schedules")
    op.drop_column("device_jobs", "attempts")
    op.drop_index("ix_jobs_schedule_created", table_name="jobs")
    op.drop_column("jobs", "schedule_id")
    op.drop_column("jobs", "controls")
