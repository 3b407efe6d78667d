"""The twin query type checker: rejects queries that can never mean anything before they run.

Every value has a *static type*: a constant's is known, a function's or operator's result is
known (``LENGTH`` is a number, a comparison a boolean), and a field's is ``ANY`` because
twins are schemaless. The checker rejects what is wrong whatever the twins hold:

- a function called with the wrong number of arguments, or with an argument whose static
  type it never takes (``STARTSWITH(deviceId, 3)``, ``LENGTH(5)``); ``ARRAY_CONTAINS``
  needs a field as its array, since no other expression is an array;
- arithmetic (``+ - * / %``, unary ``-``) on a known non-number (``'a' + 1``);
- ``NOT``, ``AND``, ``OR`` and the WHERE condition on a known non-boolean (``NOT 'x'``,
  ``WHERE 3``); comparisons and ``IN`` lists between two known, different types
  (``'a' = 1``). Anything against a field is allowed: its type is only known per twin;
- ``GROUP BY`` without an aggregate projection, a plain projection that is not one of the
  GROUP BY expressions, a GROUP BY expression without a field, an aggregate's argument of
  the wrong type or number;
- on ``devices.jobs``: anything but ``SELECT *`` without GROUP BY, and twin fields (tags,
  properties) -- IoT Hub allows only the job fields there;
- expressions nested deeper than ``MAX_DEPTH`` levels, so that no back end (Python
  recursion, SQLite's expression depth of 1000) meets a tree it cannot walk.

Aggregates inside expressions and ``SELECT *`` mixed with projections cannot be written as
an AST at all; the parser reports those. Errors are ``QuerySyntaxError`` whose message reads
``Query error at line L, column C (offset O): found ..., expected ...``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from enum import StrEnum
from typing import Final, TypeVar, assert_never

from hub.errors import QuerySyntaxError
from hub.query.ast import (
    DEVICE_ROOTS,
    JOB_ROOTS,
    AggregateCall,
    AggregateFunction,
    BinaryOp,
    Call,
    Expr,
    Field,
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
from hub.query.printer import format_expr

__all__ = [
    "MAX_DEPTH",
    "ValueType",
    "check_condition",
    "check_query",
    "depth",
    "describe_position",
    "nesting_error",
    "query_error",
    "show",
    "type_of",
    "without_positions",
]

MAX_DEPTH: Final = 64
"""Deepest expression tree accepted (a leaf is 1). Parenthesised nesting, NOT chains and
arithmetic chains count; long AND / OR chains do not, the parser balances them."""


class ValueType(StrEnum):
    """What an expression can evaluate to, besides undefined."""

    ANY = "any value"
    STRING = "string"
    NUMBER = "number"
    BOOL = "boolean"
    NULL = "null"


class _Param(StrEnum):
    ANY = "any value"
    STRING = "a string"
    ARRAY = "an array field"


_SIGNATURES: Final[dict[FunctionName, tuple[tuple[_Param, ...], ValueType]]] = {
    FunctionName.IS_DEFINED: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.IS_NULL: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.IS_STRING: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.IS_NUMBER: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.IS_BOOL: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.IS_OBJECT: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.IS_ARRAY: ((_Param.ANY,), ValueType.BOOL),
    FunctionName.STARTSWITH: ((_Param.STRING, _Param.STRING), ValueType.BOOL),
    FunctionName.ENDSWITH: ((_Param.STRING, _Param.STRING), ValueType.BOOL),
    FunctionName.CONTAINS: ((_Param.STRING, _Param.STRING), ValueType.BOOL),
    FunctionName.ARRAY_CONTAINS: ((_Param.ARRAY, _Param.ANY), ValueType.BOOL),
    FunctionName.LOWER: ((_Param.STRING,), ValueType.STRING),
    FunctionName.UPPER: ((_Param.STRING,), ValueType.STRING),
    FunctionName.LENGTH: ((_Param.STRING,), ValueType.NUMBER),
}

_ORDINALS: Final = ("first", "second", "third")


# -- messages ----------------------------------------------------------------------------


def describe_position(text: str, offset: int) -> str:
    """``line L, column C (offset O)``: 1-based line and column of a 0-based offset in ``text``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column} (offset {offset})"


def query_error(text: str, offset: int, detail: str, *, kind: str = "Query error") -> QuerySyntaxError:
    """The one shape of every query error: where (line, column, offset), then what."""
    return QuerySyntaxError(f"{kind} at {describe_position(text, offset)}: {detail}", position=offset)


def nesting_error(text: str, offset: int) -> QuerySyntaxError:
    return query_error(
        text,
        offset,
        f"found an expression nested more than {MAX_DEPTH} levels deep, expected a flatter one "
        "(use IN [...] instead of long chains, and fewer parentheses)",
    )


def show(fragment: str, limit: int = 40) -> str:
    """``fragment`` quoted for a message: shortened, with control characters and lone
    surrogates escaped (a message must survive being encoded as UTF-8 JSON)."""
    shortened = fragment if len(fragment) <= limit else fragment[: limit - 3] + "..."
    shown = "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in shortened)
    return f"'{shown}'"


def _article(value_type: ValueType) -> str:
    return "null" if value_type is ValueType.NULL else f"a {value_type.value}"


def _describe(expr: Expr, value_type: ValueType) -> str:
    if isinstance(expr, Literal):
        value = expr.value
        if value is None:
            return "null"
        if isinstance(value, bool):
            return f"the boolean {'true' if value else 'false'}"
        if isinstance(value, str):
            return f"the string {show(value)}"
        return f"the number {value!r}"
    return f"{show(format_expr(expr))}, {_article(value_type)}"


# -- tree shape --------------------------------------------------------------------------


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Field | Literal):
        return ()
    if isinstance(expr, UnaryOp):
        return (expr.operand,)
    if isinstance(expr, BinaryOp):
        return (expr.left, expr.right)
    if isinstance(expr, InList):
        return (expr.operand, *expr.items)
    if isinstance(expr, Call):
        return expr.args
    assert_never(expr)


def _walk(expr: Expr) -> Iterator[tuple[Expr, int]]:
    """Every node with its depth (the root is 1), without recursion: the tree may be deep."""
    stack = [(expr, 1)]
    while stack:
        node, level = stack.pop()
        yield node, level
        stack.extend((child, level + 1) for child in _children(node))


def depth(expr: Expr) -> int:
    """Levels in the tree (a leaf is 1), computed without recursion."""
    return max(level for _, level in _walk(expr))


def _check_depth(expr: Expr, text: str) -> None:
    for node, level in _walk(expr):
        if level > MAX_DEPTH:
            raise nesting_error(text, node.position)


_Node = TypeVar("_Node", Expr, Query)


def without_positions(node: _Node) -> _Node:
    """``node`` with every position set to 0: equal trees compare equal whatever text they came from."""
    if isinstance(node, Query):
        select = node.select if isinstance(node.select, Star) else tuple(_projection_without(p) for p in node.select)
        return replace(
            node,
            select=select,
            where=without_positions(node.where) if node.where is not None else None,
            group_by=tuple(without_positions(expr) for expr in node.group_by),
        )
    if isinstance(node, Field | Literal):
        return replace(node, position=0)
    if isinstance(node, UnaryOp):
        return replace(node, operand=without_positions(node.operand), position=0)
    if isinstance(node, BinaryOp):
        return replace(node, left=without_positions(node.left), right=without_positions(node.right), position=0)
    if isinstance(node, InList):
        items = tuple(replace(item, position=0) for item in node.items)
        return replace(node, operand=without_positions(node.operand), items=items, position=0)
    if isinstance(node, Call):
        return replace(node, args=tuple(without_positions(arg) for arg in node.args), position=0)
    assert_never(node)


def _projection_without(projection: Projection) -> Projection:
    expr = projection.expr
    if isinstance(expr, AggregateCall):
        arg = without_positions(expr.arg) if expr.arg is not None else None
        return replace(projection, expr=replace(expr, arg=arg, position=0))
    return replace(projection, expr=without_positions(expr))


def _fields(expr: Expr) -> Iterator[Field]:
    for node, _ in _walk(expr):
        if isinstance(node, Field):
            yield node


# -- the checker -------------------------------------------------------------------------


class _Checker:
    def __init__(self, text: str, source: Source) -> None:
        self.text = text
        self.source = source

    def error(self, offset: int, detail: str) -> QuerySyntaxError:
        return query_error(self.text, offset, detail)

    def expr(self, expr: Expr) -> ValueType:
        """Check ``expr`` (already depth-checked) and return its static type."""
        if isinstance(expr, Field):
            self.field(expr)
            return ValueType.ANY
        if isinstance(expr, Literal):
            return _literal_type(expr)
        if isinstance(expr, UnaryOp):
            operand = self.expr(expr.operand)
            if expr.op is UnaryOperator.NOT:
                self.expect_bool(expr.operand, operand, "after NOT")
                return ValueType.BOOL
            self.expect_number(expr.operand, operand, "after unary '-'")
            return ValueType.NUMBER
        if isinstance(expr, BinaryOp):
            return self.binary(expr)
        if isinstance(expr, InList):
            return self.in_list(expr)
        if isinstance(expr, Call):
            return self.call(expr)
        assert_never(expr)

    def field(self, field: Field) -> None:
        roots = JOB_ROOTS if self.source is Source.JOBS else DEVICE_ROOTS
        if field.root not in roots:
            names = ", ".join(sorted(root.value for root in roots))
            raise self.error(
                field.position, f"found the field {field.root.value}, expected a field of {self.source.value}: {names}"
            )
        for segment in field.path:
            # SQLite JSON paths cannot spell these; refusing them here makes a job's queryCondition
            # fail when the job is created, not when it starts.
            if '"' in segment or "\\" in segment:
                raise self.error(
                    field.position,
                    f"found the property name {segment!r}, expected a name without '\"' or '\\' "
                    "(unsupported character in property name: such names cannot be queried)",
                )

    def expect_bool(self, expr: Expr, value_type: ValueType, where: str) -> None:
        if value_type not in (ValueType.BOOL, ValueType.ANY):
            raise self.error(expr.position, f"found {_describe(expr, value_type)} {where}, expected a boolean")

    def expect_number(self, expr: Expr, value_type: ValueType, where: str) -> None:
        if value_type not in (ValueType.NUMBER, ValueType.ANY):
            raise self.error(expr.position, f"found {_describe(expr, value_type)} {where}, expected a number")

    def binary(self, expr: BinaryOp) -> ValueType:
        left = self.expr(expr.left)
        right = self.expr(expr.right)
        if expr.op.is_logical:
            self.expect_bool(expr.left, left, f"as an operand of {expr.op.value}")
            self.expect_bool(expr.right, right, f"as an operand of {expr.op.value}")
            return ValueType.BOOL
        if expr.op.is_arithmetic:
            self.expect_number(expr.left, left, f"as an operand of '{expr.op.value}'")
            self.expect_number(expr.right, right, f"as an operand of '{expr.op.value}'")
            return ValueType.NUMBER
        if ValueType.ANY not in (left, right) and left is not right:
            raise self.error(
                expr.position,
                f"found {_describe(expr.left, left)} {expr.op.value} {_describe(expr.right, right)}, "
                "expected two values of the same type (values of different types never compare)",
            )
        return ValueType.BOOL

    def in_list(self, expr: InList) -> ValueType:
        operand = self.expr(expr.operand)
        keyword = "NIN" if expr.negated else "IN"
        if not expr.items:
            raise self.error(expr.position, f"found an empty list after {keyword}, expected at least one constant")
        if operand is not ValueType.ANY:
            for item in expr.items:
                item_type = _literal_type(item)
                if item_type is not operand:
                    raise self.error(
                        item.position,
                        f"found {_describe(item, item_type)} in the {keyword} list of "
                        f"{_describe(expr.operand, operand)}, expected {_article(operand)} "
                        "(values of different types never compare)",
                    )
        return ValueType.BOOL

    def call(self, call: Call) -> ValueType:
        params, result = _SIGNATURES[call.function]
        name = call.function.value
        if len(call.args) != len(params):
            raise self.error(
                call.position,
                f"found {_count(len(call.args), 'argument')} to {name}, expected {_count(len(params), 'argument')}",
            )
        for index, (arg, param) in enumerate(zip(call.args, params, strict=True)):
            arg_type = self.expr(arg)
            ordinal = _ORDINALS[index] if len(params) > 1 else "the"
            where = f"as the {ordinal} argument of {name}" if len(params) > 1 else f"as the argument of {name}"
            if param is _Param.STRING and arg_type not in (ValueType.STRING, ValueType.ANY):
                raise self.error(arg.position, f"found {_describe(arg, arg_type)} {where}, expected a string")
            if param is _Param.ARRAY and arg_type is not ValueType.ANY:
                raise self.error(arg.position, f"found {_describe(arg, arg_type)} {where}, expected an array field")
        return result

    def aggregate(self, call: AggregateCall) -> None:
        name = call.function.value
        if call.function is AggregateFunction.COUNT:
            if call.arg is not None:
                raise self.error(call.position, "found an argument to COUNT, expected COUNT() (it counts rows)")
            return
        if call.arg is None:
            raise self.error(call.position, f"found {name}(), expected {name}(expression) with one argument")
        _check_depth(call.arg, self.text)
        arg_type = self.expr(call.arg)
        self.expect_number(call.arg, arg_type, f"as the argument of {name}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _literal_type(literal: Literal) -> ValueType:
    value = literal.value
    if value is None:
        return ValueType.NULL
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, str):
        return ValueType.STRING
    return ValueType.NUMBER


def type_of(expr: Expr, source: Source = Source.DEVICES, text: str = "") -> ValueType:
    """The static type of a well-formed ``expr``; raises QuerySyntaxError like the checks below."""
    _check_depth(expr, text)
    return _Checker(text, source).expr(expr)


def check_condition(condition: Expr, source: Source = Source.DEVICES, text: str = "") -> Expr:
    """Check a WHERE condition (also a job's queryCondition) and return it unchanged.

    ``text`` is the query it was parsed from, for line and column numbers in messages.
    """
    _check_depth(condition, text)
    checker = _Checker(text, source)
    checker.expect_bool(condition, checker.expr(condition), "as the condition")
    return condition


def check_query(query: Query, text: str = "") -> Query:
    """Check a whole query (see the module docstring) and return it unchanged."""
    checker = _Checker(text, query.source)
    if query.top is not None and query.top < 1:
        raise checker.error(0, f"found TOP {query.top}, expected a positive integer")
    if query.source is Source.JOBS:
        _check_jobs_shape(query, checker)
    if isinstance(query.select, tuple):
        if not query.select:
            raise checker.error(0, "found no projections, expected * or at least one projection")
        for projection in query.select:
            if isinstance(projection.expr, AggregateCall):
                checker.aggregate(projection.expr)
            else:
                _check_depth(projection.expr, text)
                checker.expr(projection.expr)
    if query.where is not None:
        check_condition(query.where, query.source, text)
    for expr in query.group_by:
        _check_depth(expr, text)
        checker.expr(expr)
        if next(_fields(expr), None) is None:
            raise checker.error(
                expr.position, f"found GROUP BY {show(format_expr(expr))}, expected an expression with a field"
            )
    _check_grouping(query, checker)
    return query


def _check_jobs_shape(query: Query, checker: _Checker) -> None:
    if not isinstance(query.select, Star):
        first = query.select[0].expr if query.select else None
        raise checker.error(
            first.position if first is not None else 0,
            "found a projection on devices.jobs, expected SELECT * (IoT Hub allows only SELECT * there)",
        )
    if query.group_by:
        raise checker.error(
            query.group_by[0].position,
            "found GROUP BY on devices.jobs, expected no grouping (IoT Hub groups device twins only)",
        )


def _check_grouping(query: Query, checker: _Checker) -> None:
    if isinstance(query.select, Star):
        if query.group_by:
            raise checker.error(
                query.group_by[0].position,
                "found SELECT * with GROUP BY, expected the GROUP BY expressions and aggregates "
                "(COUNT(), AVG, SUM, MIN, MAX) as projections",
            )
        return
    aggregates = [p for p in query.select if isinstance(p.expr, AggregateCall)]
    if query.group_by and not aggregates:
        raise checker.error(
            query.group_by[0].position,
            "found GROUP BY without an aggregate, expected COUNT(), AVG, SUM, MIN or MAX among the projections",
        )
    if not aggregates:
        return
    grouped = {format_expr(expr) for expr in query.group_by}
    for projection in query.select:
        if isinstance(projection.expr, AggregateCall):
            continue
        printed = format_expr(projection.expr)
        if printed not in grouped:
            raise checker.error(
                projection.expr.position,
                f"found the projection {show(printed)} next to an aggregate, expected an aggregate or "
                + ("one of the GROUP BY expressions" if query.group_by else f"GROUP BY {printed}"),
            )
