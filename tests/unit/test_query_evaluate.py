"""The reference evaluator: every operator and function, undefined, type traps, results and groups."""

from __future__ import annotations

import copy
import math
import pickle
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain.devices import ConnectionState
from hub.domain.jobs import DeviceJob, DeviceJobStatus, JobType, device_job_document
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
    Star,
    UnaryOp,
    UnaryOperator,
)
from hub.query.evaluate import UNDEFINED, Undefined, Value, evaluate, matches, project, resolve, run_query

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
Op = BinaryOperator
Fn = FunctionName


# -- AST helpers -------------------------------------------------------------------------


def tag(*path: str) -> Field:
    return Field(FieldRoot.TAGS, path)


def rep(*path: str) -> Field:
    return Field(FieldRoot.REPORTED, path)


def lit(value: Scalar) -> Literal:
    return Literal(value)


def expr_of(value: Value | Expr) -> Expr:
    """A literal for a scalar; a field that is missing for UNDEFINED; objects and arrays via tags."""
    if isinstance(value, Field | Literal | UnaryOp | BinaryOp | InList | Call):
        return value
    if value is UNDEFINED:
        return tag("missing")
    if isinstance(value, dict | list):
        raise TypeError("put objects and arrays in a document and use a field")
    return Literal(value)


def binary(op: BinaryOperator, left: Value | Expr, right: Value | Expr) -> BinaryOp:
    return BinaryOp(op, expr_of(left), expr_of(right))


def call(function: FunctionName, *args: Value | Expr) -> Call:
    return Call(function, tuple(expr_of(a) for a in args))


def not_(operand: Value | Expr) -> UnaryOp:
    return UnaryOp(UnaryOperator.NOT, expr_of(operand))


def in_(operand: Value | Expr, *items: Scalar, negated: bool = False) -> InList:
    return InList(expr_of(operand), tuple(Literal(i) for i in items), negated)


def ev(expr: Expr, doc: JsonObject | None = None) -> Value:
    return evaluate(expr, doc if doc is not None else DOC)


def same(actual: Value, expected: Value) -> bool:
    """Equal and of the same kind: True is not 1, 3 is not 3.0 is checked separately where it matters."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected


def make_doc(
    device_id: str = "dev-1",
    tags: JsonObject | None = None,
    reported: JsonObject | None = None,
    desired: JsonObject | None = None,
    *,
    active: bool = True,
    connected: bool = False,
) -> JsonObject:
    twin = Twin(
        device_id=device_id,
        tags=tags or {},
        desired=PropertySet(desired or {}, {"$lastUpdated": "2024-01-01T00:00:00.0000000Z"}, 4),
        reported=PropertySet(reported or {}, {"$lastUpdated": "2024-01-01T00:00:00.0000000Z"}, 9),
        version=7,
        connection_state=ConnectionState.CONNECTED if connected else ConnectionState.DISCONNECTED,
        last_activity_time=T0 if active else None,
    )
    return twin_document(twin)


DOC = make_doc(
    tags={
        "location": {"region": "US", "plant": "Redmond"},
        "floor": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "list": [1, "two", True, None, {"x": 1}],
        "name": "Gärtner",
        "empty": "",
        "obj": {},
    },
    reported={"telemetryConfig": {"sendFrequencyInSecs": 60, "status": "Success"}, "fw": "1.2.3"},
    desired={"telemetryConfig": {"sendFrequencyInSecs": 30}},
)


# -- UNDEFINED ---------------------------------------------------------------------------


def test_undefined_is_a_falsy_singleton_named_undefined() -> None:
    assert not UNDEFINED
    assert repr(UNDEFINED) == "undefined"
    assert isinstance(UNDEFINED, Undefined)
    assert copy.deepcopy(UNDEFINED) is UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED
    assert UNDEFINED is not None
    assert UNDEFINED != None  # noqa: E711 -- undefined is not JSON null


# -- fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (FieldRoot.DEVICE_ID, "dev-1"),
        (FieldRoot.STATUS, "enabled"),
        (FieldRoot.CONNECTION_STATE, "Disconnected"),
        (FieldRoot.LAST_ACTIVITY_TIME, "2024-05-06T07:08:09.1234560Z"),
        (FieldRoot.ETAG, DOC["etag"]),
        (FieldRoot.VERSION, 7),
    ],
)
def test_identity_fields(root: FieldRoot, expected: Value) -> None:
    assert resolve(Field(root), DOC) == expected


def test_never_active_device_has_undefined_last_activity_time() -> None:
    doc = make_doc(active=False)
    assert doc["lastActivityTime"] is None
    assert resolve(Field(FieldRoot.LAST_ACTIVITY_TIME), doc) is UNDEFINED
    assert ev(call(Fn.IS_DEFINED, Field(FieldRoot.LAST_ACTIVITY_TIME)), doc) is False
    assert ev(call(Fn.IS_NULL, Field(FieldRoot.LAST_ACTIVITY_TIME)), doc) is False


def test_tag_paths() -> None:
    assert resolve(tag("location", "region"), DOC) == "US"
    assert resolve(tag("location"), DOC) == {"region": "US", "plant": "Redmond"}
    assert resolve(tag(), DOC) == DOC["tags"]
    assert resolve(tag("nothing"), DOC) is None
    assert resolve(tag("location", "Region"), DOC) is UNDEFINED  # paths are case-sensitive
    assert resolve(tag("location", "region", "deeper"), DOC) is UNDEFINED  # through a string
    assert resolve(tag("list", "0"), DOC) is UNDEFINED  # no array indexing
    assert resolve(tag("nothing", "x"), DOC) is UNDEFINED
    assert resolve(tag("absent"), DOC) is UNDEFINED


def test_property_sections_have_version_but_no_metadata() -> None:
    assert resolve(rep("telemetryConfig", "sendFrequencyInSecs"), DOC) == 60
    assert resolve(Field(FieldRoot.DESIRED, ("telemetryConfig", "sendFrequencyInSecs")), DOC) == 30
    assert resolve(rep("$version"), DOC) == 9
    assert resolve(Field(FieldRoot.DESIRED, ("$version",)), DOC) == 4
    assert "$metadata" in DOC["properties"]["reported"]  # type: ignore[call-overload,index,operator]
    assert resolve(rep("$metadata"), DOC) is UNDEFINED
    assert resolve(rep("$metadata", "$lastUpdated"), DOC) is UNDEFINED
    whole = resolve(rep(), DOC)
    assert isinstance(whole, dict)
    assert "$metadata" not in whole
    assert whole["$version"] == 9
    assert whole["fw"] == "1.2.3"


def test_documents_without_the_sections() -> None:
    assert resolve(rep("x"), {"deviceId": "d"}) is UNDEFINED
    assert resolve(rep(), {"deviceId": "d", "properties": {}}) is UNDEFINED
    assert resolve(tag("x"), {"deviceId": "d"}) is UNDEFINED
    assert resolve(tag(), {"deviceId": "d"}) is UNDEFINED


def test_job_record_fields() -> None:
    job = DeviceJob("job-1", "dev-1", JobType.UPDATE_TWIN, DeviceJobStatus.RUNNING, T0, T0, start_time=T0)
    doc = device_job_document(job)
    assert resolve(Field(FieldRoot.JOB_ID), doc) == "job-1"
    assert resolve(Field(FieldRoot.JOB_TYPE), doc) == "scheduleUpdateTwin"
    assert resolve(Field(FieldRoot.STATUS), doc) == "running"
    assert resolve(Field(FieldRoot.START_TIME), doc) == "2024-05-06T07:08:09.1234560Z"
    assert resolve(Field(FieldRoot.CREATED_TIME), doc) == "2024-05-06T07:08:09.1234560Z"
    assert resolve(Field(FieldRoot.END_TIME), doc) is UNDEFINED  # null in the record: not ended
    assert resolve(Field(FieldRoot.TAGS, ("x",)), doc) is UNDEFINED
    assert resolve(Field(FieldRoot.JOB_ID), DOC) is UNDEFINED


# -- comparisons -------------------------------------------------------------------------

COMPARISONS: list[tuple[Value, BinaryOperator, Value, Value]] = [
    # numbers, ints and floats mixed
    (1, Op.EQ, 1, True),
    (1, Op.EQ, 1.0, True),
    (1, Op.NE, 1.0, False),
    (1, Op.LT, 1.5, True),
    (2, Op.GT, 1.5, True),
    (-0.0, Op.EQ, 0, True),
    (3, Op.LE, 3, True),
    (3, Op.GE, 4, False),
    (4503599627370495, Op.GT, 4503599627370494, True),
    (0.1 + 0.2, Op.EQ, 0.3, False),
    # strings by code point, case-sensitive
    ("a", Op.EQ, "a", True),
    ("a", Op.EQ, "A", False),
    ("a", Op.NE, "A", True),
    ("Z", Op.LT, "a", True),
    ("a", Op.LT, "é", True),
    ("abc", Op.LT, "abd", True),
    ("ab", Op.LT, "abc", True),
    ("", Op.LT, "a", True),
    ("\uffff", Op.LT, "😀", True),  # code point order, not UTF-16 order
    ("ß", Op.EQ, "ss", False),
    ("e\u0301", Op.EQ, "é", False),  # no normalisation
    # booleans
    (False, Op.LT, True, True),
    (True, Op.EQ, True, True),
    (True, Op.GE, False, True),
    (False, Op.NE, True, True),
    # null
    (None, Op.EQ, None, True),
    (None, Op.NE, None, False),
    (None, Op.LT, None, False),
    (None, Op.GT, None, False),
    (None, Op.LE, None, True),
    (None, Op.GE, None, True),
    # different types: undefined, so != is not the negation of =
    (True, Op.EQ, 1, UNDEFINED),
    (True, Op.NE, 1, UNDEFINED),
    (False, Op.EQ, 0, UNDEFINED),
    (1, Op.EQ, True, UNDEFINED),
    (False, Op.LT, 1, UNDEFINED),
    ("1", Op.EQ, 1, UNDEFINED),
    ("1", Op.NE, 1, UNDEFINED),
    ("true", Op.EQ, True, UNDEFINED),
    (None, Op.EQ, 0, UNDEFINED),
    (None, Op.NE, "x", UNDEFINED),
    ("", Op.EQ, None, UNDEFINED),
    # undefined
    (UNDEFINED, Op.EQ, 1, UNDEFINED),
    (UNDEFINED, Op.NE, 1, UNDEFINED),
    (1, Op.LT, UNDEFINED, UNDEFINED),
    (UNDEFINED, Op.EQ, None, UNDEFINED),
    (UNDEFINED, Op.EQ, UNDEFINED, UNDEFINED),
]


@pytest.mark.parametrize(("left", "op", "right", "expected"), COMPARISONS)
def test_comparison(left: Value, op: BinaryOperator, right: Value, expected: Value) -> None:
    assert same(ev(binary(op, left, right)), expected)


@pytest.mark.parametrize("op", [Op.EQ, Op.NE, Op.LT, Op.GT, Op.LE, Op.GE])
def test_objects_and_arrays_do_not_compare(op: BinaryOperator) -> None:
    assert ev(BinaryOp(op, tag("location"), tag("location"))) is UNDEFINED
    assert ev(BinaryOp(op, tag("list"), tag("list"))) is UNDEFINED
    assert ev(BinaryOp(op, tag("obj"), lit(None))) is UNDEFINED
    assert ev(BinaryOp(op, tag("list"), lit(1))) is UNDEFINED


def test_field_comparisons_in_a_document() -> None:
    assert ev(binary(Op.EQ, tag("location", "region"), "US")) is True
    assert ev(binary(Op.GE, rep("telemetryConfig", "sendFrequencyInSecs"), 60)) is True
    assert ev(binary(Op.GT, rep("telemetryConfig", "sendFrequencyInSecs"), 60.5)) is False
    assert ev(binary(Op.EQ, tag("flag"), True)) is True
    assert ev(binary(Op.EQ, tag("flag"), 1)) is UNDEFINED
    assert ev(binary(Op.EQ, tag("nothing"), None)) is True
    assert ev(binary(Op.EQ, tag("absent"), None)) is UNDEFINED
    assert ev(binary(Op.EQ, Field(FieldRoot.DEVICE_ID), "DEV-1")) is False


# -- logic -------------------------------------------------------------------------------

U = UNDEFINED
AND_TABLE: list[tuple[Value, Value, Value]] = [
    (True, True, True),
    (True, False, False),
    (True, U, U),
    (False, True, False),
    (False, False, False),
    (False, U, False),
    (U, True, U),
    (U, False, False),
    (U, U, U),
]
OR_TABLE: list[tuple[Value, Value, Value]] = [
    (True, True, True),
    (True, False, True),
    (True, U, True),
    (False, True, True),
    (False, False, False),
    (False, U, U),
    (U, True, True),
    (U, False, U),
    (U, U, U),
]


@pytest.mark.parametrize(("left", "right", "expected"), AND_TABLE)
def test_and_truth_table(left: Value, right: Value, expected: Value) -> None:
    assert same(ev(binary(Op.AND, left, right)), expected)


@pytest.mark.parametrize(("left", "right", "expected"), OR_TABLE)
def test_or_truth_table(left: Value, right: Value, expected: Value) -> None:
    assert same(ev(binary(Op.OR, left, right)), expected)


@pytest.mark.parametrize(("operand", "expected"), [(True, False), (False, True), (U, U)])
def test_not_truth_table(operand: Value, expected: Value) -> None:
    assert same(ev(not_(operand)), expected)


@pytest.mark.parametrize("non_boolean", [1, 0, "true", "", None, 1.0])
def test_non_boolean_operands_are_unknown(non_boolean: Scalar) -> None:
    assert ev(not_(non_boolean)) is UNDEFINED
    assert ev(binary(Op.AND, True, non_boolean)) is UNDEFINED
    assert ev(binary(Op.AND, non_boolean, False)) is False
    assert ev(binary(Op.OR, non_boolean, False)) is UNDEFINED
    assert ev(binary(Op.OR, True, non_boolean)) is True
    assert matches(lit(non_boolean), DOC) is False


def test_objects_as_logic_operands_are_unknown() -> None:
    assert ev(not_(tag("location"))) is UNDEFINED
    assert ev(BinaryOp(Op.AND, tag("list"), lit(True))) is UNDEFINED


def test_not_of_a_comparison_with_a_missing_field_selects_nothing() -> None:
    condition = not_(binary(Op.EQ, tag("absent"), "x"))
    assert ev(condition) is UNDEFINED
    assert matches(condition, DOC) is False


def test_matches() -> None:
    assert matches(None, DOC) is True
    assert matches(lit(True), DOC) is True
    assert matches(lit(False), DOC) is False
    assert matches(tag("absent"), DOC) is False
    assert matches(tag("flag"), DOC) is True  # a boolean field on its own is a condition
    assert matches(tag("floor"), DOC) is False


# -- IN / NIN ----------------------------------------------------------------------------

IN_CASES: list[tuple[Value | Expr, tuple[Scalar, ...], Value]] = [
    ("wifi", ("wired", "wifi"), True),
    ("lte", ("wired", "wifi"), False),
    ("WIFI", ("wired", "wifi"), False),
    (1, (1.0, 2), True),
    (2.0, (1, 2), True),
    (1, ("1", True), False),
    (True, (1, "true"), False),
    (True, (False, True), True),
    (None, ("x", None), True),
    (None, ("x",), False),
    ("x", (), False),
    (1, ("a", 1), True),
    (U, ("a", None), U),
    (U, (), U),
]


@pytest.mark.parametrize(("operand", "items", "expected"), IN_CASES)
def test_in_and_nin(operand: Value | Expr, items: tuple[Scalar, ...], expected: Value) -> None:
    assert same(ev(in_(operand, *items)), expected)
    negated = expected if expected is UNDEFINED else not expected
    assert same(ev(in_(operand, *items, negated=True)), negated)


def test_in_with_objects_and_arrays_is_undefined() -> None:
    assert ev(in_(tag("location"), "US")) is UNDEFINED
    assert ev(in_(tag("list"), 1)) is UNDEFINED
    assert ev(in_(tag("list"), 1, negated=True)) is UNDEFINED


# -- arithmetic --------------------------------------------------------------------------

ARITHMETIC: list[tuple[Value, BinaryOperator, Value, Value]] = [
    (1, Op.ADD, 2, 3),
    (1, Op.ADD, 0.5, 1.5),
    (5, Op.SUB, 7, -2),
    (3, Op.MUL, 4, 12),
    (2.5, Op.MUL, 2, 5.0),
    (7, Op.DIV, 2, 3.5),
    (6, Op.DIV, 2, 3.0),
    (-7, Op.DIV, 2, -3.5),  # not SQLite's truncating integer division
    (1, Op.DIV, 0, U),
    (1.5, Op.DIV, 0.0, U),
    (0, Op.DIV, 0, U),
    (7, Op.MOD, 3, 1),
    (-7, Op.MOD, 3, -1),  # sign of the dividend, unlike Python's %
    (7, Op.MOD, -3, 1),
    (-7, Op.MOD, -3, -1),
    (7.5, Op.MOD, 2, 1.5),
    (-7.5, Op.MOD, 2, -1.5),
    (7, Op.MOD, 0, U),
    (7.0, Op.MOD, 0.0, U),
    (4503599627370495, Op.MOD, 10, 5),
    (1e308, Op.MUL, 10, U),  # overflow: not a finite number
    (-1e308, Op.SUB, 1e308, U),
    (10**400, Op.DIV, 3, U),  # int too big for a float
    ("a", Op.ADD, "b", U),  # no string concatenation
    ("1", Op.ADD, 1, U),
    (True, Op.ADD, 1, U),
    (1, Op.MUL, False, U),
    (None, Op.ADD, 1, U),
    (U, Op.ADD, 1, U),
    (1, Op.SUB, U, U),
]


@pytest.mark.parametrize(("left", "op", "right", "expected"), ARITHMETIC)
def test_arithmetic(left: Value, op: BinaryOperator, right: Value, expected: Value) -> None:
    assert same(ev(binary(op, left, right)), expected)


def test_arithmetic_result_types() -> None:
    assert type(ev(binary(Op.ADD, 1, 2))) is int
    assert type(ev(binary(Op.MOD, -7, 3))) is int
    assert type(ev(binary(Op.DIV, 6, 2))) is float
    assert type(ev(binary(Op.MUL, 2, 2.0))) is float


def test_arithmetic_on_fields_and_objects() -> None:
    freq = rep("telemetryConfig", "sendFrequencyInSecs")
    assert ev(BinaryOp(Op.DIV, freq, lit(60))) == 1.0
    assert ev(binary(Op.EQ, BinaryOp(Op.MOD, freq, lit(7)), 4)) is True
    assert ev(BinaryOp(Op.ADD, tag("location"), lit(1))) is UNDEFINED
    assert ev(BinaryOp(Op.ADD, tag("flag"), lit(1))) is UNDEFINED


@pytest.mark.parametrize(
    ("operand", "expected"), [(3, -3), (-2.5, 2.5), (0, 0), (True, U), ("1", U), (None, U), (U, U)]
)
def test_unary_minus(operand: Value, expected: Value) -> None:
    assert same(ev(UnaryOp(UnaryOperator.NEG, expr_of(operand))), expected)


def test_unary_minus_of_objects() -> None:
    assert ev(UnaryOp(UnaryOperator.NEG, tag("location"))) is UNDEFINED


# -- functions ---------------------------------------------------------------------------

TYPE_FUNCTIONS: dict[FunctionName, tuple[str, ...]] = {
    Fn.IS_DEFINED: ("floor", "ratio", "flag", "nothing", "list", "name", "empty", "obj", "location"),
    Fn.IS_NULL: ("nothing",),
    Fn.IS_STRING: ("name", "empty"),
    Fn.IS_NUMBER: ("floor", "ratio"),
    Fn.IS_BOOL: ("flag",),
    Fn.IS_OBJECT: ("obj", "location"),
    Fn.IS_ARRAY: ("list",),
}
TAG_NAMES = ("floor", "ratio", "flag", "nothing", "list", "name", "empty", "obj", "location", "absent")


@pytest.mark.parametrize("function", list(TYPE_FUNCTIONS))
@pytest.mark.parametrize("name", TAG_NAMES)
def test_type_functions(function: FunctionName, name: str) -> None:
    # Never undefined, even for a missing field.
    assert ev(call(function, tag(name))) is (name in TYPE_FUNCTIONS[function])


def test_type_functions_on_literals() -> None:
    assert ev(call(Fn.IS_NUMBER, True)) is False
    assert ev(call(Fn.IS_BOOL, 1)) is False
    assert ev(call(Fn.IS_NUMBER, 0)) is True
    assert ev(call(Fn.IS_NULL, None)) is True
    assert ev(call(Fn.IS_DEFINED, None)) is True
    assert ev(call(Fn.IS_DEFINED, binary(Op.DIV, 1, 0))) is False
    assert ev(call(Fn.IS_DEFINED, binary(Op.EQ, 1, "1"))) is False


STRING_FUNCTIONS: list[tuple[FunctionName, Value, Value, Value]] = [
    (Fn.STARTSWITH, "device-1", "device", True),
    (Fn.STARTSWITH, "device-1", "Device", False),
    (Fn.STARTSWITH, "device-1", "", True),
    (Fn.STARTSWITH, "", "", True),
    (Fn.STARTSWITH, "dev", "device", False),
    (Fn.ENDSWITH, "sensor.temp", ".temp", True),
    (Fn.ENDSWITH, "sensor.temp", "TEMP", False),
    (Fn.CONTAINS, "Gärtner", "ärt", True),
    (Fn.CONTAINS, "Gärtner", "art", False),
    (Fn.CONTAINS, "a%b_c", "%b_", True),  # no LIKE wildcards
    (Fn.CONTAINS, "a%b_c", "_", True),
    (Fn.STARTSWITH, "abc", "_", False),
    (Fn.CONTAINS, "😀x", "😀", True),
    (Fn.STARTSWITH, 123, "1", U),
    (Fn.STARTSWITH, "123", 1, U),
    (Fn.ENDSWITH, None, "", U),
    (Fn.CONTAINS, U, "x", U),
    (Fn.CONTAINS, "x", U, U),
    (Fn.CONTAINS, True, "t", U),
]


@pytest.mark.parametrize(("function", "text", "part", "expected"), STRING_FUNCTIONS)
def test_string_functions(function: FunctionName, text: Value, part: Value, expected: Value) -> None:
    assert same(ev(call(function, text, part)), expected)


def test_string_functions_on_objects() -> None:
    assert ev(call(Fn.CONTAINS, tag("list"), "two")) is UNDEFINED
    assert ev(call(Fn.STARTSWITH, tag("location"), "r")) is UNDEFINED


def test_array_contains() -> None:
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), 1)) is True
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), 1.0)) is True
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), "two")) is True
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), "Two")) is False
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), True)) is True
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), None)) is True
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), 2)) is False
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), U)) is UNDEFINED
    assert ev(call(Fn.ARRAY_CONTAINS, tag("list"), tag("obj"))) is UNDEFINED  # v must be a primitive
    assert ev(call(Fn.ARRAY_CONTAINS, tag("name"), "G")) is UNDEFINED  # a must be an array
    assert ev(call(Fn.ARRAY_CONTAINS, tag("absent"), 1)) is UNDEFINED
    bools = make_doc(tags={"a": [True, False], "n": [1, 0]})
    assert ev(call(Fn.ARRAY_CONTAINS, tag("a"), 1), bools) is False  # true is not 1
    assert ev(call(Fn.ARRAY_CONTAINS, tag("n"), True), bools) is False
    assert ev(call(Fn.ARRAY_CONTAINS, tag("n"), 0.0), bools) is True


CASE_MAPPING: list[tuple[str, str, str]] = [
    ("Hello World", "hello world", "HELLO WORLD"),
    ("ÄÖÜ äöü", "ÄÖÜ äöü", "ÄÖÜ äöü"),  # ASCII letters only
    ("Gärtner", "gärtner", "GäRTNER"),
    ("straße", "straße", "STRAßE"),
    ("İstanbul", "İstanbul", "İSTANBUL"),
    ("ΣΑΣ", "ΣΑΣ", "ΣΑΣ"),
    ("MiXeD-123_😀", "mixed-123_😀", "MIXED-123_😀"),
    ("", "", ""),
]


@pytest.mark.parametrize(("text", "lower", "upper"), CASE_MAPPING)
def test_lower_and_upper_map_ascii_only(text: str, lower: str, upper: str) -> None:
    assert ev(call(Fn.LOWER, text)) == lower
    assert ev(call(Fn.UPPER, text)) == upper


@pytest.mark.parametrize("function", [Fn.LOWER, Fn.UPPER, Fn.LENGTH])
@pytest.mark.parametrize("operand", [1, True, None, U])
def test_string_only_functions_on_non_strings(function: FunctionName, operand: Value) -> None:
    assert ev(call(function, operand)) is UNDEFINED
    assert ev(call(function, tag("list"))) is UNDEFINED


@pytest.mark.parametrize(
    ("text", "length"),
    [("", 0), ("abc", 3), ("Gärtner", 7), ("日本語", 3), ("😀", 1), ("e\u0301", 2), ("👍🏽", 2)],
)
def test_length_counts_code_points(text: str, length: int) -> None:
    assert same(ev(call(Fn.LENGTH, text)), length)


def test_function_results_compose() -> None:
    condition = binary(Op.EQ, call(Fn.LOWER, tag("location", "region")), "us")
    assert ev(condition) is True
    assert ev(binary(Op.GT, call(Fn.LENGTH, tag("name")), 6)) is True


@pytest.mark.parametrize(
    ("function", "count"), [(Fn.IS_DEFINED, 0), (Fn.IS_DEFINED, 2), (Fn.STARTSWITH, 1), (Fn.LENGTH, 3)]
)
def test_wrong_arity_is_a_query_error(function: FunctionName, count: int) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        ev(Call(function, tuple(lit("x") for _ in range(count)), position=17))
    assert info.value.position == 17


# -- results -----------------------------------------------------------------------------

FLEET_IDS = ["b", "a", "B", "é", "a-1", "A", "a0", "😀", "z", "\uffff"]


def fleet() -> list[JsonObject]:
    docs = [
        make_doc(
            device_id,
            tags={"n": index, "parity": "even" if index % 2 == 0 else "odd"},
            reported={"temp": 20 + index} if index % 3 else {},
            active=index % 4 != 0,
        )
        for index, device_id in enumerate(FLEET_IDS)
    ]
    random.Random(7).shuffle(docs)
    return docs


def ids(rows: list[JsonObject]) -> list[JsonValue]:
    return [row["deviceId"] for row in rows]


def test_select_star_orders_by_device_id_in_code_point_order() -> None:
    docs = fleet()
    rows = run_query(Query(Source.DEVICES, Star()), docs)
    assert ids(rows) == ["A", "B", "a", "a-1", "a0", "b", "z", "é", "\uffff", "😀"]
    assert all(any(row is doc for doc in docs) for row in rows)  # the documents themselves


def test_where_and_top() -> None:
    where = binary(Op.EQ, tag("parity"), "even")
    rows = run_query(Query(Source.DEVICES, Star(), where=where), fleet())
    assert ids(rows) == ["B", "a-1", "a0", "b", "z"]
    assert ids(run_query(Query(Source.DEVICES, Star(), where=where, top=2), fleet())) == ["B", "a-1"]
    assert run_query(Query(Source.DEVICES, Star(), where=where, top=0), fleet()) == []
    assert len(run_query(Query(Source.DEVICES, Star(), top=100), fleet())) == len(FLEET_IDS)


def test_projections_keys_and_left_out_undefined() -> None:
    select = (
        Projection(Field(FieldRoot.DEVICE_ID)),
        Projection(Field(FieldRoot.LAST_ACTIVITY_TIME)),
        Projection(rep("temp"), "temperature"),
        Projection(binary(Op.MUL, tag("n"), 2)),
        Projection(call(Fn.UPPER, tag("parity"))),
        Projection(tag()),
    )
    query = Query(Source.DEVICES, select, where=in_(Field(FieldRoot.DEVICE_ID), "a", "b"))
    rows = run_query(query, fleet())
    assert [row["deviceId"] for row in rows] == ["a", "b"]
    assert rows[0] == {
        "deviceId": "a",
        "lastActivityTime": "2024-05-06T07:08:09.1234560Z",
        "temperature": 21,
        "$4": 2,
        "$5": "ODD",
        "tags": {"n": 1, "parity": "odd"},
    }
    assert rows[1] == {"deviceId": "b", "$4": 0, "$5": "EVEN", "tags": {"n": 0, "parity": "even"}}


def test_projection_of_a_whole_section_and_version() -> None:
    query = Query(Source.DEVICES, (Projection(rep()), Projection(rep("$version"), "v")))
    assert project(query, DOC) == {
        "reported": {"telemetryConfig": {"sendFrequencyInSecs": 60, "status": "Success"}, "fw": "1.2.3", "$version": 9},
        "v": 9,
    }


def test_project() -> None:
    assert project(Query(Source.DEVICES, Star()), DOC) is DOC
    assert project(Query(Source.DEVICES, (Projection(tag("absent")),)), DOC) == {}
    aggregate = Query(Source.DEVICES, (Projection(AggregateCall(AggregateFunction.COUNT)),))
    with pytest.raises(ValueError, match="aggregates"):
        project(aggregate, DOC)


def test_later_projection_with_the_same_key_wins() -> None:
    query = Query(Source.DEVICES, (Projection(tag("floor"), "x"), Projection(tag("name"), "x")))
    assert project(query, DOC) == {"x": "Gärtner"}


def test_jobs_order_by_device_then_job() -> None:
    def job(job_id: str, device_id: str, status: DeviceJobStatus) -> JsonObject:
        return device_job_document(DeviceJob(job_id, device_id, JobType.DEVICE_METHOD, status, T0, T0))

    docs = [
        job("j2", "d1", DeviceJobStatus.COMPLETED),
        job("j1", "d2", DeviceJobStatus.FAILED),
        job("j10", "d1", DeviceJobStatus.COMPLETED),
        job("j1", "d1", DeviceJobStatus.RUNNING),
    ]
    rows = run_query(Query(Source.JOBS, Star()), docs)
    assert [(r["deviceId"], r["jobId"]) for r in rows] == [("d1", "j1"), ("d1", "j10"), ("d1", "j2"), ("d2", "j1")]
    where = binary(Op.EQ, Field(FieldRoot.STATUS), "completed")
    assert [r["jobId"] for r in run_query(Query(Source.JOBS, Star(), where=where), docs)] == ["j10", "j2"]


# -- groups and aggregates ---------------------------------------------------------------

COUNT = AggregateCall(AggregateFunction.COUNT)


def agg(function: AggregateFunction, arg: Expr) -> AggregateCall:
    return AggregateCall(function, arg)


def group_fleet() -> list[JsonObject]:
    values: list[JsonValue] = [1, 1.0, True, "1", None, "a", "B", 2, False, {"k": 1}, [1], {"k": 1.0}, -0.5]
    docs = [make_doc(f"d{index:02}", tags={"g": value, "x": index}) for index, value in enumerate(values)]
    docs.append(make_doc("d99", tags={"x": 100}))  # g undefined
    docs.append(make_doc("d98", tags={"x": 1.5}))  # g undefined
    random.Random(3).shuffle(docs)
    return docs


def test_group_by_keys_equal_by_equality_and_typed_order() -> None:
    query = Query(Source.DEVICES, (Projection(tag("g")), Projection(COUNT, "n")), group_by=(tag("g"),))
    rows = run_query(query, group_fleet())
    assert rows == [
        {"n": 2},  # undefined: the key is left out
        {"g": None, "n": 1},
        {"g": False, "n": 1},
        {"g": True, "n": 1},
        {"g": -0.5, "n": 1},
        {"g": 1, "n": 2},  # 1 and 1.0
        {"g": 2, "n": 1},
        {"g": "1", "n": 1},
        {"g": "B", "n": 1},
        {"g": "a", "n": 1},
        {"g": [1], "n": 1},
        {"g": {"k": 1}, "n": 2},  # structurally equal objects
    ]
    assert type(rows[5]["g"]) is int  # the first row's value (d00)
    assert type(rows[3]["g"]) is bool


def test_aggregates_over_groups() -> None:
    select = (
        Projection(tag("parity"), "parity"),
        Projection(COUNT),
        Projection(agg(AggregateFunction.SUM, tag("n")), "sum"),
        Projection(agg(AggregateFunction.AVG, tag("n")), "avg"),
        Projection(agg(AggregateFunction.MIN, rep("temp")), "min"),
        Projection(agg(AggregateFunction.MAX, rep("temp")), "max"),
    )
    rows = run_query(Query(Source.DEVICES, select, group_by=(tag("parity"),)), fleet())
    # n 0..9; temp = 20 + n where n % 3 != 0
    assert rows == [
        {"parity": "even", "$2": 5, "sum": 20, "avg": 4.0, "min": 22, "max": 28},
        {"parity": "odd", "$2": 5, "sum": 25, "avg": 5.0, "min": 21, "max": 27},
    ]
    assert type(rows[0]["sum"]) is int
    assert type(rows[0]["avg"]) is float


def test_aggregates_consider_numbers_only() -> None:
    docs = [
        make_doc("a", tags={"v": True}),
        make_doc("b", tags={"v": "7"}),
        make_doc("c", tags={"v": None}),
        make_doc("d", tags={"v": {"x": 1}}),
        make_doc("e"),
    ]
    numeric = (AggregateFunction.SUM, AggregateFunction.AVG, AggregateFunction.MIN, AggregateFunction.MAX)
    select = (
        *(Projection(agg(function, tag("v")), function.value.lower()) for function in numeric),
        Projection(COUNT, "count"),
        Projection(agg(AggregateFunction.COUNT, tag("v")), "defined"),
    )
    assert run_query(Query(Source.DEVICES, select), docs) == [{"count": 5, "defined": 4}]
    docs.append(make_doc("f", tags={"v": 2.5}))
    docs.append(make_doc("g", tags={"v": -1}))
    assert run_query(Query(Source.DEVICES, select), docs) == [
        {"sum": 1.5, "avg": 0.75, "min": -1, "max": 2.5, "count": 7, "defined": 6}
    ]


def test_float_sums_are_correctly_rounded() -> None:
    docs = [make_doc(f"d{i}", tags={"v": v}) for i, v in enumerate([0.1] * 10 + [1e16, 1.0, -1e16])]
    select = (Projection(agg(AggregateFunction.SUM, tag("v")), "s"),)
    assert run_query(Query(Source.DEVICES, select), docs) == [{"s": math.fsum([0.1] * 10 + [1e16, 1.0, -1e16])}]


def test_aggregates_without_group_by_give_one_row_even_over_nothing() -> None:
    select = (Projection(COUNT, "n"), Projection(agg(AggregateFunction.SUM, tag("n")), "s"))
    assert run_query(Query(Source.DEVICES, select), []) == [{"n": 0}]
    where = binary(Op.EQ, tag("parity"), "none")
    assert run_query(Query(Source.DEVICES, select, where=where), fleet()) == [{"n": 0}]
    assert run_query(Query(Source.DEVICES, select), fleet()) == [{"n": 10, "s": 45}]


def test_group_by_over_nothing_gives_no_rows() -> None:
    query = Query(Source.DEVICES, (Projection(tag("g")), Projection(COUNT)), group_by=(tag("g"),))
    assert run_query(query, []) == []


def test_group_by_where_top_and_several_keys() -> None:
    docs = [
        make_doc(f"d{i}", tags={"site": site, "kind": kind})
        for i, (site, kind) in enumerate(
            [("s2", "x"), ("s1", "y"), ("s1", "x"), ("s2", "x"), ("s1", "x"), ("s3", "y"), ("s2", "y")]
        )
    ]
    # A GROUP BY expression written at another position in the SELECT is the same expression.
    select = (Projection(Field(FieldRoot.TAGS, ("kind",), position=7)), Projection(tag("site")), Projection(COUNT, "n"))
    where = binary(Op.NE, tag("site"), "s3")
    query = Query(Source.DEVICES, select, where=where, group_by=(tag("site"), tag("kind")))
    assert run_query(query, docs) == [
        {"site": "s1", "kind": "x", "n": 2},
        {"site": "s1", "kind": "y", "n": 1},
        {"site": "s2", "kind": "x", "n": 2},
        {"site": "s2", "kind": "y", "n": 1},
    ]
    top = Query(Source.DEVICES, select, where=where, group_by=(tag("site"), tag("kind")), top=3)
    assert len(run_query(top, docs)) == 3


def test_group_by_without_aggregates_lists_distinct_keys() -> None:
    query = Query(Source.DEVICES, (Projection(tag("parity")),), group_by=(tag("parity"),))
    assert run_query(query, fleet()) == [{"parity": "even"}, {"parity": "odd"}]


def test_group_by_computed_expression() -> None:
    key = binary(Op.MOD, tag("n"), 3)
    query = Query(Source.DEVICES, (Projection(key, "r"), Projection(COUNT, "n")), group_by=(key,))
    assert run_query(query, fleet()) == [{"r": 0, "n": 4}, {"r": 1, "n": 3}, {"r": 2, "n": 3}]


def test_selected_expression_outside_group_by_is_a_query_error() -> None:
    select = (Projection(Field(FieldRoot.DEVICE_ID, position=7)), Projection(COUNT))
    with pytest.raises(QuerySyntaxError) as info:
        run_query(Query(Source.DEVICES, select, group_by=(tag("parity"),)), fleet())
    assert info.value.position == 7
    with pytest.raises(QuerySyntaxError):
        run_query(Query(Source.DEVICES, select), fleet())
    with pytest.raises(QuerySyntaxError):
        run_query(Query(Source.DEVICES, Star(), group_by=(tag("parity"),)), fleet())


# -- properties --------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**52), max_value=2**52 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.sampled_from([0, 1, 1.0, 0.0, -0.0, True, False, "", "a", "A", None]),
)
json_values: st.SearchStrategy[JsonValue] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text("ab", max_size=2), children, max_size=3),
    max_leaves=6,
)
MISSING = object()


def kind(value: object) -> type:
    """The query type of a value: ints and floats are one type, booleans another."""
    return float if isinstance(value, int | float) and not isinstance(value, bool) else type(value)


slots = st.one_of(st.just(MISSING), json_values)


def doc_with(**values: object) -> JsonObject:
    return make_doc(tags={name: value for name, value in values.items() if value is not MISSING})  # type: ignore[misc]


@given(slots, slots)
def test_de_morgan_in_three_valued_logic(a: object, b: object) -> None:
    doc = doc_with(a=a, b=b)
    x, y = tag("a"), tag("b")
    assert ev(not_(BinaryOp(Op.AND, x, y)), doc) == ev(BinaryOp(Op.OR, not_(x), not_(y)), doc)
    assert ev(not_(BinaryOp(Op.OR, x, y)), doc) == ev(BinaryOp(Op.AND, not_(x), not_(y)), doc)
    assert ev(BinaryOp(Op.AND, x, y), doc) == ev(BinaryOp(Op.AND, y, x), doc)
    assert ev(BinaryOp(Op.OR, x, y), doc) == ev(BinaryOp(Op.OR, y, x), doc)


@given(slots)
def test_not_not(a: object) -> None:
    doc = doc_with(a=a)
    twice = ev(not_(not_(tag("a"))), doc)
    if isinstance(a, bool):
        assert twice is a
    else:
        assert twice is UNDEFINED


@given(slots, st.lists(scalars, max_size=4))
def test_in_is_a_chain_of_equalities(a: object, items: list[Scalar]) -> None:
    doc = doc_with(a=a)
    membership = ev(in_(tag("a"), *items), doc)
    chain: Expr = lit(False)
    for item in items:
        chain = BinaryOp(Op.OR, chain, binary(Op.EQ, tag("a"), item))
    expected = ev(chain, doc)
    # Equal as WHERE conditions; exactly equal when every item has the operand's type.
    assert (membership is True) == (expected is True)
    if a is MISSING or isinstance(a, dict | list):
        assert membership is UNDEFINED
    elif all(kind(item) is kind(a) for item in items):
        assert membership == expected
    nin = ev(in_(tag("a"), *items, negated=True), doc)
    assert nin == ev(not_(in_(tag("a"), *items)), doc)


@given(slots, slots)
def test_comparisons_are_a_total_order_within_a_type(a: object, b: object) -> None:
    doc = doc_with(a=a, b=b)
    x, y = tag("a"), tag("b")
    results = {op: ev(BinaryOp(op, x, y), doc) for op in (Op.EQ, Op.NE, Op.LT, Op.GT, Op.LE, Op.GE)}
    comparable = kind(a) is kind(b) and not isinstance(a, dict | list) and a is not MISSING and b is not MISSING
    if not comparable:
        assert all(r is UNDEFINED for r in results.values())
        return
    assert [results[Op.LT], results[Op.EQ], results[Op.GT]].count(True) == 1
    assert results[Op.NE] is (not results[Op.EQ])
    assert results[Op.LE] is (results[Op.LT] or results[Op.EQ])
    assert results[Op.GE] is (results[Op.GT] or results[Op.EQ])
    assert results[Op.LT] == ev(BinaryOp(Op.GT, y, x), doc)


@given(
    st.integers(min_value=-(2**52), max_value=2**52),
    st.integers(min_value=-(2**52), max_value=2**52).filter(bool),
)
def test_integer_remainder_has_the_sign_of_the_dividend(a: int, b: int) -> None:
    remainder = ev(binary(Op.MOD, a, b))
    assert isinstance(remainder, int)
    assert abs(remainder) < abs(b)
    assert remainder == 0 or (remainder > 0) == (a > 0)
    assert remainder == int(math.fmod(a, b)) or abs(a) > 2**53  # fmod agrees where floats are exact
    quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b > 0) else -1)
    assert quotient * b + remainder == a


@given(st.text(max_size=8))
def test_case_mapping_keeps_length_and_is_idempotent(text: str) -> None:
    lower, upper = ev(call(Fn.LOWER, text)), ev(call(Fn.UPPER, text))
    assert isinstance(lower, str)
    assert isinstance(upper, str)
    assert len(lower) == len(upper) == len(text) == ev(call(Fn.LENGTH, text))
    assert ev(call(Fn.LOWER, lower)) == lower
    assert ev(call(Fn.LOWER, upper)) == lower
    assert all(a == b or (a.isascii() and a.lower() == b) for a, b in zip(text, lower, strict=True))


@given(st.lists(st.tuples(json_values, st.sampled_from(["x", "y"])), max_size=12), st.integers(0, 15))
def test_results_are_ordered_filtered_and_counted(rows: list[tuple[JsonValue, str]], top: int) -> None:
    docs = [make_doc(f"{kind}{index:02}", tags={"v": value, "k": kind}) for index, (value, kind) in enumerate(rows)]
    random.Random(top).shuffle(docs)
    where = binary(Op.EQ, tag("k"), "x")
    selected = run_query(Query(Source.DEVICES, Star(), where=where), docs)
    device_ids = [str(row["deviceId"]) for row in selected]
    assert device_ids == sorted(device_ids)
    assert all(row["tags"]["k"] == "x" for row in selected)  # type: ignore[call-overload,index]
    assert run_query(Query(Source.DEVICES, Star(), where=where, top=top), docs) == selected[:top]
    (counted,) = run_query(Query(Source.DEVICES, (Projection(COUNT, "n"),), where=where), docs)
    assert counted == {"n": len(selected)}
    grouped = run_query(Query(Source.DEVICES, (Projection(COUNT, "n"),), group_by=(tag("v"),)), docs)
    counts = [row["n"] for row in grouped]
    assert sum(count for count in counts if isinstance(count, int)) == len(docs)
    assert all(isinstance(count, int) for count in counts)
