"""Injectable time: everything that needs 'now' takes a Clock."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

from hub.errors import BadRequestError

__all__ = ["Clock", "SystemClock", "parse_iso8601"]


def parse_iso8601(field: str, value: object) -> datetime:
    """An ISO-8601 date and time from a request field (``Z`` or an offset, or none: then the
    result is naive and the caller decides its zone); BadRequestError naming ``field``."""
    if not isinstance(value, str):
        raise BadRequestError(f"{field} must be an ISO-8601 date and time string, got {value!r}")
    try:
        return datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise BadRequestError(f"{field} {value!r} is not an ISO-8601 date and time") from None


class Clock(Protocol):
    def now(self) -> datetime:
        """The current UTC-aware time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for deadlines."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock (pacing and back-off; a test clock may jump instead)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
