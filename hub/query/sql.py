"""Twin query AST -> SQL text with bound parameters, for SQLite and PostgreSQL.

This module is pure: it writes SQL text and a parameter dict and never touches a database
(STYLE.md rule 1); hub.storage.query executes what it writes. The semantics are those of
``hub.query.ast`` as decided by the reference evaluator (``hub.query.evaluate``); the
equivalence tests hold the three to the same answers.

Safety
    Every value from a query -- constants, JSON property names, limits, paging keys -- is a
    bound parameter named ``:p1``, ``:p2``...; the SQL text holds only this module's own
    words. A property name containing ``"`` or ``\\`` cannot be written in a SQLite JSON
    path, so such a field is a QuerySyntaxError ("unsupported character in property name")
    on both dialects, to keep them alike. A property name that is empty matches nothing
    (twins cannot have one) and compiles to undefined. An operand's SQL appears once in its
    parent's (a field's, or a string operand of STARTSWITH / ENDSWITH, may appear twice: those
    never contain a repeated operand themselves), so the text grows linearly with the query.

Values
    Each expression compiles to a value of a static kind: a string, number or boolean SQL
    expression (NULL meaning undefined), the constant ``null``, a statically undefined value,
    or a *JSON* value -- a property of tags / desired / reported, whose type is only known
    per row. A JSON value's type comes from ``json_type`` (SQLite; NULL when the path is
    missing) or ``jsonb_typeof`` (PostgreSQL), and it is read as a string, number or boolean
    only under that type (SQLite's ``json_extract`` returns 1/0 for true/false, which must
    never meet a number). Paths descend objects only: SQLite paths are ``$."a"."b"``, and
    PostgreSQL uses a chain of ``->`` with text keys, because ``#>`` would index arrays
    (``tags.a.0`` is undefined, not the first element of ``a``). SQLite matches a path label
    against the key as spelt in the stored text, which hub.storage writes with json.dumps'
    ASCII escapes, so labels are escaped the same way (``$."\\u00e9"`` for ``é``).

    Identity columns are typed directly: deviceId, status, connectionState, etag and the
    devices.jobs names are strings, ``version`` a number, and times the exact ISO text the
    twin document shows (``2024-05-01T12:00:00.1234560Z``) or undefined when the column is
    NULL. ``properties.desired.$version`` is the section's version column; ``$metadata``
    under desired or reported is undefined; a whole ``properties.desired`` is the section
    with its ``$version`` added.

Operators (as hub.query.evaluate decides them)
    Comparisons compare values of one primitive type only, else NULL. Strings compare by
    code point: SQLite's BINARY collation, ``COLLATE "C"`` on PostgreSQL. AND / OR / NOT are
    SQL's three-valued logic; a non-boolean operand is NULL. STARTSWITH / ENDSWITH /
    CONTAINS use substr/instr (SQLite) and left/right/strpos (PostgreSQL), never LIKE
    (wildcards, case folding). LOWER / UPPER map ASCII letters only (SQLite's lower/upper;
    ``translate`` on PostgreSQL); LENGTH counts characters. ARRAY_CONTAINS and IN / NIN
    match by ``=``. Arithmetic: ``/`` is true division; ``%`` is the remainder with the sign
    of the dividend (SQLite: ``%`` on two integers, ``mod()`` otherwise; PostgreSQL: the
    exact ``fleethub_fmod``); division or remainder by zero and results that overflow are
    NULL. On PostgreSQL numbers are double precision and + - * / go through the
    ``fleethub_add|sub|mul|div`` functions, which return NULL instead of raising on overflow
    (and zero on underflow, as IEEE arithmetic does); migration 0002 creates all five.

Known differences from the reference evaluator (which computes with exact Python ints)
    Integer arithmetic is exact up to 2**53 on PostgreSQL (double precision) and 2**63 on
    SQLite (then it becomes a float); twin integers are limited to +-2**52, so only
    products of large integers are affected. A computed number (a GROUP BY key or a MIN / MAX
    of an expression) is a double on PostgreSQL and prints without a fraction when it is
    integral (``6 / 2`` groups as ``6``, the evaluator shows ``6.0``): equal values, another
    JSON spelling; where an integer and an equal float tie for MIN / MAX, either may show.
    SUM and AVG over non-integers are the database's sums (exact decimal sums on PostgreSQL,
    plain double sums on SQLite) rather than math.fsum, so they may differ in the last bits;
    sums of integers are exact on both.

Row shapes
    ``compile_rows`` selects ``TableSchema.columns`` of the source, in that order.
    ``compile_aggregate`` returns one row per SQL group, see ``compile_aggregate``; groups
    that the evaluator treats as one (``1`` and ``1.0``, objects with keys in another order)
    may arrive as several rows, which the decoder merges (see ``aggregate_outputs``).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, assert_never

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
    Query,
    Scalar,
    Source,
    Star,
    UnaryOp,
    UnaryOperator,
)
from hub.query.check import without_positions

__all__ = [
    "DEVICES_TABLE",
    "DEVICE_JOBS_TABLE",
    "PG_FUNCTIONS",
    "TAG_VALUES_TABLE",
    "AggregateOutput",
    "Dialect",
    "SqlFragment",
    "TableSchema",
    "aggregate_outputs",
    "compile_aggregate",
    "compile_condition",
    "compile_rows",
    "table_of",
]


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, slots=True)
class SqlFragment:
    """SQL text whose only variable parts are the named parameters ``:p1``, ``:p2``..."""

    text: str
    params: dict[str, object]


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table the compiler reads: ``columns`` are what ``compile_rows`` selects, in order."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]


DEVICES_TABLE: Final = TableSchema(
    name="devices",
    key=("device_id",),
    columns=(
        "device_id",
        "etag",
        "tags",
        "desired",
        "desired_metadata",
        "desired_version",
        "reported",
        "reported_metadata",
        "reported_version",
        "twin_version",
        "twin_revision",
        "status",
        "status_reason",
        "status_updated_time",
        "connection_state",
        "last_activity_time",
        "etag_revision",
        "auth_type",
        "primary_thumbprint",
        "secondary_thumbprint",
    ),
)
DEVICE_JOBS_TABLE: Final = TableSchema(
    name="device_jobs",
    key=("device_id", "job_id"),
    columns=(
        "job_id",
        "device_id",
        "job_type",
        "status",
        "created_time",
        "last_updated_time",
        "start_time",
        "end_time",
        "outcome",
        "error",
        "attempts",
    ),
)

TAG_VALUES_TABLE: Final = TableSchema(
    name="device_tag_values", key=("value", "device_id"), columns=("value", "device_id")
)
"""SQLite only: each string found anywhere in a twin's tags, with the device's id; kept by
triggers (migration 0002). It answers ``tags.x = 'v'`` without parsing every twin's tags."""

PG_FUNCTIONS: Final = ("fleethub_add", "fleethub_sub", "fleethub_mul", "fleethub_div", "fleethub_fmod")
"""The SQL functions compiled PostgreSQL queries call (created by migration 0002)."""

_PARAMETER: Final = re.compile(r":(p[0-9]+)\b")


def table_of(source: Source) -> TableSchema:
    return DEVICE_JOBS_TABLE if source is Source.JOBS else DEVICES_TABLE


# -- values ------------------------------------------------------------------------------


class _Class(Enum):
    """JSON value types, as the comparison rules group them."""

    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    NULL = "null"
    ARRAY = "array"
    OBJECT = "object"


_PRIMITIVES: Final = (_Class.STRING, _Class.NUMBER, _Class.BOOL, _Class.NULL)


class _Kind(Enum):
    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    NULL = "null"  # the constant null: always defined
    JSON = "json"  # a JSON property: any type, or undefined, per row
    UNDEFINED = "undefined"  # undefined on every row


_CLASS_OF_KIND: Final = {_Kind.STRING: _Class.STRING, _Kind.NUMBER: _Class.NUMBER, _Kind.BOOL: _Class.BOOL}


@dataclass(frozen=True, slots=True)
class _Value:
    """A compiled expression. Static kinds use ``sql`` (NULL = undefined); JSON values use
    ``type_sql`` (the JSON type name, NULL when undefined), ``item`` (SQLite: what
    json_extract gives; PostgreSQL: the jsonb), ``text`` (the value as JSON text) and, for
    properties on SQLite, the ``doc`` / ``path`` pair that json_each takes."""

    kind: _Kind
    sql: str = "NULL"
    type_sql: str = "NULL"
    item: str = "NULL"
    text: str | None = None
    doc: str | None = None
    path: str | None = None
    exact: str | None = None  # PostgreSQL: the number as numeric (stored representation kept)

    def classes(self) -> tuple[_Class, ...]:
        if self.kind is _Kind.JSON:
            return tuple(_Class)
        if self.kind is _Kind.NULL:
            return (_Class.NULL,)
        if self.kind is _Kind.UNDEFINED:
            return ()
        return (_CLASS_OF_KIND[self.kind],)


_UNDEFINED: Final = _Value(_Kind.UNDEFINED)
_NULL: Final = _Value(_Kind.NULL)

_COMPARISON_SQL: Final = {
    BinaryOperator.EQ: "=",
    BinaryOperator.NE: "<>",
    BinaryOperator.LT: "<",
    BinaryOperator.GT: ">",
    BinaryOperator.LE: "<=",
    BinaryOperator.GE: ">=",
}
# null compares equal to null: = <= >= are true, != < > false.
_NULL_COMPARISON: Final = {
    BinaryOperator.EQ: True,
    BinaryOperator.NE: False,
    BinaryOperator.LT: False,
    BinaryOperator.GT: False,
    BinaryOperator.LE: True,
    BinaryOperator.GE: True,
}
_UPPERCASE: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWERCASE: Final = "abcdefghijklmnopqrstuvwxyz"


class _Context:
    """Parameters and aliases of one statement being compiled."""

    def __init__(self, backend: _Backend, source: Source) -> None:
        self.backend = backend
        self.source = source
        self.table = table_of(source).name
        self.params: dict[str, object] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._aliases = 0

    def bind(self, value: str | int | float | bool) -> str:
        """A parameter reference for ``value`` (one parameter per distinct value and type)."""
        key = (type(value).__name__, repr(value))
        name = self._names.get(key)
        if name is None:
            name = f"p{len(self.params) + 1}"
            self._names[key] = name
            self.params[name] = value
        return f":{name}"

    def fragment(self, text: str) -> SqlFragment:
        """``text`` with the parameters it uses (a value bound for an operand that compiled
        to undefined may have dropped out)."""
        used = set(_PARAMETER.findall(text))
        return SqlFragment(text, {name: value for name, value in self.params.items() if name in used})

    def alias(self, prefix: str) -> str:
        self._aliases += 1
        return f"{prefix}{self._aliases}"

    def column(self, name: str) -> str:
        return f"{self.table}.{name}"


# -- dialects ----------------------------------------------------------------------------


class _Backend(ABC):
    """What differs between SQLite and PostgreSQL; the compiler proper is dialect-neutral."""

    dialect: Dialect
    true: str
    false: str
    type_names: dict[_Class, tuple[str, ...]]

    def null(self, kind: _Kind) -> str:
        return "NULL"

    def string(self, ctx: _Context, value: str) -> str:
        return ctx.bind(value)

    def number(self, ctx: _Context, value: int | float) -> str:
        return ctx.bind(value)

    def boolean(self, ctx: _Context, value: bool) -> str:
        return ctx.bind(value)

    def type_is(self, value: _Value, classes: Sequence[_Class]) -> str:
        """True when a JSON value has one of ``classes``, false otherwise (never NULL)."""
        names = [name for cls in classes for name in self.type_names[cls]]
        if len(names) == 1:
            return f"COALESCE({value.type_sql} = '{names[0]}', {self.false})"
        listed = ", ".join(f"'{name}'" for name in names)
        return f"COALESCE({value.type_sql} IN ({listed}), {self.false})"

    def type_equals(self, value: _Value, cls: _Class) -> str:
        """Like type_is for one class, but NULL when the value is undefined."""
        names = self.type_names[cls]
        if len(names) == 1:
            return f"{value.type_sql} = '{names[0]}'"
        listed = ", ".join(f"'{name}'" for name in names)
        return f"{value.type_sql} IN ({listed})"

    @abstractmethod
    def field(self, ctx: _Context, column: str, path: tuple[str, ...]) -> _Value: ...

    @abstractmethod
    def section(self, ctx: _Context, column: str, version_column: str) -> _Value:
        """A whole desired / reported section with its ``$version``."""
        ...

    @abstractmethod
    def as_string(self, value: _Value) -> str: ...

    @abstractmethod
    def as_number(self, value: _Value) -> str: ...

    @abstractmethod
    def as_bool(self, value: _Value) -> str: ...

    def compare(self, cls: _Class, left: str, op: BinaryOperator, right: str) -> str:
        return f"({left} {_COMPARISON_SQL[op]} {right})"

    @abstractmethod
    def arithmetic(self, op: BinaryOperator, left: str, right: str) -> str: ...

    @abstractmethod
    def time(self, column: str) -> str: ...

    @abstractmethod
    def integer_column(self, column: str) -> _Value: ...

    @abstractmethod
    def lower(self, text: str) -> str: ...

    @abstractmethod
    def upper(self, text: str) -> str: ...

    @abstractmethod
    def length(self, text: str) -> str: ...

    @abstractmethod
    def starts_with(self, text: str, prefix: str) -> str: ...

    @abstractmethod
    def ends_with(self, text: str, suffix: str) -> str: ...

    @abstractmethod
    def contains(self, text: str, part: str) -> str: ...

    @abstractmethod
    def elements(self, ctx: _Context, array: _Value) -> tuple[str, _Value]:
        """``FROM`` text over the elements of a JSON array property, and an element as a value."""
        ...

    @abstractmethod
    def contains_item(self, ctx: _Context, array: _Value, cls: _Class, item: str) -> str:
        """Whether a JSON array (known to be one) has an element equal to ``item``, a static
        value of ``cls``: NULL when the item is undefined, even for an empty array (where
        ``NULL IN (empty set)`` would be false)."""
        ...

    @abstractmethod
    def key_text(self, value: _Value) -> str:
        """A GROUP BY key: the value as JSON text (or, SQLite, a plain number), NULL if undefined."""
        ...

    @abstractmethod
    def aggregate_number(self, value: _Value) -> tuple[str, bool]:
        """The number an aggregate reads, and whether it keeps the stored representation
        (SQLite always; PostgreSQL: numeric from JSON)."""
        ...

    @abstractmethod
    def sum_columns(self, v: str, exact: bool, prefix: str) -> list[str]: ...

    @abstractmethod
    def extreme_column(self, function: str, v: str, exact: bool, prefix: str) -> str: ...

    def limit(self, ctx: _Context, limit: int) -> str:
        return ctx.bind(limit)

    def fast_compare(self, json_value: _Value, op: BinaryOperator, other: _Value, json_left: bool) -> str | None:
        """A cheaper test that is true exactly when the comparison is true (only usable where
        false and NULL need not be told apart), or None."""
        return None

    def fast_in(self, json_value: _Value, cls: _Class, items: list[str]) -> str | None:
        return None


class _Sqlite(_Backend):
    dialect = Dialect.SQLITE
    true = "1"
    false = "0"
    type_names = {
        _Class.STRING: ("text",),
        _Class.NUMBER: ("integer", "real"),
        _Class.BOOL: ("true", "false"),
        _Class.NULL: ("null",),
        _Class.ARRAY: ("array",),
        _Class.OBJECT: ("object",),
    }

    def number(self, ctx: _Context, value: int | float) -> str:
        # The parser keeps integers within 64 bits; anything wider would not bind.
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return ctx.bind(float(value))
        return ctx.bind(value)

    @staticmethod
    def _path(path: tuple[str, ...]) -> str:
        # SQLite 3.40 compares a path label with the key's raw text in the stored JSON, which
        # the store writes ASCII-escaped (json.dumps: "\u00e9" for "é"); so the label must be
        # escaped the same way. (Keys with '"' or '\' were refused before this.)
        return "$" + "".join(f'."{json.dumps(segment)[1:-1]}"' for segment in path)

    def _json(self, doc: str, path: str) -> _Value:
        return _Value(
            _Kind.JSON,
            type_sql=f"json_type({doc}, {path})",
            item=f"json_extract({doc}, {path})",
            text=f"({doc} -> {path})",
            doc=doc,
            path=path,
        )

    def field(self, ctx: _Context, column: str, path: tuple[str, ...]) -> _Value:
        return self._json(column, ctx.bind(self._path(path)))

    def section(self, ctx: _Context, column: str, version_column: str) -> _Value:
        doc = f"json_set({column}, {ctx.bind(self._path(('$version',)))}, {version_column})"
        return self._json(doc, ctx.bind("$"))

    def as_string(self, value: _Value) -> str:
        return f"CASE WHEN {value.type_sql} = 'text' THEN {value.item} END"

    def as_number(self, value: _Value) -> str:
        return f"CASE WHEN {value.type_sql} IN ('integer', 'real') THEN {value.item} END"

    def as_bool(self, value: _Value) -> str:
        return f"CASE {value.type_sql} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"

    @staticmethod
    def _finite(sql: str) -> str:
        # 9e999 is infinity to SQLite; NaN is already NULL there.
        return f"nullif(nullif({sql}, 9e999), -9e999)"

    def arithmetic(self, op: BinaryOperator, left: str, right: str) -> str:
        if op is BinaryOperator.DIV:
            # True division (SQLite divides integers by truncation); x / 0 is NULL.
            return self._finite(f"(CAST({left} AS REAL) / {right})")
        if op is BinaryOperator.MOD:
            # Integers keep integer remainders; mod() is C's fmod. The FROM-less subquery
            # names each operand once (SQLite never flattens it into the outer query).
            return (
                "(SELECT CASE WHEN typeof(x) = 'integer' AND typeof(y) = 'integer' THEN x % y ELSE mod(x, y) END"
                f" FROM (SELECT {left} AS x, {right} AS y))"
            )
        symbol = {BinaryOperator.ADD: "+", BinaryOperator.SUB: "-", BinaryOperator.MUL: "*"}[op]
        return self._finite(f"({left} {symbol} {right})")

    def time(self, column: str) -> str:
        # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC); the twin shows 7 digits and Z.
        return f"(replace({column}, ' ', 'T') || '0Z')"

    def integer_column(self, column: str) -> _Value:
        return _Value(_Kind.NUMBER, sql=column)

    def lower(self, text: str) -> str:
        return f"lower({text})"

    def upper(self, text: str) -> str:
        return f"upper({text})"

    def length(self, text: str) -> str:
        return f"length({text})"

    def starts_with(self, text: str, prefix: str) -> str:
        return f"(substr({text}, 1, length({prefix})) = {prefix})"

    def ends_with(self, text: str, suffix: str) -> str:
        # A sentinel character makes the empty suffix work with substr's negative start.
        return f"(substr({text} || 'x', -length({suffix} || 'x')) = ({suffix} || 'x'))"

    def contains(self, text: str, part: str) -> str:
        return f"(instr({text}, {part}) > 0)"

    def elements(self, ctx: _Context, array: _Value) -> tuple[str, _Value]:
        alias = ctx.alias("je")
        element = _Value(_Kind.JSON, type_sql=f"{alias}.type", item=f"{alias}.atom")
        return f"json_each({array.doc}, {array.path}) AS {alias}", element

    def contains_item(self, ctx: _Context, array: _Value, cls: _Class, item: str) -> str:
        source, element = self.elements(ctx, array)
        value = f"({element.type_sql} = 'true')" if cls is _Class.BOOL else element.item
        elements = f"SELECT {value} FROM {source} WHERE {self.type_is(element, (cls,))}"
        # The FROM-less subquery names the item once; SQLite never flattens it.
        return f"(SELECT CASE WHEN x IS NOT NULL THEN x IN ({elements}) END FROM (SELECT {item} AS x))"

    def key_text(self, value: _Value) -> str:
        kind = value.kind
        if kind is _Kind.STRING:
            return f"nullif(json_quote({value.sql}), 'null')"
        if kind is _Kind.NUMBER:
            return value.sql
        if kind is _Kind.BOOL:
            return f"CASE {value.sql} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END"
        if kind is _Kind.NULL:
            return "'null'"
        if kind is _Kind.UNDEFINED:
            return "NULL"
        assert value.text is not None
        return value.text

    def aggregate_number(self, value: _Value) -> tuple[str, bool]:
        if value.kind is _Kind.JSON:
            return self.as_number(value), True
        if value.kind is _Kind.NUMBER:
            return value.sql, True
        return "NULL", True

    def sum_columns(self, v: str, exact: bool, prefix: str) -> list[str]:
        # Integers are summed exactly as high and low 32-bit halves (sum() would raise on
        # int64 overflow); floats with sum().
        integer = f"FILTER (WHERE typeof({v}) = 'integer')"
        real = f"FILTER (WHERE typeof({v}) = 'real')"
        return [
            f"sum({v} >> 32) {integer} AS {prefix}_ihi",
            f"sum({v} & 4294967295) {integer} AS {prefix}_ilo",
            f"sum({v}) {real} AS {prefix}_fsum",
            f"count({v}) {real} AS {prefix}_fn",
        ]

    def extreme_column(self, function: str, v: str, exact: bool, prefix: str) -> str:
        return f"{function}({v}) AS {prefix}_v"

    def fast_compare(self, json_value: _Value, op: BinaryOperator, other: _Value, json_left: bool) -> str | None:
        # json_extract parses once; the type check then runs only on rows that compared true.
        if json_value.doc is None or other.kind not in (_Kind.STRING, _Kind.NUMBER):
            return None
        cls = _CLASS_OF_KIND[other.kind]
        pair = (json_value.item, other.sql) if json_left else (other.sql, json_value.item)
        return f"({pair[0]} {_COMPARISON_SQL[op]} {pair[1]} AND {self.type_equals(json_value, cls)})"

    def fast_in(self, json_value: _Value, cls: _Class, items: list[str]) -> str | None:
        if json_value.doc is None or cls not in (_Class.STRING, _Class.NUMBER):
            return None
        return f"({json_value.item} IN ({', '.join(items)}) AND {self.type_equals(json_value, cls)})"


class _Postgres(_Backend):
    dialect = Dialect.POSTGRESQL
    true = "TRUE"
    false = "FALSE"
    type_names = {
        _Class.STRING: ("string",),
        _Class.NUMBER: ("number",),
        _Class.BOOL: ("boolean",),
        _Class.NULL: ("null",),
        _Class.ARRAY: ("array",),
        _Class.OBJECT: ("object",),
    }
    _SQL_TYPES: Final = {
        _Kind.STRING: "text",
        _Kind.NUMBER: "double precision",
        _Kind.BOOL: "boolean",
        _Kind.JSON: "jsonb",
    }

    def null(self, kind: _Kind) -> str:
        sql_type = self._SQL_TYPES.get(kind)
        return f"CAST(NULL AS {sql_type})" if sql_type else "NULL"

    def string(self, ctx: _Context, value: str) -> str:
        return f"CAST({ctx.bind(value)} AS text)"

    def number(self, ctx: _Context, value: int | float) -> str:
        # asyncpg binds a Python int as int4; every number here is double precision.
        return f"CAST({ctx.bind(float(value))} AS double precision)"

    def boolean(self, ctx: _Context, value: bool) -> str:
        return f"CAST({ctx.bind(value)} AS boolean)"

    @staticmethod
    def _json(expr: str) -> _Value:
        return _Value(_Kind.JSON, type_sql=f"jsonb_typeof({expr})", item=expr, text=f"CAST({expr} AS text)")

    def field(self, ctx: _Context, column: str, path: tuple[str, ...]) -> _Value:
        if not path:
            return self._json(column)
        keys = "".join(f" -> CAST({ctx.bind(segment)} AS text)" for segment in path)
        return self._json(f"({column}{keys})")

    def section(self, ctx: _Context, column: str, version_column: str) -> _Value:
        key = ctx.bind("$version")
        return self._json(f"({column} || jsonb_build_object(CAST({key} AS text), {version_column}))")

    def as_string(self, value: _Value) -> str:
        return f"CASE WHEN {value.type_sql} = 'string' THEN ({value.item} #>> '{{}}') END"

    def as_number(self, value: _Value) -> str:
        return f"CASE WHEN {value.type_sql} = 'number' THEN CAST({value.item} AS double precision) END"

    def as_bool(self, value: _Value) -> str:
        return f"CASE WHEN {value.type_sql} = 'boolean' THEN CAST({value.item} AS boolean) END"

    def compare(self, cls: _Class, left: str, op: BinaryOperator, right: str) -> str:
        if cls is _Class.STRING:
            return f'({left} COLLATE "C" {_COMPARISON_SQL[op]} {right})'
        return f"({left} {_COMPARISON_SQL[op]} {right})"

    def arithmetic(self, op: BinaryOperator, left: str, right: str) -> str:
        function = {
            BinaryOperator.ADD: "fleethub_add",
            BinaryOperator.SUB: "fleethub_sub",
            BinaryOperator.MUL: "fleethub_mul",
            BinaryOperator.DIV: "fleethub_div",
            BinaryOperator.MOD: "fleethub_fmod",
        }[op]
        return f"{function}({left}, {right})"

    def time(self, column: str) -> str:
        return f"(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '0Z')"

    def integer_column(self, column: str) -> _Value:
        return _Value(_Kind.NUMBER, sql=f"CAST({column} AS double precision)", exact=f"CAST({column} AS numeric)")

    def lower(self, text: str) -> str:
        return f"translate({text}, '{_UPPERCASE}', '{_LOWERCASE}')"

    def upper(self, text: str) -> str:
        return f"translate({text}, '{_LOWERCASE}', '{_UPPERCASE}')"

    def length(self, text: str) -> str:
        return f"CAST(length({text}) AS double precision)"

    def starts_with(self, text: str, prefix: str) -> str:
        return f"(left({text}, length({prefix})) = {prefix})"

    def ends_with(self, text: str, suffix: str) -> str:
        return f"(right({text}, length({suffix})) = {suffix})"

    def contains(self, text: str, part: str) -> str:
        return f"(strpos({text}, {part}) > 0)"

    def elements(self, ctx: _Context, array: _Value) -> tuple[str, _Value]:
        alias = ctx.alias("el")
        return f"jsonb_array_elements({array.item}) AS {alias}(v)", self._json(f"{alias}.v")

    def contains_item(self, ctx: _Context, array: _Value, cls: _Class, item: str) -> str:
        # jsonb containment compares as the query language does here: strings exactly,
        # numbers numerically (to_jsonb prints a double in its shortest exact form), and a
        # primitive only with a primitive element. to_jsonb(NULL) makes the whole test NULL.
        return f"({array.item} @> (CAST('[]' AS jsonb) || to_jsonb({item})))"

    def key_text(self, value: _Value) -> str:
        kind = value.kind
        if kind in (_Kind.STRING, _Kind.BOOL):
            return f"CAST(to_jsonb({value.sql}) AS text)"
        if kind is _Kind.NUMBER:
            return f"CAST(to_jsonb({value.exact or value.sql}) AS text)"
        if kind is _Kind.NULL:
            return "CAST('null' AS text)"
        if kind is _Kind.UNDEFINED:
            return "CAST(NULL AS text)"
        assert value.text is not None
        return value.text

    def aggregate_number(self, value: _Value) -> tuple[str, bool]:
        if value.kind is _Kind.JSON:
            return f"CASE WHEN {value.type_sql} = 'number' THEN CAST({value.item} AS numeric) END", True
        if value.kind is _Kind.NUMBER:
            if value.exact is not None:
                return value.exact, True
            return value.sql, False
        return "CAST(NULL AS numeric)", True

    def sum_columns(self, v: str, exact: bool, prefix: str) -> list[str]:
        if exact:
            # numeric keeps the stored spelling: scale 0 is an integer.
            return [
                f"0 AS {prefix}_ihi",
                f"sum({v}) FILTER (WHERE scale({v}) = 0) AS {prefix}_ilo",
                f"sum({v}) FILTER (WHERE scale({v}) > 0) AS {prefix}_fsum",
                f"count({v}) FILTER (WHERE scale({v}) > 0) AS {prefix}_fn",
            ]
        # A computed double: summed as the exact decimal of its shortest text, so that the sum
        # cannot overflow (an error in PostgreSQL; the decoder makes it undefined).
        exact_sum = f"sum(CAST(CAST({v} AS text) AS numeric))"
        return [
            f"0 AS {prefix}_ihi",
            f"0 AS {prefix}_ilo",
            f"{exact_sum} AS {prefix}_fsum",
            f"count({v}) AS {prefix}_fn",
        ]

    def extreme_column(self, function: str, v: str, exact: bool, prefix: str) -> str:
        if exact:
            return f"CAST({function}({v}) AS text) AS {prefix}_v"
        return f"CAST(to_jsonb({function}({v})) AS text) AS {prefix}_v"

    def limit(self, ctx: _Context, limit: int) -> str:
        return f"CAST({ctx.bind(limit)} AS bigint)"


_BACKENDS: Final[dict[Dialect, _Backend]] = {Dialect.SQLITE: _Sqlite(), Dialect.POSTGRESQL: _Postgres()}


# -- expressions -------------------------------------------------------------------------

_IDENTITY_COLUMNS: Final = {
    Source.DEVICES: {
        FieldRoot.DEVICE_ID: "device_id",
        FieldRoot.STATUS: "status",
        FieldRoot.CONNECTION_STATE: "connection_state",
        FieldRoot.ETAG: "etag",
    },
    Source.JOBS: {
        FieldRoot.DEVICE_ID: "device_id",
        FieldRoot.JOB_ID: "job_id",
        FieldRoot.JOB_TYPE: "job_type",
        FieldRoot.STATUS: "status",
    },
}
_TIME_COLUMNS: Final = {
    Source.DEVICES: {FieldRoot.LAST_ACTIVITY_TIME: "last_activity_time"},
    Source.JOBS: {
        FieldRoot.START_TIME: "start_time",
        FieldRoot.END_TIME: "end_time",
        FieldRoot.CREATED_TIME: "created_time",
        FieldRoot.LAST_UPDATED_TIME: "last_updated_time",
    },
}
_SECTIONS: Final = {FieldRoot.DESIRED: "desired", FieldRoot.REPORTED: "reported"}


def _check_segments(field: Field) -> None:
    for segment in field.path:
        if '"' in segment or "\\" in segment:
            raise QuerySyntaxError(
                f"unsupported character in property name {segment!r}: names with '\"' or '\\' cannot be queried",
                position=field.position,
            )


def _field(ctx: _Context, field: Field) -> _Value:
    backend = ctx.backend
    _check_segments(field)
    if any(segment == "" for segment in field.path):
        return _UNDEFINED  # no twin has an empty property name
    if ctx.source is Source.DEVICES and field.root in (FieldRoot.TAGS, *_SECTIONS):
        if field.root is FieldRoot.TAGS:
            return backend.field(ctx, ctx.column("tags"), field.path)
        section = _SECTIONS[field.root]
        if not field.path:
            return backend.section(ctx, ctx.column(section), ctx.column(f"{section}_version"))
        if field.path[0] == "$metadata":
            return _UNDEFINED
        if field.path[0] == "$version":
            if len(field.path) > 1:
                return _UNDEFINED
            return backend.integer_column(ctx.column(f"{section}_version"))
        return backend.field(ctx, ctx.column(section), field.path)
    if field.path:
        return _UNDEFINED  # identity fields are strings and numbers: nothing below them
    column = _IDENTITY_COLUMNS[ctx.source].get(field.root)
    if column is not None:
        return _Value(_Kind.STRING, sql=ctx.column(column))
    column = _TIME_COLUMNS[ctx.source].get(field.root)
    if column is not None:
        return _Value(_Kind.STRING, sql=backend.time(ctx.column(column)))
    if ctx.source is Source.DEVICES and field.root is FieldRoot.VERSION:
        return backend.integer_column(ctx.column("twin_version"))
    return _UNDEFINED  # a field the source does not have


def _literal(ctx: _Context, value: Scalar) -> _Value:
    backend = ctx.backend
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _Value(_Kind.BOOL, sql=backend.boolean(ctx, value))
    if isinstance(value, str):
        return _Value(_Kind.STRING, sql=backend.string(ctx, value))
    return _Value(_Kind.NUMBER, sql=backend.number(ctx, value))


def _as(ctx: _Context, value: _Value, cls: _Class) -> str:
    """``value`` as an SQL value of ``cls`` (string, number or boolean); NULL when it is not one."""
    backend = ctx.backend
    if value.kind is _Kind.JSON:
        if cls is _Class.STRING:
            return backend.as_string(value)
        if cls is _Class.NUMBER:
            return backend.as_number(value)
        return backend.as_bool(value)
    if value.kind in _CLASS_OF_KIND and _CLASS_OF_KIND[value.kind] is cls:
        return value.sql
    return backend.null({_Class.STRING: _Kind.STRING, _Class.NUMBER: _Kind.NUMBER}.get(cls, _Kind.BOOL))


def _truth_value(ctx: _Context, value: _Value) -> str:
    """A boolean operand: the value when it is a boolean, else NULL (unknown)."""
    return _as(ctx, value, _Class.BOOL)


def _bool(sql: str) -> _Value:
    return _Value(_Kind.BOOL, sql=sql)


def _is_null(ctx: _Context, value: _Value) -> str | None:
    """SQL for 'value is null' (NULL when undefined); None when it is the constant null."""
    if value.kind is _Kind.NULL:
        return None
    return ctx.backend.type_equals(value, _Class.NULL)


def _compare(ctx: _Context, op: BinaryOperator, left: _Value, right: _Value) -> _Value:
    backend = ctx.backend
    shared = [cls for cls in _PRIMITIVES if cls in left.classes() and cls in right.classes()]
    parts: list[str] = []
    for cls in shared:
        if cls is _Class.NULL:
            outcome = backend.true if _NULL_COMPARISON[op] else backend.false
            tests = [test for test in (_is_null(ctx, left), _is_null(ctx, right)) if test is not None]
            parts.append(f"CASE WHEN {' AND '.join(tests)} THEN {outcome} END" if tests else outcome)
        else:
            parts.append(backend.compare(cls, _as(ctx, left, cls), op, _as(ctx, right, cls)))
    if not parts:
        return _bool(backend.null(_Kind.BOOL))
    return _bool(parts[0] if len(parts) == 1 else f"COALESCE({', '.join(parts)})")


def _arithmetic(ctx: _Context, op: BinaryOperator, left: _Value, right: _Value) -> _Value:
    backend = ctx.backend
    if _Class.NUMBER not in left.classes() or _Class.NUMBER not in right.classes():
        return _Value(_Kind.NUMBER, sql=backend.null(_Kind.NUMBER))
    return _Value(
        _Kind.NUMBER, sql=backend.arithmetic(op, _as(ctx, left, _Class.NUMBER), _as(ctx, right, _Class.NUMBER))
    )


def _binary(ctx: _Context, expr: BinaryOp) -> _Value:
    left, right = _compile(ctx, expr.left), _compile(ctx, expr.right)
    if expr.op.is_logical:
        word = "AND" if expr.op is BinaryOperator.AND else "OR"
        return _bool(f"({_truth_value(ctx, left)} {word} {_truth_value(ctx, right)})")
    if expr.op.is_comparison:
        return _compare(ctx, expr.op, left, right)
    return _arithmetic(ctx, expr.op, left, right)


def _unary(ctx: _Context, expr: UnaryOp) -> _Value:
    operand = _compile(ctx, expr.operand)
    if expr.op is UnaryOperator.NOT:
        return _bool(f"(NOT {_truth_value(ctx, operand)})")
    if _Class.NUMBER not in operand.classes():
        return _Value(_Kind.NUMBER, sql=ctx.backend.null(_Kind.NUMBER))
    return _Value(_Kind.NUMBER, sql=f"(-({_as(ctx, operand, _Class.NUMBER)}))")


def _group_items(ctx: _Context, items: Sequence[Literal]) -> tuple[dict[_Class, list[str]], bool]:
    """IN-list constants as parameters by class, and whether null is among them."""
    by_class: dict[_Class, list[str]] = {}
    has_null = False
    for item in items:
        value = _literal(ctx, item.value)
        if value.kind is _Kind.NULL:
            has_null = True
        else:
            by_class.setdefault(_CLASS_OF_KIND[value.kind], []).append(value.sql)
    return by_class, has_null


def _in_list(ctx: _Context, expr: InList) -> _Value:
    backend = ctx.backend
    operand = _compile(ctx, expr.operand)
    by_class, has_null = _group_items(ctx, expr.items)
    if operand.kind is _Kind.UNDEFINED:
        return _bool(backend.null(_Kind.BOOL))
    if operand.kind is _Kind.NULL:
        found = backend.true if has_null else backend.false
    elif operand.kind is _Kind.JSON:
        parts = [
            f"COALESCE({_as(ctx, operand, cls)} IN ({', '.join(sql)}), {backend.false})"
            for cls, sql in by_class.items()
        ]
        if has_null:
            parts.append(backend.type_is(operand, (_Class.NULL,)))
        matched = " OR ".join(parts) if parts else backend.false
        found = f"CASE WHEN {backend.type_is(operand, _PRIMITIVES)} THEN ({matched}) END"
    else:
        cls = _CLASS_OF_KIND[operand.kind]
        if cls in by_class:
            found = f"({operand.sql} IN ({', '.join(by_class[cls])}))"
        else:
            found = f"CASE WHEN {operand.sql} IS NOT NULL THEN {backend.false} END"
    return _bool(f"(NOT {found})" if expr.negated else found)


_TYPE_TESTS: Final = {
    FunctionName.IS_NULL: (_Class.NULL,),
    FunctionName.IS_STRING: (_Class.STRING,),
    FunctionName.IS_NUMBER: (_Class.NUMBER,),
    FunctionName.IS_BOOL: (_Class.BOOL,),
    FunctionName.IS_OBJECT: (_Class.OBJECT,),
    FunctionName.IS_ARRAY: (_Class.ARRAY,),
}
_ARITY: Final = {
    **dict.fromkeys((FunctionName.IS_DEFINED, *_TYPE_TESTS, FunctionName.LOWER, FunctionName.UPPER), 1),
    FunctionName.LENGTH: 1,
    FunctionName.STARTSWITH: 2,
    FunctionName.ENDSWITH: 2,
    FunctionName.CONTAINS: 2,
    FunctionName.ARRAY_CONTAINS: 2,
}


def _type_test(ctx: _Context, value: _Value, classes: tuple[_Class, ...] | None) -> _Value:
    """IS_DEFINED (``classes`` None) and IS_<type>: true or false, never NULL."""
    backend = ctx.backend
    if value.kind is _Kind.JSON:
        if classes is None:
            return _bool(f"({value.type_sql} IS NOT NULL)")
        return _bool(backend.type_is(value, classes))
    if value.kind is _Kind.UNDEFINED:
        return _bool(backend.false)
    if value.kind is _Kind.NULL:
        return _bool(backend.true if classes is None or _Class.NULL in classes else backend.false)
    if classes is None or _CLASS_OF_KIND[value.kind] in classes:
        return _bool(f"({value.sql} IS NOT NULL)")
    return _bool(backend.false)


def _array_contains(ctx: _Context, array: _Value, item: _Value) -> _Value:
    backend = ctx.backend
    if array.kind is not _Kind.JSON or item.kind is _Kind.UNDEFINED:
        return _bool(backend.null(_Kind.BOOL))
    is_array = backend.type_equals(array, _Class.ARRAY)
    if item.kind is _Kind.NULL:
        source, element = backend.elements(ctx, array)
        found = f"EXISTS (SELECT 1 FROM {source} WHERE {backend.type_is(element, (_Class.NULL,))})"
    elif item.kind is _Kind.JSON:
        source, element = backend.elements(ctx, array)
        equal = _compare(ctx, BinaryOperator.EQ, element, item).sql
        found = f"CASE WHEN {backend.type_is(item, _PRIMITIVES)} THEN EXISTS (SELECT 1 FROM {source} WHERE {equal}) END"
    else:
        found = backend.contains_item(ctx, array, _CLASS_OF_KIND[item.kind], item.sql)
    return _bool(f"CASE WHEN {is_array} THEN {found} END")


def _call(ctx: _Context, call: Call) -> _Value:
    backend = ctx.backend
    arity = _ARITY[call.function]
    if len(call.args) != arity:
        raise QuerySyntaxError(
            f"{call.function.value} takes {arity} argument{'s' if arity > 1 else ''}, not {len(call.args)}",
            position=call.position,
        )
    args = [_compile(ctx, arg) for arg in call.args]
    function = call.function
    if function is FunctionName.IS_DEFINED:
        return _type_test(ctx, args[0], None)
    if function in _TYPE_TESTS:
        return _type_test(ctx, args[0], _TYPE_TESTS[function])
    if function is FunctionName.ARRAY_CONTAINS:
        return _array_contains(ctx, args[0], args[1])
    texts = [_as(ctx, arg, _Class.STRING) for arg in args]
    if function is FunctionName.LOWER:
        return _Value(_Kind.STRING, sql=backend.lower(texts[0]))
    if function is FunctionName.UPPER:
        return _Value(_Kind.STRING, sql=backend.upper(texts[0]))
    if function is FunctionName.LENGTH:
        return _Value(_Kind.NUMBER, sql=backend.length(texts[0]))
    tests: dict[FunctionName, Callable[[str, str], str]] = {
        FunctionName.STARTSWITH: backend.starts_with,
        FunctionName.ENDSWITH: backend.ends_with,
        FunctionName.CONTAINS: backend.contains,
    }
    return _bool(tests[function](texts[0], texts[1]))


def _compile(ctx: _Context, expr: Expr) -> _Value:
    if isinstance(expr, Field):
        return _field(ctx, expr)
    if isinstance(expr, Literal):
        return _literal(ctx, expr.value)
    if isinstance(expr, UnaryOp):
        return _unary(ctx, expr)
    if isinstance(expr, BinaryOp):
        return _binary(ctx, expr)
    if isinstance(expr, InList):
        return _in_list(ctx, expr)
    if isinstance(expr, Call):
        return _call(ctx, expr)
    assert_never(expr)


def _truth(ctx: _Context, expr: Expr) -> str:
    """SQL that is true exactly when ``expr`` is true; false and NULL are not told apart, which
    lets comparisons of a property with a constant take a cheaper form (WHERE only)."""
    backend = ctx.backend
    if isinstance(expr, BinaryOp) and expr.op.is_logical:
        word = "AND" if expr.op is BinaryOperator.AND else "OR"
        return f"({_truth(ctx, expr.left)} {word} {_truth(ctx, expr.right)})"
    if isinstance(expr, BinaryOp) and expr.op.is_comparison:
        left, right = _compile(ctx, expr.left), _compile(ctx, expr.right)
        fast = None
        if left.kind is _Kind.JSON:
            fast = backend.fast_compare(left, expr.op, right, json_left=True)
        elif right.kind is _Kind.JSON:
            fast = backend.fast_compare(right, expr.op, left, json_left=False)
        return fast or _compare(ctx, expr.op, left, right).sql
    if isinstance(expr, InList) and not expr.negated:
        operand = _compile(ctx, expr.operand)
        by_class, has_null = _group_items(ctx, expr.items)
        if operand.kind is _Kind.JSON and len(by_class) == 1 and not has_null:
            ((cls, items),) = by_class.items()
            fast = backend.fast_in(operand, cls, items)
            if fast is not None:
                return fast
    return _truth_value(ctx, _compile(ctx, expr))


def _string_equalities(expr: Expr) -> tuple[Field, list[str]] | None:
    """``tags.<path> = 'constant'`` or ``tags.<path> IN ['a', 'b']``: the field and the strings."""
    if isinstance(expr, BinaryOp) and expr.op is BinaryOperator.EQ:
        for field, other in ((expr.left, expr.right), (expr.right, expr.left)):
            if isinstance(field, Field) and isinstance(other, Literal) and isinstance(other.value, str):
                return field, [other.value]
    if isinstance(expr, InList) and not expr.negated and isinstance(expr.operand, Field):
        values = [item.value for item in expr.items]
        strings = [value for value in values if isinstance(value, str)]
        if len(strings) == len(values):
            return expr.operand, strings
    return None


def _necessary(ctx: _Context, expr: Expr) -> list[str]:
    """Conditions implied by ``expr`` being true that an index can answer; ANDed to the WHERE,
    they change nothing but the plan. ``tags.<path> = 'v'`` (or IN a list of strings) implies
    that tags contain that string: PostgreSQL checks jsonb containment (the GIN index), SQLite
    looks the string up in TAG_VALUES_TABLE."""
    if ctx.source is not Source.DEVICES:
        return []
    if isinstance(expr, BinaryOp) and expr.op is BinaryOperator.AND:
        return _necessary(ctx, expr.left) + _necessary(ctx, expr.right)
    if isinstance(expr, BinaryOp) and expr.op is BinaryOperator.OR:
        left, right = _necessary(ctx, expr.left), _necessary(ctx, expr.right)
        if left and right:
            return [f"({' AND '.join(left)} OR {' AND '.join(right)})"]
        return []
    found = _string_equalities(expr)
    if found is None:
        return []
    field, strings = found
    if field.root is not FieldRoot.TAGS or not field.path or "" in field.path:
        return []
    if ctx.backend.dialect is Dialect.SQLITE:
        values = ", ".join(ctx.bind(value) for value in strings)
        lookup = f"SELECT device_id FROM {TAG_VALUES_TABLE.name} WHERE value IN ({values})"
        return [f"{ctx.column('device_id')} IN ({lookup})"]
    tests = []
    for value in strings:
        document: object = value
        for segment in reversed(field.path):
            document = {segment: document}
        tests.append(f"{ctx.column('tags')} @> CAST({ctx.bind(json.dumps(document))} AS jsonb)")
    return [tests[0] if len(tests) == 1 else f"({' OR '.join(tests)})"]


def _where(ctx: _Context, condition: Expr | None) -> list[str]:
    if condition is None:
        return []
    return [_truth(ctx, condition), *_necessary(ctx, condition)]


# -- public API ---------------------------------------------------------------------------


def compile_condition(expr: Expr, dialect: Dialect, source: Source = Source.DEVICES) -> SqlFragment:
    """``expr`` as an SQL expression over the source table (``TableSchema.name``): true, false,
    or NULL where the semantics say undefined. A non-boolean expression is its value (JSON
    values as their JSON text), which is what tests compare against the evaluator."""
    ctx = _Context(_BACKENDS[dialect], source)
    value = _compile(ctx, expr)
    if value.kind is _Kind.JSON:
        assert value.text is not None
        text = value.text
    elif value.kind is _Kind.NULL:
        text = "'null'"
    elif value.kind is _Kind.UNDEFINED:
        text = "NULL"
    else:
        text = value.sql
    return ctx.fragment(text)


def compile_rows(
    query: Query, dialect: Dialect, *, after: tuple[str, ...] | None, limit: int, keys_only: bool = False
) -> SqlFragment:
    """SELECT the source's ``TableSchema.columns`` (only its ``key`` columns with
    ``keys_only``) for rows where ``query.where`` is true, with a key greater than ``after``
    (device_id, or (device_id, job_id) for devices.jobs), in key order, at most ``limit``
    rows. Projections and TOP are the caller's: pass
    ``limit = min(page size, rows TOP still allows)``."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    schema = table_of(query.source)
    ctx = _Context(_BACKENDS[dialect], query.source)
    conditions = _where(ctx, query.where)
    key = [ctx.column(name) for name in schema.key]
    if after is not None:
        if len(after) != len(schema.key):
            raise ValueError(f"after must have {len(schema.key)} parts for {query.source.value}, got {len(after)}")
        bound = [ctx.backend.string(ctx, part) for part in after]
        if len(key) == 1:
            conditions.append(f"{key[0]} > {bound[0]}")
        else:
            conditions.append(f"({', '.join(key)}) > ({', '.join(bound)})")
    columns = ", ".join(ctx.column(name) for name in (schema.key if keys_only else schema.columns))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    text = f"SELECT {columns} FROM {schema.name}{where} ORDER BY {', '.join(key)} LIMIT {ctx.backend.limit(ctx, limit)}"
    return ctx.fragment(text)


@dataclass(frozen=True, slots=True)
class AggregateOutput:
    """One projection of an aggregate (or grouped) query, as the decoder assembles it.

    ``group`` is the index of the GROUP BY expression whose value it shows (column
    ``k<group>``); otherwise ``function`` is the aggregate, read from columns ``<column>_*``
    (see compile_aggregate); ``counts_defined`` marks ``COUNT(x)``."""

    key: str
    group: int | None = None
    function: AggregateFunction | None = None
    column: str = ""
    counts_defined: bool = False


def aggregate_outputs(query: Query) -> tuple[AggregateOutput, ...]:
    """The projections of a query with aggregates or GROUP BY, in select order; raises
    QuerySyntaxError for what the evaluator refuses (SELECT * grouped, a plain projection
    that is not a GROUP BY expression, an aggregate without its argument)."""
    if isinstance(query.select, Star):
        raise QuerySyntaxError("SELECT * cannot be grouped; select the GROUP BY expressions or aggregates")
    groups = [without_positions(expr) for expr in query.group_by]
    outputs: list[AggregateOutput] = []
    for index, projection in enumerate(query.select):
        key = projection.key(index)
        if isinstance(projection.expr, AggregateCall):
            call = projection.expr
            if call.arg is None and call.function is not AggregateFunction.COUNT:
                raise QuerySyntaxError(f"{call.function.value} needs an argument", position=call.position)
            counts_defined = call.function is AggregateFunction.COUNT and call.arg is not None
            outputs.append(
                AggregateOutput(key, function=call.function, column=f"a{index}", counts_defined=counts_defined)
            )
            continue
        stripped = without_positions(projection.expr)
        if stripped not in groups:
            raise QuerySyntaxError(
                "a selected expression must be an aggregate or one of the GROUP BY expressions",
                position=projection.expr.position,
            )
        outputs.append(AggregateOutput(key, group=groups.index(stripped)))
    return tuple(outputs)


def compile_aggregate(query: Query, dialect: Dialect) -> SqlFragment:
    """GROUP BY and aggregates over the rows ``query.where`` selects, entirely in SQL.

    One row per SQL group (exactly one without GROUP BY, even over no rows), columns:

    - ``first_key``: the smallest row key in the group (device_id; ``device_id || ' ' ||
      job_id`` on devices.jobs), so the decoder can show the key values of the group's first
      row when it merges groups;
    - ``n``: the row count (``COUNT()``);
    - ``k0``, ``k1``...: each GROUP BY expression's value as JSON text, NULL when undefined
      (SQLite gives number-typed expressions as plain numbers instead);
    - for aggregate projection *i* (prefix ``a<i>``, see aggregate_outputs):
      COUNT(x): ``a<i>_count``; SUM / AVG: ``a<i>_n`` (numbers seen), ``a<i>_ihi`` and
      ``a<i>_ilo`` (integers' exact sum is ihi * 2**32 + ilo; either may be NULL for none),
      ``a<i>_fsum`` and ``a<i>_fn`` (sum and count of non-integers); MIN / MAX: ``a<i>_n``
      and ``a<i>_v`` (the number as stored: a plain SQLite number, or JSON number text).

    The decoder merges groups whose keys the evaluator deems equal, orders the groups and
    applies TOP (hub.storage.query)."""
    outputs = aggregate_outputs(query)
    schema = table_of(query.source)
    backend = _BACKENDS[dialect]
    ctx = _Context(backend, query.source)
    if query.source is Source.JOBS:
        first_key = f"({ctx.column('device_id')} || ' ' || {ctx.column('job_id')})"
    else:
        first_key = ctx.column("device_id")
    inner = [f"{first_key} AS r_key"]
    for index, expr in enumerate(query.group_by):
        inner.append(f"{backend.key_text(_compile(ctx, expr))} AS k{index}")
    outer = ["min(r.r_key) AS first_key", "count(*) AS n"]
    outer.extend(f"r.k{index} AS k{index}" for index in range(len(query.group_by)))
    assert isinstance(query.select, tuple)  # aggregate_outputs refuses SELECT *
    for index, (projection, output) in enumerate(zip(query.select, outputs, strict=True)):
        if output.function is None or not isinstance(projection.expr, AggregateCall):
            continue
        arg = projection.expr.arg
        if arg is None:
            continue  # COUNT() is the row count, n
        value = _compile(ctx, arg)
        v = f"r.v{index}"
        if output.counts_defined:
            defined = _type_test(ctx, value, None).sql
            inner.append(f"CASE WHEN {defined} THEN 1 END AS v{index}")
            outer.append(f"count({v}) AS {output.column}_count")
            continue
        number, exact = backend.aggregate_number(value)
        inner.append(f"{number} AS v{index}")
        outer.append(f"count({v}) AS {output.column}_n")
        if output.function in (AggregateFunction.SUM, AggregateFunction.AVG):
            outer.extend(backend.sum_columns(v, exact, output.column))
        else:
            outer.append(backend.extreme_column(output.function.value.lower(), v, exact, output.column))
    conditions = _where(ctx, query.where)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    group_by = ""
    if query.group_by:
        group_by = " GROUP BY " + ", ".join(f"r.k{index}" for index in range(len(query.group_by)))
    text = (
        f"WITH r AS MATERIALIZED (SELECT {', '.join(inner)} FROM {schema.name}{where})"
        f" SELECT {', '.join(outer)} FROM r{group_by}"
    )
    return ctx.fragment(text)
