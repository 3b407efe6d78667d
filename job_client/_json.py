"""Reading the hub's JSON leniently: a member of the expected type or nothing, and a known
enum value or the text itself (a newer hub may send values this client does not know)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from job_client.errors import FleetHubError

__all__ = ["enum_or_text", "integer", "json_object", "text"]

E = TypeVar("E", bound=StrEnum)


def json_object(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` when it is a JSON object; FleetHubError (InvalidResponse) naming ``what`` otherwise."""
    if not isinstance(value, Mapping):
        raise FleetHubError(f"expected a JSON object for {what}, got {type(value).__name__}", code="InvalidResponse")
    return value


def text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def enum_or_text(kind: type[E], value: object, aliases: Mapping[str, E] | None = None) -> E | str:
    """The ``kind`` member spelled ``value`` (or its alias); any other text as it is ("" for a non-string)."""
    spelled = value if isinstance(value, str) else ""
    try:
        return kind(spelled)
    except ValueError:
        return (aliases or {}).get(spelled, spelled)
