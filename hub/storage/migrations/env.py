"""Alembic environment: runs on the connection hub.storage.migrate hands over, or on its own."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import URL, Connection

from hub.config import Settings
from hub.storage.engines import create_engine
from hub.storage.tables import metadata
from hub.storage.urls import normalize_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> URL:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        url = Settings().resolved_database_url
    return normalize_url(url)


async def _run_standalone(url: URL) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


def _run() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        # Only the alembic command line gets here; the hub passes its own connection.
        asyncio.run(_run_standalone(_url()))


_run()
