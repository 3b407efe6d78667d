"""Two row mechanisms the job and schedule tables share: a write guarded by the row's revision,
and leases taken by one node at a time (``acquired_by`` / ``acquired_until``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.errors import ConcurrencyConflictError, HubError

__all__ = ["lease_is_free", "take_leases", "update_versioned"]


async def update_versioned(
    connection: AsyncConnection,
    table: sa.Table,
    key: str,
    values: dict[str, Any],
    expected_revision: int,
    *,
    what: str,
    not_found: Callable[[], HubError],
) -> RowMapping:
    """Write ``values`` (which hold the key) over the row whose revision is ``expected_revision``
    and return it as stored, with the next revision. ``not_found()`` when the row is gone,
    ConcurrencyConflictError naming ``what`` when its revision differs."""
    changes = {name: value for name, value in values.items() if name != key}
    changes["revision"] = expected_revision + 1
    where = table.c[key] == values[key]
    statement = sa.update(table).where(where, table.c.revision == expected_revision).values(changes).returning(*table.c)
    row = (await connection.execute(statement)).mappings().first()
    if row is not None:
        return row
    actual = (await connection.execute(sa.select(table.c.revision).where(where))).scalar_one_or_none()
    if actual is None:
        raise not_found()
    raise ConcurrencyConflictError(f"{what} changed meanwhile: revision {actual}, expected {expected_revision}")


def lease_is_free(table: sa.Table, node_id: str, now: datetime) -> sa.ColumnElement[bool]:
    """No node holds the row's lease, it ran out, or ``node_id`` holds it already."""
    return sa.or_(table.c.acquired_until.is_(None), table.c.acquired_until <= now, table.c.acquired_by == node_id)


async def take_leases(
    connection: AsyncConnection,
    dialect: str,
    table: sa.Table,
    key: str,
    available: sa.ColumnElement[bool],
    order_by: Sequence[sa.ColumnElement[Any]],
    *,
    limit: int,
    node_id: str,
    now: datetime,
    lease_seconds: float,
) -> Sequence[RowMapping]:
    """Lease up to ``limit`` rows matching ``available`` (which includes ``lease_is_free``), in
    ``order_by`` order, to ``node_id`` until ``now + lease_seconds`` with a new revision; the
    rows as stored. Concurrent callers never take the same row."""
    candidates = sa.select(table.c[key]).where(available).order_by(*order_by).limit(limit)
    lease = sa.update(table).values(
        acquired_by=node_id, acquired_until=now + timedelta(seconds=lease_seconds), revision=table.c.revision + 1
    )
    if dialect == "postgresql":
        # Lock the candidates first and skip rows another node is taking: a LIMIT subquery
        # inside the UPDATE may be run again and take more rows than asked.
        keys = list((await connection.execute(candidates.with_for_update(skip_locked=True))).scalars())
        statement = lease.where(table.c[key].in_(keys))
    else:
        # SQLite has one writer at a time: a single statement is atomic.
        statement = lease.where(table.c[key].in_(candidates.scalar_subquery()), available)
    return (await connection.execute(statement.returning(*table.c))).mappings().all()
