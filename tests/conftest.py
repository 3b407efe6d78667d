"""Shared fixtures: a database URL per backend (SQLite file, PostgreSQL database) and a migrated SqlStore.

``postgres_url`` skips with the reason when PostgreSQL cannot be reached and fails instead
when ``CI`` is set. Tests that take ``store`` or ``database_url`` run once per backend; the
PostgreSQL case carries the ``postgres`` marker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings
from sqlalchemy.engine import URL

from hub.storage import SqlStore, normalize_url

# CI replays the same examples every run, so a submission lands or fails on its code, not on the
# draw; local runs stay random and keep finding new counterexamples (which then go into tests).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PG_URL_ENV = "FLEETHUB_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

# Why each server could not be reached, so that later tests skip without waiting again.
_pg_unreachable: dict[str, str] = {}


def _libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_connection(url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(_libpq_dsn(url), timeout=10)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of its own in the test's tmp_path (created by the first connection)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'fleethub.db'}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test only, dropped afterwards.

    The server comes from ``FLEETHUB_TEST_PG_URL`` (default: DEFAULT_PG_URL, user postgres on
    127.0.0.1:5432); its user must be allowed to create databases.
    """
    base = normalize_url(os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL)
    shown = base.render_as_string(hide_password=True)
    reason = _pg_unreachable.get(shown)
    admin: asyncpg.Connection | None = None
    if reason is None:
        try:
            admin = await _admin_connection(base)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            reason = _pg_unreachable[shown] = f"{type(exc).__name__}: {exc}"
    if admin is None:
        message = f"PostgreSQL not reachable at {shown}: {reason}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (required because CI is set)")
        pytest.skip(message)

    name = f"fleethub_test_{uuid.uuid4().hex}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await _admin_connection(base)
        try:
            # FORCE: a test that failed half-way may still hold connections.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """An isolated, empty database on each backend in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """A migrated SqlStore on each backend in turn, disposed of after the test."""
    async with SqlStore.open(database_url) as opened:
        yield opened
