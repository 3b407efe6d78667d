"""Query AST -> canonical query text that ``hub.query.parser`` reads back to the same AST.

Used in error messages and logs, and by the round-trip tests. The text is canonical:
upper-case keywords and function names, canonical field names, single-quoted strings,
the fewest parentheses that keep the tree. AND / OR chains are printed flat when the tree
has the balanced shape the parser builds for a flat chain (``chain_split``), else with
parentheses around same-operator operands, so any tree survives the round trip.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Final, assert_never

from hub.query.ast import (
    AggregateCall,
    BinaryOp,
    BinaryOperator,
    Call,
    Expr,
    Field,
    FieldRoot,
    InList,
    Literal,
    Projection,
    Query,
    Scalar,
    Star,
    UnaryOp,
    UnaryOperator,
)

__all__ = ["KEYWORDS", "chain_split", "format_expr", "format_field", "format_literal", "format_query"]

KEYWORDS: Final = frozenset(
    {
        "SELECT",
        "TOP",
        "FROM",
        "WHERE",
        "GROUP",
        "BY",
        "AS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "NIN",
        "TRUE",
        "FALSE",
        "NULL",
    }
)

_NAME: Final = re.compile(r"[^\W\d]\w*")

# Binding strength, loosest first; an operand binding more loosely than its slot needs parentheses.
_OR, _AND, _NOT, _COMPARE, _ADD, _MUL, _NEG, _ATOM = range(1, 9)
_BINARY_PRECEDENCE: Final = {
    BinaryOperator.OR: _OR,
    BinaryOperator.AND: _AND,
    BinaryOperator.ADD: _ADD,
    BinaryOperator.SUB: _ADD,
    BinaryOperator.MUL: _MUL,
    BinaryOperator.DIV: _MUL,
    BinaryOperator.MOD: _MUL,
}


def chain_split(count: int) -> int:
    """How many operands of a flat ``a OR b OR ...`` chain go to the left subtree.

    The parser builds such chains balanced (depth log n, so hundreds of ORs stay within every
    back end's depth limit; AND and OR are associative in three-valued logic, so the shape
    does not change the meaning). The left half takes the extra operand: three operands
    nest to the left, ``(a OR b) OR c``.
    """
    return (count + 1) // 2


def format_literal(value: Scalar) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + "".join(_escape(ch) for ch in value) + "'"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no query text")
    return repr(value)


def _escape(ch: str) -> str:
    if ch == "'":
        return "\\'"
    if ch == "\\":
        return "\\\\"
    if unicodedata.category(ch) in ("Cc", "Cs"):
        return f"\\u{ord(ch):04x}"
    return ch


def _name(name: str) -> str:
    """A path segment or alias: bare when it lexes as a name, else ``[[escaped]]``."""
    if _NAME.fullmatch(name) and name.upper() not in KEYWORDS:
        return name
    if not name or "]]" in name or name.endswith("]"):
        raise ValueError(f"{name!r} cannot be written in a query (empty, or with ']]' or a final ']')")
    return f"[[{name}]]"


def format_field(field: Field) -> str:
    text = field.root.value
    if field.root in (FieldRoot.DESIRED, FieldRoot.REPORTED) and field.path == ("$version",):
        return f"{text}.$version"
    return ".".join([text, *(_name(segment) for segment in field.path)])


def format_expr(expr: Expr) -> str:
    return _format(expr)[0]


def _wrapped(expr: Expr, at_least: int) -> str:
    text, precedence = _format(expr)
    return text if precedence >= at_least else f"({text})"


def _format(expr: Expr) -> tuple[str, int]:
    if isinstance(expr, Field):
        return format_field(expr), _ATOM
    if isinstance(expr, Literal):
        text = format_literal(expr.value)
        return text, _NEG if text.startswith("-") else _ATOM
    if isinstance(expr, UnaryOp):
        if expr.op is UnaryOperator.NOT:
            return f"NOT {_wrapped(expr.operand, _NOT)}", _NOT
        operand = expr.operand
        if (
            isinstance(operand, Literal)
            and not isinstance(operand.value, bool | str | None)
            and not format_literal(operand.value).startswith("-")
        ):
            # `-5` reads back as the constant -5; the parenthesised form keeps the operator.
            return f"-({format_literal(operand.value)})", _NEG
        return f"-{_wrapped(operand, _NEG)}", _NEG
    if isinstance(expr, BinaryOp):
        return _format_binary(expr)
    if isinstance(expr, InList):
        keyword = "NIN" if expr.negated else "IN"
        items = ", ".join(format_literal(item.value) for item in expr.items)
        return f"{_wrapped(expr.operand, _ADD)} {keyword} [{items}]", _COMPARE
    if isinstance(expr, Call):
        return f"{expr.function.value}({', '.join(format_expr(arg) for arg in expr.args)})", _ATOM
    assert_never(expr)


def _format_binary(expr: BinaryOp) -> tuple[str, int]:
    op = expr.op
    if op.is_comparison:
        return f"{_wrapped(expr.left, _ADD)} {op.value} {_wrapped(expr.right, _ADD)}", _COMPARE
    precedence = _BINARY_PRECEDENCE[op]
    if op.is_logical:
        operands = _chain(expr, op)
        if operands is not None:
            return f" {op.value} ".join(_wrapped(item, precedence + 1) for item in operands), precedence
        return f"{_wrapped(expr.left, precedence + 1)} {op.value} {_wrapped(expr.right, precedence + 1)}", precedence
    return f"{_wrapped(expr.left, precedence)} {op.value} {_wrapped(expr.right, precedence + 1)}", precedence


def _chain(expr: Expr, op: BinaryOperator) -> list[Expr] | None:
    """The operands of a same-``op`` chain when ``expr`` has the parser's balanced shape, else None."""
    operands: list[Expr] = []
    shape = _shape(expr, op, operands)
    return operands if shape == _balanced_shape(0, len(operands)) else None


Shape = int | tuple["Shape", "Shape"]


def _shape(expr: Expr, op: BinaryOperator, leaves: list[Expr]) -> Shape:
    if isinstance(expr, BinaryOp) and expr.op is op:
        left = _shape(expr.left, op, leaves)
        return left, _shape(expr.right, op, leaves)
    leaves.append(expr)
    return len(leaves) - 1


def _balanced_shape(start: int, count: int) -> Shape:
    if count == 1:
        return start
    left = chain_split(count)
    return _balanced_shape(start, left), _balanced_shape(start + left, count - left)


def _format_projection(projection: Projection) -> str:
    expr = projection.expr
    if isinstance(expr, AggregateCall):
        text = f"{expr.function.value}({'' if expr.arg is None else format_expr(expr.arg)})"
    else:
        text = format_expr(expr)
    return text if projection.alias is None else f"{text} AS {_name(projection.alias)}"


def format_query(query: Query) -> str:
    parts = ["SELECT"]
    if query.top is not None:
        parts.append(f"TOP {query.top}")
    if isinstance(query.select, Star):
        parts.append("*")
    else:
        parts.append(", ".join(_format_projection(p) for p in query.select))
    parts.append(f"FROM {query.source.value}")
    if query.where is not None:
        parts.append(f"WHERE {format_expr(query.where)}")
    if query.group_by:
        parts.append("GROUP BY " + ", ".join(format_expr(expr) for expr in query.group_by))
    return " ".join(parts)
