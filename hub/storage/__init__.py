"""Storage: SQLModel tables, the SQL store (row <-> domain mappers) and Alembic migrations."""

from hub.storage.engines import create_engine
from hub.storage.migrate import run_migrations, upgrade
from hub.storage.sql import SqlStore
from hub.storage.urls import normalize_url

__all__ = ["SqlStore", "create_engine", "normalize_url", "run_migrations", "upgrade"]
