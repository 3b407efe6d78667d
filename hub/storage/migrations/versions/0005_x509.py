"""X.509 device authentication: each device's authentication type and certificate
thumbprints, and the CA certificates operators register for certificateAuthority devices.

Devices that authenticate with certificates have no keys; their key columns hold ''."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in hub.storage.tables as they were at this revision.
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("devices", sa.Column("auth_type", sa.String(32), nullable=False, server_default="sas"))
    op.add_column("devices", sa.Column("primary_thumbprint", sa.String(64), nullable=True))
    op.add_column("devices", sa.Column("secondary_thumbprint", sa.String(64), nullable=True))
    op.create_table(
        "certificates",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("pem", sa.Text, nullable=False),
        sa.Column("thumbprint", sa.String(64), nullable=False),
        sa.Column("created_time", _TIME, nullable=False),
        sa.Column("updated_time", _TIME, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("certificates")
    op.drop_column("devices", "secondary_thumbprint")
    op.drop_column("devices", "primary_thumbprint")
    op.drop_column("devices", "auth_type")
