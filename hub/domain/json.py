"""JSON value types shared by the domain, and the strict decoder for what devices send."""

from __future__ import annotations

import json
import math
from typing import TypeAlias, TypeGuard

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"

__all__ = ["JsonObject", "JsonValue", "is_integer", "loads_strict"]


def is_integer(value: object) -> TypeGuard[int]:
    """A JSON integer: an int that is not a bool (Python's bool is an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads_strict(payload: bytes) -> JsonValue:
    """JSON as RFC 8259 has it, from bytes a device sent: UTF-8, no NaN or Infinity, no number
    past a double's range or Python's integer-conversion limit, nesting the parser can follow.
    ValueError saying why for anything else (UnicodeDecodeError and JSONDecodeError are ones)."""
    try:
        value: JsonValue = json.loads(
            payload.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None
    return value
