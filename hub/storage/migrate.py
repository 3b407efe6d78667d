"""Alembic migrations run in code, on the hub's own asyncio engine, for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.storage.engines import create_engine
from hub.storage.failures import translate_errors

__all__ = ["alembic_config", "run_migrations", "upgrade"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Serialises hub nodes that start together against one PostgreSQL database.
_PG_LOCK_KEY = int.from_bytes(b"fleethub", "big") & 0x7FFF_FFFF_FFFF_FFFF


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _upgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database to ``revision`` in one transaction (DDL is transactional on PostgreSQL)."""
    with translate_errors():
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            await connection.run_sync(_upgrade_on, revision)


async def _run(url: str | URL, revision: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine, revision)
    finally:
        await engine.dispose()


def run_migrations(url: str | URL, revision: str = "head") -> None:
    """Synchronous entry for CLIs; must not be called from a running event loop."""
    asyncio.run(_run(url, revision))
