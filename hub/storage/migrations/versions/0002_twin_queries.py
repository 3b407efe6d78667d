"""Twin queries: a queryable etag column, the device_jobs table, tag indexes (GIN on
PostgreSQL; on SQLite a trigger-maintained table of tag string values) and the arithmetic
functions compiled PostgreSQL queries call (hub.query.sql.PG_FUNCTIONS)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in hub.storage.tables as they were at this revision.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.String(128).with_variant(postgresql.VARCHAR(128, collation="C"), "postgresql")
_JOB_ID = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")
_TIME = sa.DateTime(timezone=True)

_BATCH = 1000

# IEEE arithmetic without PostgreSQL's errors: an overflow is NULL (the query language's
# undefined), an underflow is a signed zero. The EXCEPTION block (a subtransaction) is only
# entered for operands far from 1, so ordinary values take the cheap path.
_PG_FUNCTIONS = (
    """
CREATE FUNCTION fleethub_add(a double precision, b double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF abs(a) < 1e300 AND abs(b) < 1e300 THEN
        RETURN a + b;
    END IF;
    BEGIN
        RETURN a + b;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        RETURN NULL;
    END;
END
$$
""",
    """
CREATE FUNCTION fleethub_sub(a double precision, b double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT fleethub_add(a, -b) $$
""",
    """
CREATE FUNCTION fleethub_mul(a double precision, b double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF a = 0 OR b = 0 OR (abs(a) BETWEEN 1e-150 AND 1e150 AND abs(b) BETWEEN 1e-150 AND 1e150) THEN
        RETURN a * b;
    END IF;
    BEGIN
        RETURN a * b;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        -- Both factors below 1 cannot overflow: the product underflowed.
        IF abs(a) < 1 AND abs(b) < 1 THEN
            RETURN CASE WHEN (a < 0) = (b < 0) THEN CAST(0 AS double precision)
                        ELSE CAST('-0' AS double precision) END;
        END IF;
        RETURN NULL;
    END;
END
$$
""",
    """
CREATE FUNCTION fleethub_div(a double precision, b double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF b = 0 THEN
        RETURN NULL;
    END IF;
    IF a = 0 OR (abs(a) BETWEEN 1e-150 AND 1e150 AND abs(b) BETWEEN 1e-150 AND 1e150) THEN
        RETURN a / b;
    END IF;
    BEGIN
        RETURN a / b;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        -- |a| < |b| makes |a / b| < 1: the quotient underflowed.
        IF abs(a) < abs(b) THEN
            RETURN CASE WHEN (a < 0) = (b < 0) THEN CAST(0 AS double precision)
                        ELSE CAST('-0' AS double precision) END;
        END IF;
        RETURN NULL;
    END;
END
$$
""",
    # C's fmod, exactly: binary long division, where every step is exact (doubling and
    # halving a multiple of |b|, and Sterbenz subtraction since t <= r < 2t).
    """
CREATE FUNCTION fleethub_fmod(a double precision, b double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    r double precision := abs(a);
    m double precision := abs(b);
    t double precision;
BEGIN
    IF m = 0 THEN
        RETURN NULL;
    END IF;
    IF r < m THEN
        RETURN a;
    END IF;
    t := m;
    WHILE t <= r - t LOOP
        t := t * 2;
    END LOOP;
    LOOP
        IF r >= t THEN
            r := r - t;
        END IF;
        EXIT WHEN t = m;
        t := t / 2;
    END LOOP;
    IF a < 0 THEN
        RETURN -r;
    END IF;
    RETURN r;
END
$$
""",
)
# SQLite: every string anywhere in a twin's tags, so that `tags.x = 'v'` (and IN lists of
# strings) look up candidate devices instead of parsing every twin's tags (hub.query.sql's
# TAG_VALUES_TABLE). Triggers keep it exact whoever writes the devices table; an update
# that leaves the tags text as it was (a reported patch) does no work.
_TAG_VALUES_OF_NEW = (
    "INSERT OR IGNORE INTO device_tag_values (value, device_id) "
    "SELECT atom, NEW.device_id FROM json_tree(NEW.tags) WHERE type = 'text';"
)
_SQLITE_TAG_VALUES = (
    """
CREATE TABLE device_tag_values (
    value TEXT NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    PRIMARY KEY (value, device_id)
) WITHOUT ROWID
""",
    "CREATE INDEX ix_device_tag_values_device_id ON device_tag_values (device_id)",
    f"""
CREATE TRIGGER devices_tag_values_insert AFTER INSERT ON devices
BEGIN
    {_TAG_VALUES_OF_NEW}
END
""",
    f"""
CREATE TRIGGER devices_tag_values_update AFTER UPDATE OF tags ON devices
WHEN OLD.tags IS NOT NEW.tags
BEGIN
    DELETE FROM device_tag_values WHERE device_id = OLD.device_id;
    {_TAG_VALUES_OF_NEW}
END
""",
    """
CREATE TRIGGER devices_tag_values_delete AFTER DELETE ON devices
BEGIN
    DELETE FROM device_tag_values WHERE device_id = OLD.device_id;
END
""",
    """
INSERT OR IGNORE INTO device_tag_values (value, device_id)
SELECT tree.atom, devices.device_id FROM devices, json_tree(devices.tags) AS tree WHERE tree.type = 'text'
""",
)
_PG_FUNCTION_NAMES = ("fleethub_sub", "fleethub_add", "fleethub_mul", "fleethub_div", "fleethub_fmod")


def _etag(revision: int) -> str:
    """Frozen copy of hub.domain.devices.etag_of."""
    return base64.b64encode(revision.to_bytes(8, "big", signed=False)).decode()


def _fill_etags_sqlite() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT device_id, twin_revision FROM devices")).all()
    update = sa.text("UPDATE devices SET etag = :etag WHERE device_id = :device_id")
    for start in range(0, len(rows), _BATCH):
        chunk = rows[start : start + _BATCH]
        bind.execute(update, [{"etag": _etag(revision), "device_id": device_id} for device_id, revision in chunk])


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("devices", sa.Column("etag", sa.String(16), nullable=False, server_default=""))
    if postgres:
        op.execute("UPDATE devices SET etag = encode(int8send(twin_revision), 'base64')")
        op.alter_column("devices", "etag", server_default=None)
        for statement in _PG_FUNCTIONS:
            op.execute(statement)
    else:
        # SQLite keeps the '' default: dropping it would rebuild the table.
        _fill_etags_sqlite()
        for statement in _SQLITE_TAG_VALUES:
            op.execute(statement)
    # GIN for jsonb containment on PostgreSQL; on SQLite an empty partial index of the same
    # name (hub.storage.tables explains why).
    op.create_index(
        "ix_devices_tags",
        "devices",
        ["tags"],
        postgresql_using="gin",
        postgresql_ops={"tags": "jsonb_path_ops"},
        sqlite_where=sa.false(),
    )

    op.create_table(
        "device_jobs",
        sa.Column("job_id", _JOB_ID, primary_key=True),
        sa.Column("device_id", _ID, primary_key=True),
        sa.Column("job_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_time", _TIME, nullable=False),
        sa.Column("last_updated_time", _TIME, nullable=False),
        sa.Column("start_time", _TIME, nullable=True),
        sa.Column("end_time", _TIME, nullable=True),
        sa.Column("outcome", _JSON, nullable=True),
        sa.Column("error", _JSON, nullable=True),
    )
    op.create_index("ix_device_jobs_device_job", "device_jobs", ["device_id", "job_id"])
    op.create_index("ix_device_jobs_job_status", "device_jobs", ["job_id", "status"])


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_device_jobs_job_status", table_name="device_jobs")
    op.drop_index("ix_device_jobs_device_job", table_name="device_jobs")
    op.drop_table("device_jobs")
    if postgres:
        for name in _PG_FUNCTION_NAMES:
            op.execute(f"DROP FUNCTION {name}(double precision, double precision)")
    else:
        for trigger in ("devices_tag_values_delete", "devices_tag_values_update", "devices_tag_values_insert"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE device_tag_values")
    op.drop_index("ix_devices_tags", table_name="devices")
    op.drop_column("devices", "etag")
