"""The reference evaluator: the AST's semantics (``hub.query.ast``) run over JSON documents in Python.

This module is the specification the SQL back ends are tested against, so it favours being
obviously right over being fast. Decisions that ``hub.query.ast`` leaves open are made here,
once, and the compilers must match them:

Fields
    Identity fields (and ``devices.jobs`` fields) that are ``null`` in the document are
    *undefined*, like a missing field: a never-active device's ``lastActivityTime``, a job's
    unset ``endTimeUtc``. (They are nullable columns, which a back end cannot tell from a
    missing value.) ``properties.desired|reported.$version`` is the section's version, but
    ``$metadata`` is not queryable: ``properties.reported.$metadata...`` is undefined, and a
    whole ``properties.reported`` is the section without its ``$metadata`` key (with
    ``$version``). Paths descend objects only; there is no array indexing.

Comparisons
    ``null`` equals ``null``, so ``null <= null`` and ``null >= null`` are true and ``<`` /
    ``>`` false. Strings order by code point (SQLite's BINARY collation on UTF-8; PostgreSQL
    needs ``COLLATE "C"``). Booleans never compare with numbers (``true = 1`` is undefined).

Arithmetic
    ``/`` is true division, always a float (``7 / 2 = 3.5``, ``6 / 2 = 3.0``), never SQLite's
    truncating integer division. ``+ - * %`` and unary ``-`` keep ints when both operands are
    ints. ``%`` takes the sign of the dividend (math.fmod). A result that is not a finite
    number (overflow) is undefined, as is division or modulo by zero.

Functions
    ``LOWER`` / ``UPPER`` map only the ASCII letters A-Z / a-z (what SQLite's lower() and
    upper() do; PostgreSQL needs ``translate``), leaving every other character as it is.
    ``LENGTH`` counts Unicode code points. ``IN``, ``ARRAY_CONTAINS`` match by ``=``.

Results (``run_query``)
    Rows are filtered, ordered by deviceId (then jobId) by code point, then ``TOP`` is
    applied, then projected. A query with aggregates or a GROUP BY groups the filtered rows:
    group keys are equal by ``=`` (``1`` and ``1.0`` are one group, ``true`` and ``1`` are
    not), ``null`` and undefined are groups of their own, objects and arrays are equal when
    structurally equal by the same rules. A group shows the key values of its first row in
    deviceId order. Groups are ordered by their keys, compared expression by expression in
    the order undefined < null < false < true < numbers (numerically) < strings (by code
    point) < arrays < objects (these two by canonical JSON text: sorted keys, compact).
    ``TOP`` then applies to the groups. Aggregates without GROUP BY give exactly one row,
    even over no documents (``COUNT()`` is 0, the others are left out). ``COUNT(x)``, should
    a parser produce it, counts rows where ``x`` is defined. SUM is exact over ints (an int),
    else correctly rounded (math.fsum); AVG is always a float; MIN / MAX return the number
    as stored. A selected non-aggregate expression in a grouped query must be one of the
    GROUP BY expressions, else QuerySyntaxError. When two projections share a result key the
    later defined one wins.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Hashable, Iterable
from typing import Final, TypeGuard, assert_never

from hub.domain.json import JsonObject
from hub.errors import QuerySyntaxError
from hub.query.ast import (
    AggregateCall,
    AggregateFunction,
    BinaryOp,
    BinaryOperator,
    Call,
    Expr,
    Field,
    FieldRoot,
    FunctionName,
    InList,
    Literal,
    Projection,
    Query,
    Source,
    Star,
    UnaryOp,
    UnaryOperator,
)
from hub.query.check import without_positions
from hub.query.values import UNDEFINED, Number, Undefined, Value, group_identity, group_order

__all__ = ["UNDEFINED", "Undefined", "Value", "evaluate", "matches", "project", "resolve", "run_query"]


def _is_number(value: Value) -> TypeGuard[Number]:
    # bool is a subclass of int: a boolean is never a number here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_primitive(value: Value) -> TypeGuard[str | int | float | bool | None]:
    return value is None or isinstance(value, str | int | float | bool)


# -- fields ------------------------------------------------------------------------------

_SECTIONS: Final = {FieldRoot.DESIRED: "desired", FieldRoot.REPORTED: "reported"}


def resolve(field: Field, doc: JsonObject) -> Value:
    """The value of ``field`` in a twin document (``twin_document``) or a ``devices.jobs`` record."""
    value: Value
    if field.root in _SECTIONS:
        properties = doc.get("properties")
        section = properties.get(_SECTIONS[field.root]) if isinstance(properties, dict) else None
        if not isinstance(section, dict):
            return UNDEFINED
        if not field.path:
            return {key: item for key, item in section.items() if key != "$metadata"}
        if field.path[0] == "$metadata":
            return UNDEFINED
        value = section
    elif field.root is FieldRoot.TAGS:
        value = doc.get("tags", UNDEFINED)
    else:
        # A null identity field is an unset column (never active, not yet ended): undefined.
        found = doc.get(field.root.value)
        value = UNDEFINED if found is None else found
    for segment in field.path:
        if not isinstance(value, dict) or segment not in value:
            return UNDEFINED
        value = value[segment]
    return value


# -- comparisons -------------------------------------------------------------------------


def _order(left: Value, right: Value) -> int | None:
    """-1, 0 or 1 for two primitives of the same type; None when they do not compare."""
    # Python orders str by code point and compares ints with floats exactly.
    if _is_number(left) and _is_number(right):
        return (left > right) - (left < right)
    if isinstance(left, bool) and isinstance(right, bool):
        return int(left) - int(right)
    if isinstance(left, str) and isinstance(right, str):
        return (left > right) - (left < right)
    if left is None and right is None:
        return 0
    return None


_COMPARE: Final[dict[BinaryOperator, Callable[[int], bool]]] = {
    BinaryOperator.EQ: lambda c: c == 0,
    BinaryOperator.NE: lambda c: c != 0,
    BinaryOperator.LT: lambda c: c < 0,
    BinaryOperator.GT: lambda c: c > 0,
    BinaryOperator.LE: lambda c: c <= 0,
    BinaryOperator.GE: lambda c: c >= 0,
}


def _compare(op: BinaryOperator, left: Value, right: Value) -> Value:
    order = _order(left, right)
    if order is None:
        return UNDEFINED
    return _COMPARE[op](order)


def _equals(left: Value, right: Value) -> bool:
    return _order(left, right) == 0


# -- logic -------------------------------------------------------------------------------


def _truth(value: Value) -> bool | None:
    """A boolean operand, or None (unknown) for undefined and every non-boolean."""
    return value if isinstance(value, bool) else None


def _and(left: Value, right: Value) -> Value:
    a, b = _truth(left), _truth(right)
    if a is False or b is False:
        return False
    if a is None or b is None:
        return UNDEFINED
    return True


def _or(left: Value, right: Value) -> Value:
    a, b = _truth(left), _truth(right)
    if a is True or b is True:
        return True
    if a is None or b is None:
        return UNDEFINED
    return False


# -- arithmetic --------------------------------------------------------------------------


def _remainder(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int):
        # Exact for big ints too, where math.fmod would go through floats.
        magnitude = abs(a) % abs(b)
        return -magnitude if a < 0 else magnitude
    return math.fmod(a, b)


def _arithmetic(op: BinaryOperator, left: Value, right: Value) -> Value:
    if not (_is_number(left) and _is_number(right)):
        return UNDEFINED
    result: Number
    try:
        if op is BinaryOperator.ADD:
            result = left + right
        elif op is BinaryOperator.SUB:
            result = left - right
        elif op is BinaryOperator.MUL:
            result = left * right
        elif op is BinaryOperator.DIV:
            if right == 0:
                return UNDEFINED
            result = left / right
        elif op is BinaryOperator.MOD:
            if right == 0:
                return UNDEFINED
            result = _remainder(left, right)
        else:
            raise ValueError(f"{op} is not an arithmetic operator")
    except OverflowError:
        return UNDEFINED
    if isinstance(result, float) and not math.isfinite(result):
        return UNDEFINED
    return result


def _negate(value: Value) -> Value:
    if not _is_number(value):
        return UNDEFINED
    return -value


# -- functions ---------------------------------------------------------------------------

_ARITY: Final = {
    FunctionName.IS_DEFINED: 1,
    FunctionName.IS_NULL: 1,
    FunctionName.IS_STRING: 1,
    FunctionName.IS_NUMBER: 1,
    FunctionName.IS_BOOL: 1,
    FunctionName.IS_OBJECT: 1,
    FunctionName.IS_ARRAY: 1,
    FunctionName.STARTSWITH: 2,
    FunctionName.ENDSWITH: 2,
    FunctionName.CONTAINS: 2,
    FunctionName.ARRAY_CONTAINS: 2,
    FunctionName.LOWER: 1,
    FunctionName.UPPER: 1,
    FunctionName.LENGTH: 1,
}

_TYPE_TESTS: Final[dict[FunctionName, Callable[[Value], bool]]] = {
    FunctionName.IS_DEFINED: lambda v: v is not UNDEFINED,
    FunctionName.IS_NULL: lambda v: v is None,
    FunctionName.IS_STRING: lambda v: isinstance(v, str),
    FunctionName.IS_NUMBER: _is_number,
    FunctionName.IS_BOOL: lambda v: isinstance(v, bool),
    FunctionName.IS_OBJECT: lambda v: isinstance(v, dict),
    FunctionName.IS_ARRAY: lambda v: isinstance(v, list),
}

_STRING_TESTS: Final[dict[FunctionName, Callable[[str, str], bool]]] = {
    FunctionName.STARTSWITH: str.startswith,
    FunctionName.ENDSWITH: str.endswith,
    FunctionName.CONTAINS: str.__contains__,
}

# ASCII only, so that every back end can do exactly the same (SQLite's lower()/upper() do).
_TO_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_TO_UPPER: Final = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def _call(call: Call, doc: JsonObject) -> Value:
    arity = _ARITY[call.function]
    if len(call.args) != arity:
        raise QuerySyntaxError(
            f"{call.function.value} takes {arity} argument{'s' if arity > 1 else ''}, not {len(call.args)}",
            position=call.position,
        )
    args = [evaluate(arg, doc) for arg in call.args]
    function = call.function
    if function in _TYPE_TESTS:
        return _TYPE_TESTS[function](args[0])
    if function in _STRING_TESTS:
        text, part = args
        if isinstance(text, str) and isinstance(part, str):
            return _STRING_TESTS[function](text, part)
        return UNDEFINED
    if function is FunctionName.ARRAY_CONTAINS:
        array, item = args
        if isinstance(array, list) and _is_primitive(item):
            return any(_equals(element, item) for element in array)
        return UNDEFINED
    text = args[0]
    if not isinstance(text, str):
        return UNDEFINED
    if function is FunctionName.LOWER:
        return text.translate(_TO_LOWER)
    if function is FunctionName.UPPER:
        return text.translate(_TO_UPPER)
    if function is FunctionName.LENGTH:
        return len(text)
    raise ValueError(f"no evaluation for function {function}")


# -- expressions -------------------------------------------------------------------------


def evaluate(expr: Expr, doc: JsonObject) -> Value:
    """The value of ``expr`` over one document, ``UNDEFINED`` where the semantics say so."""
    if isinstance(expr, Field):
        return resolve(expr, doc)
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, UnaryOp):
        operand = evaluate(expr.operand, doc)
        if expr.op is UnaryOperator.NOT:
            truth = _truth(operand)
            return UNDEFINED if truth is None else not truth
        return _negate(operand)
    if isinstance(expr, BinaryOp):
        left, right = evaluate(expr.left, doc), evaluate(expr.right, doc)
        if expr.op is BinaryOperator.AND:
            return _and(left, right)
        if expr.op is BinaryOperator.OR:
            return _or(left, right)
        if expr.op.is_comparison:
            return _compare(expr.op, left, right)
        return _arithmetic(expr.op, left, right)
    if isinstance(expr, InList):
        operand = evaluate(expr.operand, doc)
        if operand is UNDEFINED or not _is_primitive(operand):
            return UNDEFINED
        found = any(_equals(operand, item.value) for item in expr.items)
        return found != expr.negated
    if isinstance(expr, Call):
        return _call(expr, doc)
    assert_never(expr)


def matches(condition: Expr | None, doc: JsonObject) -> bool:
    """Whether a WHERE condition selects ``doc``: only an exact boolean ``true`` does (no condition: all)."""
    return condition is None or evaluate(condition, doc) is True


# -- results -----------------------------------------------------------------------------


def _row_order(source: Source) -> Callable[[JsonObject], tuple[str, str]]:
    def key(doc: JsonObject) -> tuple[str, str]:
        device_id = doc.get("deviceId")
        job_id = doc.get("jobId") if source is Source.JOBS else ""
        return (device_id if isinstance(device_id, str) else "", job_id if isinstance(job_id, str) else "")

    return key


def project(query: Query, doc: JsonObject) -> JsonObject:
    """One result row of a non-grouped query: ``doc`` itself for ``SELECT *``, else the projections."""
    if isinstance(query.select, Star):
        return doc
    row: JsonObject = {}
    for index, projection in enumerate(query.select):
        if isinstance(projection.expr, AggregateCall):
            raise ValueError("project() takes a query without aggregates; run_query groups")
        value = evaluate(projection.expr, doc)
        if value is not UNDEFINED:
            row[projection.key(index)] = value
    return row


def _aggregate(call: AggregateCall, rows: list[JsonObject]) -> Value:
    if call.arg is None:
        if call.function is not AggregateFunction.COUNT:
            raise QuerySyntaxError(f"{call.function.value} needs an argument", position=call.position)
        return len(rows)
    arg = call.arg
    values = [evaluate(arg, row) for row in rows]
    if call.function is AggregateFunction.COUNT:
        return sum(1 for value in values if value is not UNDEFINED)
    numbers = [value for value in values if _is_number(value)]
    if not numbers:
        return UNDEFINED
    if call.function is AggregateFunction.MIN:
        return min(numbers)
    if call.function is AggregateFunction.MAX:
        return max(numbers)
    total: Number
    if all(isinstance(number, int) for number in numbers):
        total = sum(numbers)
    else:
        try:
            total = math.fsum(numbers)
        except OverflowError:
            return UNDEFINED
    if call.function is AggregateFunction.SUM:
        return total
    if call.function is AggregateFunction.AVG:
        try:
            average = total / len(numbers)
        except OverflowError:
            return UNDEFINED
        return average if math.isfinite(average) else UNDEFINED
    raise ValueError(f"no evaluation for aggregate {call.function}")


def _grouped(query: Query, rows: list[JsonObject]) -> list[JsonObject]:
    if isinstance(query.select, Star):
        raise QuerySyntaxError("SELECT * cannot be grouped; select the GROUP BY expressions or aggregates")
    projections: tuple[Projection, ...] = query.select
    group_exprs = [without_positions(expr) for expr in query.group_by]
    key_index: dict[int, int] = {}
    for index, projection in enumerate(projections):
        if isinstance(projection.expr, AggregateCall):
            continue
        stripped = without_positions(projection.expr)
        if stripped not in group_exprs:
            raise QuerySyntaxError(
                "a selected expression must be an aggregate or one of the GROUP BY expressions",
                position=projection.expr.position,
            )
        key_index[index] = group_exprs.index(stripped)

    groups: dict[tuple[Hashable, ...], tuple[tuple[Value, ...], list[JsonObject]]] = {}
    if query.group_by:
        for row in rows:  # already in deviceId order: a group shows its first row's key values
            values = tuple(evaluate(expr, row) for expr in query.group_by)
            identity = tuple(group_identity(value) for value in values)
            groups.setdefault(identity, (values, []))[1].append(row)
    else:
        groups[()] = ((), rows)  # one row even over no documents

    ordered = sorted(groups.values(), key=lambda group: tuple(group_order(value) for value in group[0]))
    results: list[JsonObject] = []
    for key_values, members in ordered:
        result: JsonObject = {}
        for index, projection in enumerate(projections):
            if isinstance(projection.expr, AggregateCall):
                value = _aggregate(projection.expr, members)
            else:
                value = key_values[key_index[index]]
            if value is not UNDEFINED:
                result[projection.key(index)] = value
        results.append(result)
    return results


def run_query(query: Query, docs: Iterable[JsonObject]) -> list[JsonObject]:
    """The full result of ``query`` over ``docs`` (twin documents or ``devices.jobs`` records)."""
    rows = sorted((doc for doc in docs if matches(query.where, doc)), key=_row_order(query.source))
    if query.is_aggregate or query.group_by:
        results = _grouped(query, rows)
        return results if query.top is None else results[: query.top]
    if query.top is not None:
        rows = rows[: query.top]
    return [project(query, row) for row in rows]
