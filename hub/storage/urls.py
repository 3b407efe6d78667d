"""Database URLs: pick the asyncio driver for the schemes people write."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

__all__ = ["normalize_url"]

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def normalize_url(url: str | URL) -> URL:
    """``postgres://``, ``postgresql://`` and ``sqlite://`` become their asyncpg / aiosqlite forms."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed
