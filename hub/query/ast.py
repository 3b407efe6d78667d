"""The typed AST of a twin query, and the semantics every back end must give it.

Grammar (case-insensitive keywords; see hub.query.parser)::

    SELECT [TOP n] (* | projection (, projection)*) FROM (devices | devices.jobs)
        [WHERE condition] [GROUP BY expr (, expr)*]
    projection := expr [AS alias] | COUNT() [AS alias] | (AVG|SUM|MIN|MAX)(expr) [AS alias]

Values and ``undefined``
    A field that is missing from the document is *undefined*. JSON ``null`` is a value, not
    undefined. Every operator and function below returns undefined when an operand is
    undefined or of a type it does not take; back ends represent undefined as SQL NULL and the
    reference evaluator as ``UNDEFINED``.

Comparisons ``= != <> < > <= >=``
    Only between two primitives of the same type (string, number, boolean, null); anything
    else (different types, objects, arrays, undefined) is undefined, so ``!=`` is *not* the
    negation of ``=`` across types. Strings compare exactly and case-sensitively by code
    point; numbers numerically (ints and floats mix); ``false < true``; ``null = null`` is
    true and ``null < null`` is false.

Logic ``AND OR NOT``
    Three-valued with undefined as the unknown value (SQL NULL semantics): ``false AND x`` is
    false, ``true OR x`` is true, ``NOT undefined`` is undefined. An operand that is not a
    boolean is undefined. A WHERE condition selects a row only when it is exactly ``true``.

``x IN [c, ...]`` / ``x NIN [c, ...]``
    True when some constant equals ``x`` by ``=`` above (false when none does); NIN is the
    negation; both undefined when ``x`` is undefined or not a primitive.

Arithmetic ``+ - * / %`` and unary ``-``
    Numbers only (no string concatenation); division or modulo by zero is undefined.
    ``%`` is the remainder with the sign of the dividend (SQL / C semantics, math.fmod).

Functions (names case-insensitive, canonical upper-case here)
    IS_DEFINED(x)                      true iff x is not undefined (never undefined itself)
    IS_NULL, IS_STRING, IS_NUMBER, IS_BOOL, IS_OBJECT, IS_ARRAY (x)
                                       true iff x has that type; false otherwise (also for undefined)
    STARTSWITH(s, p), ENDSWITH(s, p), CONTAINS(s, p)
                                       strings only (substring test, case-sensitive)
    ARRAY_CONTAINS(a, v)               a array, v primitive: some element equals v by ``=``
    LOWER(s), UPPER(s)                 strings only (Unicode simple case mapping as SQL does for
                                       ASCII; back ends agree on ASCII letters, others may differ)
    LENGTH(s)                          strings only: number of characters

Fields
    ``devices``: deviceId, status, connectionState, lastActivityTime, etag, version (identity
    fields, names case-insensitive; times are the ISO-8601 strings the twin document shows),
    ``tags.<path>``, ``properties.desired.<path>``, ``properties.reported.<path>`` (paths are
    case-sensitive; ``$version`` is a valid last segment under desired/reported). A bare
    ``tags`` / ``properties.desired`` / ``properties.reported`` is the whole object.
    ``devices.jobs``: deviceId, jobId, jobType, status, startTimeUtc, endTimeUtc,
    createdDateTimeUtc, lastUpdatedDateTimeUtc, written bare or as ``devices.jobs.x``.

Results
    Rows are ordered by deviceId (then jobId for devices.jobs). ``SELECT *`` yields twins (or
    device job records); projections yield objects keyed by alias, or by the field's last
    segment when there is none (undefined values are left out); aggregates yield one object
    per group with the group-by expressions under their aliases (or last segments) and each
    aggregate under its alias, or ``$1``, ``$2``... by position. COUNT() counts rows;
    AVG/SUM/MIN/MAX consider numbers only and are undefined (left out) when there are none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

__all__ = [
    "AggregateCall",
    "AggregateFunction",
    "ArrayLiteral",
    "BinaryOp",
    "BinaryOperator",
    "Call",
    "Expr",
    "Field",
    "FieldRoot",
    "FunctionName",
    "InList",
    "Literal",
    "Projection",
    "Query",
    "Scalar",
    "Source",
    "Star",
    "UnaryOp",
    "UnaryOperator",
]

Scalar: TypeAlias = str | int | float | bool | None


class Source(StrEnum):
    DEVICES = "devices"
    JOBS = "devices.jobs"


class FieldRoot(StrEnum):
    """What a field path starts from; identity roots are a single canonical name."""

    DEVICE_ID = "deviceId"
    STATUS = "status"
    CONNECTION_STATE = "connectionState"
    LAST_ACTIVITY_TIME = "lastActivityTime"
    ETAG = "etag"
    VERSION = "version"
    TAGS = "tags"
    DESIRED = "properties.desired"
    REPORTED = "properties.reported"
    # devices.jobs
    JOB_ID = "jobId"
    JOB_TYPE = "jobType"
    START_TIME = "startTimeUtc"
    END_TIME = "endTimeUtc"
    CREATED_TIME = "createdDateTimeUtc"
    LAST_UPDATED_TIME = "lastUpdatedDateTimeUtc"


DEVICE_ROOTS = frozenset(
    {
        FieldRoot.DEVICE_ID,
        FieldRoot.STATUS,
        FieldRoot.CONNECTION_STATE,
        FieldRoot.LAST_ACTIVITY_TIME,
        FieldRoot.ETAG,
        FieldRoot.VERSION,
        FieldRoot.TAGS,
        FieldRoot.DESIRED,
        FieldRoot.REPORTED,
    }
)
JOB_ROOTS = frozenset(
    {
        FieldRoot.DEVICE_ID,
        FieldRoot.JOB_ID,
        FieldRoot.JOB_TYPE,
        FieldRoot.STATUS,
        FieldRoot.START_TIME,
        FieldRoot.END_TIME,
        FieldRoot.CREATED_TIME,
        FieldRoot.LAST_UPDATED_TIME,
    }
)
JSON_ROOTS = frozenset({FieldRoot.TAGS, FieldRoot.DESIRED, FieldRoot.REPORTED})


@dataclass(frozen=True, slots=True)
class Field:
    """``root`` plus the (case-sensitive) path below it; ``path`` is empty for identity fields
    and for a whole tags / desired / reported object."""

    root: FieldRoot
    path: tuple[str, ...] = ()
    position: int = 0

    @property
    def name(self) -> str:
        """The default result key: the last segment (``tags.location.region`` -> ``region``)."""
        if self.path:
            return self.path[-1]
        return self.root.value.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Literal:
    value: Scalar
    position: int = 0


@dataclass(frozen=True, slots=True)
class ArrayLiteral:
    """Only as the right side of IN / NIN (and as an ARRAY_CONTAINS / comparison operand is an error)."""

    items: tuple[Literal, ...]
    position: int = 0


class UnaryOperator(StrEnum):
    NOT = "NOT"
    NEG = "-"


@dataclass(frozen=True, slots=True)
class UnaryOp:
    op: UnaryOperator
    operand: Expr
    position: int = 0


class BinaryOperator(StrEnum):
    AND = "AND"
    OR = "OR"
    EQ = "="
    NE = "!="  # `<>` parses to this too
    LT = "<"
    GT = ">"
    LE = "<="
    GE = ">="
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    MOD = "%"

    @property
    def is_comparison(self) -> bool:
        return self in _COMPARISONS

    @property
    def is_logical(self) -> bool:
        return self in (BinaryOperator.AND, BinaryOperator.OR)

    @property
    def is_arithmetic(self) -> bool:
        return not self.is_comparison and not self.is_logical


_COMPARISONS = frozenset(
    {BinaryOperator.EQ, BinaryOperator.NE, BinaryOperator.LT, BinaryOperator.GT, BinaryOperator.LE, BinaryOperator.GE}
)


@dataclass(frozen=True, slots=True)
class BinaryOp:
    op: BinaryOperator
    left: Expr
    right: Expr
    position: int = 0


@dataclass(frozen=True, slots=True)
class InList:
    operand: Expr
    items: tuple[Literal, ...]
    negated: bool = False
    position: int = 0


class FunctionName(StrEnum):
    IS_DEFINED = "IS_DEFINED"
    IS_NULL = "IS_NULL"
    IS_STRING = "IS_STRING"
    IS_NUMBER = "IS_NUMBER"
    IS_BOOL = "IS_BOOL"
    IS_OBJECT = "IS_OBJECT"
    IS_ARRAY = "IS_ARRAY"
    STARTSWITH = "STARTSWITH"
    ENDSWITH = "ENDSWITH"
    CONTAINS = "CONTAINS"
    ARRAY_CONTAINS = "ARRAY_CONTAINS"
    LOWER = "LOWER"
    UPPER = "UPPER"
    LENGTH = "LENGTH"


@dataclass(frozen=True, slots=True)
class Call:
    function: FunctionName
    args: tuple[Expr, ...]
    position: int = 0


Expr: TypeAlias = Field | Literal | UnaryOp | BinaryOp | InList | Call


class AggregateFunction(StrEnum):
    COUNT = "COUNT"
    AVG = "AVG"
    SUM = "SUM"
    MIN = "MIN"
    MAX = "MAX"


@dataclass(frozen=True, slots=True)
class AggregateCall:
    function: AggregateFunction
    arg: Expr | None = None  # None only for COUNT()
    position: int = 0


@dataclass(frozen=True, slots=True)
class Projection:
    expr: Expr | AggregateCall
    alias: str | None = None

    def key(self, index: int) -> str:
        """The result key: the alias, else a field's last segment, else ``$<index+1>``."""
        if self.alias:
            return self.alias
        if isinstance(self.expr, Field):
            return self.expr.name
        return f"${index + 1}"


@dataclass(frozen=True, slots=True)
class Star:
    pass


@dataclass(frozen=True, slots=True)
class Query:
    source: Source
    select: Star | tuple[Projection, ...]
    where: Expr | None = None
    group_by: tuple[Expr, ...] = ()
    top: int | None = None

    @property
    def is_aggregate(self) -> bool:
        return isinstance(self.select, tuple) and any(isinstance(p.expr, AggregateCall) for p in self.select)
