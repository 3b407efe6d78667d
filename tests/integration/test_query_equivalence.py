"""Property tests: random twin sets and random well-typed queries give the same answers through
the SQL compiler on SQLite and on PostgreSQL (the ``store`` fixture runs each test on both)
and through the reference evaluator over the same twins' documents.

Each example loads one twin set into the test's database (replacing the previous one) and
asks many queries of it: matching device ids (through SqlStore.query_twins, paged too),
the three-valued value of each condition per twin (through compile_condition), and grouped
aggregates (through SqlStore.aggregate).

Values come from small alphabets so that queries hit: a handful of property names (one of
them ``0``, which PostgreSQL's ``#>`` would take for an array index), strings with quotes,
backslashes, ``%`` and non-ASCII characters, small integers, floats, booleans, nulls,
nested objects and arrays. Integers stay small: the evaluator computes with exact Python
ints, the databases with 64-bit integers or doubles (see hub.query.sql). Sums of floats are
compared with a tolerance, because the databases do not sum like math.fsum.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from hub.domain.devices import ConnectionState, DeviceStatus, new_device
from hub.domain.json import JsonObject, JsonValue
from hub.domain.twin import PropertySet, Twin, twin_document
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
    Scalar,
    Source,
    UnaryOp,
    UnaryOperator,
)
from hub.query.check import check_condition, check_query
from hub.query.evaluate import UNDEFINED, evaluate, matches, run_query
from hub.query.printer import format_expr, format_query
from hub.query.sql import Dialect, compile_condition
from hub.storage import SqlStore
from hub.storage.mappers import new_device_values, twin_values
from hub.storage.tables import devices_table

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
KEYS = ("a", "b", "é", "0", "k'")
WORDS = ("", "a", "A", "ab", "é", "😀", "it's", 'q"', "\\", "50%", "_", "enabled", "Connected", "d1", "AAAAAAAAAAI=")
TIMES = (T0, T0 + timedelta(microseconds=1), T0 + timedelta(days=400))

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    # The database is the test's own; each example replaces its rows.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- twins -------------------------------------------------------------------------------

_strings = st.one_of(st.sampled_from(WORDS), st.text(alphabet="aAbé😀'\"\\%_ -", max_size=3))
_integers = st.one_of(st.integers(-5, 5), st.integers(-1000, 1000))
_floats = st.one_of(
    st.sampled_from([0.5, -1.5, 2.0, 0.1, -0.0, 1e-9, 3.25, 1e5]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
_scalars: st.SearchStrategy[JsonValue] = st.one_of(st.none(), st.booleans(), _integers, _floats, _strings)
_json: st.SearchStrategy[JsonValue] = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=5,
)
_sections: st.SearchStrategy[JsonObject] = st.dictionaries(st.sampled_from(KEYS), _json, max_size=4)


@st.composite
def twin_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows of the devices table for a few twins (d0, d1...)."""
    rows = []
    for index in range(draw(st.integers(1, 7))):
        device_id = f"d{index}"
        device = new_device(device_id, T0).with_changes(
            status=draw(st.sampled_from(DeviceStatus)),
            connection_state=draw(st.sampled_from(ConnectionState)),
            last_activity_time=draw(st.none() | st.sampled_from(TIMES)),
        )
        twin = Twin(
            device_id,
            tags=draw(_sections),
            desired=PropertySet(draw(_sections), {}, draw(st.integers(1, 3))),
            reported=PropertySet(draw(_sections), {}, draw(st.integers(1, 3))),
            version=draw(st.integers(1, 3)),
            revision=draw(st.integers(1, 3)),
        )
        rows.append({**new_device_values(device), **twin_values(twin)})
    return rows


async def _load(store: SqlStore, rows: list[dict[str, Any]]) -> list[JsonObject]:
    """Replace the devices with ``rows``; the twins' documents as the store gives them back."""
    async with store.engine.begin() as connection:
        await connection.execute(sa.delete(devices_table))
        await connection.execute(devices_table.insert(), rows)
    docs = [twin_document(twin) for twin in await store.query_twins(None, after=None, limit=100)]
    assert [doc["tags"] for doc in docs] == [row["tags"] for row in rows]  # the data survived storage
    return docs


# -- well-typed query ASTs ---------------------------------------------------------------

Kind: TypeAlias = str  # "string", "number", "bool", "null" or "any"
_KINDS = ("string", "number", "bool", "null")
_IDENTITY = (
    FieldRoot.DEVICE_ID,
    FieldRoot.STATUS,
    FieldRoot.CONNECTION_STATE,
    FieldRoot.LAST_ACTIVITY_TIME,
    FieldRoot.ETAG,
    FieldRoot.VERSION,
)
_COMPARISONS = [op for op in BinaryOperator if op.is_comparison]
_ARITHMETIC = [op for op in BinaryOperator if op.is_arithmetic]
_TYPE_TESTS = [
    FunctionName.IS_DEFINED,
    FunctionName.IS_NULL,
    FunctionName.IS_STRING,
    FunctionName.IS_NUMBER,
    FunctionName.IS_BOOL,
    FunctionName.IS_OBJECT,
    FunctionName.IS_ARRAY,
]
_STRING_TESTS = [FunctionName.STARTSWITH, FunctionName.ENDSWITH, FunctionName.CONTAINS]

_json_fields = st.builds(
    Field,
    st.sampled_from([FieldRoot.TAGS, FieldRoot.DESIRED, FieldRoot.REPORTED]),
    st.lists(st.sampled_from(KEYS), max_size=3).map(tuple),
)
fields: st.SearchStrategy[Field] = st.one_of(
    _json_fields,
    _json_fields,
    _json_fields,
    st.sampled_from([Field(FieldRoot.DESIRED, ("$version",)), Field(FieldRoot.REPORTED, ("$version",))]),
    st.sampled_from(_IDENTITY).map(Field),
)
_number_literals = st.one_of(st.sampled_from([0, 1, -1, 2, 5, 0.5, 2.0, -1.5, 1000]), _integers, _floats)
_LITERALS: dict[Kind, st.SearchStrategy[Scalar]] = {
    "string": _strings,
    "number": _number_literals,
    "bool": st.booleans(),
    "null": st.none(),
}


def literals(kind: Kind) -> st.SearchStrategy[Literal]:
    values = _LITERALS[kind] if kind != "any" else st.one_of(*_LITERALS.values())
    return values.map(Literal)


def expressions(kind: Kind, depth: int) -> st.SearchStrategy[Expr]:
    """Expressions of a static type the checker accepts where ``kind`` is expected (a field
    is accepted anywhere: its type is only known per twin)."""
    leaves: list[st.SearchStrategy[Expr]] = [fields, literals(kind)]
    if depth <= 0:
        return st.one_of(*leaves)
    inner: list[st.SearchStrategy[Expr]] = []
    if kind == "string":
        inner.append(
            st.builds(
                lambda f, a: Call(f, (a,)),
                st.sampled_from([FunctionName.LOWER, FunctionName.UPPER]),
                expressions("string", depth - 1),
            )
        )
    elif kind == "number":
        inner.append(st.builds(lambda a: Call(FunctionName.LENGTH, (a,)), expressions("string", depth - 1)))
        inner.append(
            st.builds(
                BinaryOp, st.sampled_from(_ARITHMETIC), expressions("number", depth - 1), expressions("number", 0)
            )
        )
        inner.append(st.builds(lambda a: UnaryOp(UnaryOperator.NEG, a), expressions("number", depth - 1)))
    elif kind == "bool":
        inner.append(conditions(depth - 1))
    return st.one_of(*leaves, *inner)


@st.composite
def conditions(draw: st.DrawFn, depth: int = 3) -> Expr:
    """A condition the type checker accepts."""
    shapes = ["compare", "compare", "in", "type", "string", "array", "field", "literal"]
    if depth > 0:
        shapes += ["and", "or", "not", "and", "or", "not"]
    shape = draw(st.sampled_from(shapes))
    below = max(depth - 1, 0)
    expr: Expr
    if shape in ("and", "or"):
        op = BinaryOperator.AND if shape == "and" else BinaryOperator.OR
        expr = BinaryOp(op, draw(conditions(below)), draw(conditions(below)))
    elif shape == "not":
        expr = UnaryOp(UnaryOperator.NOT, draw(conditions(below)))
    elif shape == "compare":
        kind = draw(st.sampled_from(_KINDS))
        op = draw(st.sampled_from(_COMPARISONS))
        expr = BinaryOp(op, draw(expressions(kind, below)), draw(expressions(kind, min(below, 1))))
    elif shape == "in":
        kind = draw(st.sampled_from(_KINDS))
        operand = draw(expressions(kind, min(below, 1)))
        item_kind = "any" if isinstance(operand, Field) else kind
        items = tuple(draw(st.lists(literals(item_kind), min_size=1, max_size=3)))
        expr = InList(operand, items, negated=draw(st.booleans()))
    elif shape == "type":
        expr = Call(draw(st.sampled_from(_TYPE_TESTS)), (draw(expressions("any", 0)),))
    elif shape == "string":
        function = draw(st.sampled_from(_STRING_TESTS))
        expr = Call(function, (draw(expressions("string", min(below, 1))), draw(expressions("string", 0))))
    elif shape == "array":
        item = draw(expressions(draw(st.sampled_from(_KINDS)), min(below, 1)))
        expr = Call(FunctionName.ARRAY_CONTAINS, (draw(_json_fields), item))
    elif shape == "field":
        expr = draw(fields)
    else:
        expr = Literal(draw(st.booleans()))
    return expr


def _checked(expr: Expr) -> Expr:
    try:
        check_condition(expr)
    except QuerySyntaxError:
        assume(False)
    return expr


_group_exprs = st.one_of(
    fields,
    fields,
    st.builds(lambda f: Call(FunctionName.LENGTH, (f,)), _json_fields),
    st.builds(lambda f: BinaryOp(BinaryOperator.MUL, f, Literal(2)), _json_fields),
)
_aggregates = st.one_of(
    st.just(AggregateCall(AggregateFunction.COUNT)),
    st.builds(
        AggregateCall,
        st.sampled_from([AggregateFunction.SUM, AggregateFunction.AVG, AggregateFunction.MIN, AggregateFunction.MAX]),
        expressions("number", 1),
    ),
)


@st.composite
def aggregate_queries(draw: st.DrawFn) -> Query:
    groups = tuple(draw(st.lists(_group_exprs, max_size=2, unique=True)))
    aliases = st.none() | st.sampled_from(["x", "y", "n"])
    projections = [Projection(expr, draw(aliases)) for expr in groups if draw(st.booleans())]
    projections += [Projection(call, draw(aliases)) for call in draw(st.lists(_aggregates, min_size=1, max_size=3))]
    projections = draw(st.permutations(projections))
    where = draw(st.none() | conditions(2))
    top = draw(st.none() | st.integers(1, 3))
    query = Query(Source.DEVICES, tuple(projections), where=where, group_by=groups, top=top)
    try:
        check_query(query)
    except QuerySyntaxError:
        assume(False)
    return query


# -- comparing ---------------------------------------------------------------------------


def _same(got: object, expected: object) -> bool:
    """Equal, except that floats (sums and averages) may differ in their last bits."""
    if isinstance(got, float) or isinstance(expected, float):
        if isinstance(got, bool) or isinstance(expected, bool):
            return got == expected
        if not isinstance(got, int | float) or not isinstance(expected, int | float):
            return False
        return math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-6)
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_same(got[key], expected[key]) for key in got)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(_same(a, b) for a, b in zip(got, expected, strict=True))
    return got == expected and type(got) is type(expected)


async def _ids(store: SqlStore, condition: Expr | None, *, page: int = 100) -> list[str]:
    ids: list[str] = []
    after: str | None = None
    while True:
        twins = await store.query_twins(condition, after=after, limit=page)
        ids.extend(twin.device_id for twin in twins)
        if len(twins) < page:
            return ids
        after = twins[-1].device_id


async def _condition_values(store: SqlStore, condition: Expr) -> list[object]:
    """The condition's SQL value on each twin, in device_id order."""
    fragment = compile_condition(condition, Dialect(store.engine.dialect.name))
    statement = sa.text(f"SELECT {fragment.text} AS v FROM devices ORDER BY devices.device_id")
    async with store.engine.connect() as connection:
        return list((await connection.execute(statement.bindparams(**fragment.params))).scalars())


def _three_valued(value: object) -> bool | None:
    if value is UNDEFINED:
        return None
    assert isinstance(value, bool)
    return value


# -- the properties ----------------------------------------------------------------------


@SETTINGS
@given(rows=twin_rows(), data=st.data())
async def test_conditions_agree_with_the_evaluator(
    store: SqlStore, rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    docs = await _load(store, rows)
    for index in range(8):
        condition = _checked(data.draw(conditions(), label=f"condition {index}"))
        note(f"condition {index}: {format_expr(condition)}")
        expected = [str(doc["deviceId"]) for doc in docs if matches(condition, doc)]
        assert await _ids(store, condition) == expected
        if index == 0:
            assert await _ids(store, condition, page=2) == expected
        if not isinstance(condition, Field):  # a bare field is its value, not a boolean
            reference = [_three_valued(evaluate(condition, doc)) for doc in docs]
            got = [None if value is None else bool(value) for value in await _condition_values(store, condition)]
            assert got == reference


@SETTINGS
@given(rows=twin_rows(), data=st.data())
async def test_aggregates_agree_with_the_evaluator(
    store: SqlStore, rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    docs = await _load(store, rows)
    for index in range(4):
        query = data.draw(aggregate_queries(), label=f"query {index}")
        note(f"query {index}: {format_query(query)}")
        got = await store.aggregate(query)
        expected = run_query(query, docs)
        assert _same(got, expected), f"store {got}\nevaluator {expected}"


def test_strategies_build_what_the_checker_accepts() -> None:
    accepted: list[bool] = []

    @settings(max_examples=200, deadline=None)
    @given(conditions())
    def probe(condition: Expr) -> None:
        try:
            check_condition(condition)
        except QuerySyntaxError:
            accepted.append(False)
        else:
            accepted.append(True)

    probe()
    # Nearly every generated condition is well-typed, so assume() discards little.
    assert sum(accepted) >= 0.9 * len(accepted)
