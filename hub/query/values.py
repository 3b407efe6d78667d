"""Query values in Python (JSON or ``UNDEFINED``) and how GROUP BY keys group and order.

hub.query.evaluate states the rules; the SQL results decoder (hub.storage.query) uses these
same functions, so its groups match the evaluator's.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from enum import Enum
from typing import Final, TypeAlias

from hub.domain.json import JsonValue

__all__ = ["UNDEFINED", "Number", "Undefined", "Value", "group_identity", "group_order"]


class Undefined(Enum):
    """The type of ``UNDEFINED``: a missing field, or the result of an ill-typed operation."""

    UNDEFINED = "undefined"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Final = Undefined.UNDEFINED

Value: TypeAlias = "JsonValue | Undefined"
Number: TypeAlias = int | float


def group_identity(value: Value) -> Hashable:
    """Equal for values that are one group: ``=`` on primitives, structure for objects and arrays."""
    if value is UNDEFINED:
        return ("undefined",)
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)  # 1 == 1.0 with equal hashes: one group
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(group_identity(item) for item in value))
    return ("object", tuple(sorted((key, group_identity(item)) for key, item in value.items())))


def group_order(value: Value) -> tuple[int, Number | str]:
    """The sort key of one group key value: undefined < null < false < true < numbers < strings
    < arrays < objects (these two by canonical JSON text)."""
    if value is UNDEFINED:
        return (0, 0)
    if value is None:
        return (1, 0)
    if isinstance(value, bool):
        return (2, int(value))
    if isinstance(value, int | float):
        return (3, value)
    if isinstance(value, str):
        return (4, value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (5 if isinstance(value, list) else 6, text)
