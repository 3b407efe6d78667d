"""AsyncEngine construction for SQLite (aiosqlite) and PostgreSQL (asyncpg), and how they read JSON."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from hub.domain.json import JsonValue
from hub.storage.urls import normalize_url

__all__ = ["create_engine", "json_loads"]

# Compact, and ASCII-escaped so that lone surrogates from parsed JSON still store on SQLite.
_dumps = functools.partial(json.dumps, separators=(",", ":"), allow_nan=False)

# PostgreSQL's jsonb keeps numbers as numeric and prints 1e+20 back as a 21-digit integer.
# Twin integers are limited to +-2**52, so a longer integer was written as a float.
_LARGEST_JSON_INT = 2**53


def _parse_int(text: str) -> int | float:
    value = int(text)
    return float(value) if abs(value) > _LARGEST_JSON_INT else value


def json_loads(text: str | bytes) -> JsonValue:
    """JSON text as the engines read JSON columns back (their ``json_deserializer``): an integer
    beyond +-2**53 becomes a float, so a float that jsonb prints as an integer reads back as one.
    Raw SQL that selects JSON text decodes it with this to get the numbers the columns give."""
    value: JsonValue = json.loads(text, parse_int=_parse_int)
    return value


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers never block the writer
    "PRAGMA synchronous=NORMAL",  # durable enough under WAL, far fewer fsyncs
    "PRAGMA busy_timeout=5000",  # writers queue for the lock instead of failing at once
    "PRAGMA foreign_keys=ON",
)
_PG_CONNECT_TIMEOUT_SECONDS = 10.0  # asyncpg waits 60 s by default; ping must answer sooner


def _set_sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


class _StoredValuesFilter(logging.Filter):
    """Keeps stored values (device and policy keys among them) out of the logs at DEBUG:
    ``hide_parameters`` hides statement parameters, but SQLAlchemy still logs each fetched
    row ("Row %r") and aiosqlite each call with its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "aiosqlite":
            return record.levelno > logging.DEBUG
        return record.msg != "Row %r"


_STORED_VALUES_FILTER = _StoredValuesFilter()


def _keep_stored_values_out_of_logs() -> None:
    for name in ("sqlalchemy.engine.Engine", "aiosqlite"):
        logger = logging.getLogger(name)
        if _STORED_VALUES_FILTER not in logger.filters:
            logger.addFilter(_STORED_VALUES_FILTER)


def create_engine(url: str | URL, *, connect_args: Mapping[str, Any] | None = None) -> AsyncEngine:
    """An engine for ``url`` (see normalize_url); ``connect_args`` go to the driver's connect()."""
    _keep_stored_values_out_of_logs()
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    args = dict(connect_args or {})
    options: dict[str, Any] = {"hide_parameters": True, "json_serializer": _dumps, "json_deserializer": json_loads}
    if backend == "postgresql":
        args.setdefault("timeout", _PG_CONNECT_TIMEOUT_SECONDS)
        # A pooled connection may have died with a server restart; check before use.
        options["pool_pre_ping"] = True
    engine = create_async_engine(parsed, connect_args=args, **options)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine
