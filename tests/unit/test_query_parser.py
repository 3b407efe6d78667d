"""The twin query parser and type checker: every construct to its exact AST, every error to its message."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from types import ModuleType

import pytest

from hub.errors import BadRequestError, QuerySyntaxError
from hub.query import check, parser, printer
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
from hub.query.check import MAX_DEPTH, check_condition, check_query, depth, without_positions
from hub.query.parser import MAX_QUERY_LENGTH, parse_condition, parse_query
from hub.query.printer import format_expr, format_query

strip = without_positions

# -- building blocks ---------------------------------------------------------------------


def tag(*path: str) -> Field:
    return Field(FieldRoot.TAGS, path)


def reported(*path: str) -> Field:
    return Field(FieldRoot.REPORTED, path)


def desired(*path: str) -> Field:
    return Field(FieldRoot.DESIRED, path)


DEVICE_ID = Field(FieldRoot.DEVICE_ID)
STATUS = Field(FieldRoot.STATUS)
X = tag("x")
Y = tag("y")
Z = tag("z")


def lit(value: str | int | float | bool | None) -> Literal:
    return Literal(value)


def eq(left: Expr, right: Expr) -> BinaryOp:
    return BinaryOp(BinaryOperator.EQ, left, right)


def and_(left: Expr, right: Expr) -> BinaryOp:
    return BinaryOp(BinaryOperator.AND, left, right)


def or_(left: Expr, right: Expr) -> BinaryOp:
    return BinaryOp(BinaryOperator.OR, left, right)


def not_(operand: Expr) -> UnaryOp:
    return UnaryOp(UnaryOperator.NOT, operand)


def neg(operand: Expr) -> UnaryOp:
    return UnaryOp(UnaryOperator.NEG, operand)


def binary(op: str, left: Expr, right: Expr) -> BinaryOp:
    return BinaryOp(BinaryOperator(op), left, right)


def where(condition: str) -> Expr:
    """The WHERE condition of ``SELECT * FROM devices WHERE <condition>``, positions stripped."""
    query = parse_query(f"SELECT * FROM devices WHERE {condition}")
    assert query.where is not None
    return strip(query.where)


def query(text: str) -> Query:
    return strip(parse_query(text))


def same(actual: object, expected: object) -> None:
    """Equal including the Python types of constants (``1``, ``1.0`` and ``True`` compare equal)."""
    assert repr(actual) == repr(expected)


def error_of(text: str, *, condition: bool = False, source: Source = Source.DEVICES) -> QuerySyntaxError:
    parse: Callable[[str], object] = functools.partial(parse_condition, source=source) if condition else parse_query
    with pytest.raises(QuerySyntaxError) as caught:
        parse(text)
    return caught.value


# -- SELECT, FROM, TOP, projections, GROUP BY ---------------------------------------------


def test_select_star_from_devices() -> None:
    same(query("SELECT * FROM devices"), Query(Source.DEVICES, Star()))


def test_select_star_from_devices_jobs() -> None:
    same(query("SELECT * FROM devices.jobs"), Query(Source.JOBS, Star()))


def test_top() -> None:
    same(query("SELECT TOP 10 * FROM devices"), Query(Source.DEVICES, Star(), top=10))
    assert query("SELECT TOP 0x10 * FROM devices").top == 16


def test_projections_with_and_without_aliases() -> None:
    same(
        query("SELECT deviceId, tags.location.region AS region, properties.reported.temp + 1 AS [[t+1]] FROM devices"),
        Query(
            Source.DEVICES,
            (
                Projection(DEVICE_ID),
                Projection(tag("location", "region"), "region"),
                Projection(binary("+", reported("temp"), lit(1)), "t+1"),
            ),
        ),
    )


def test_count_and_the_other_aggregates() -> None:
    same(
        query(
            "SELECT tags.floor AS floor, COUNT() AS n, AVG(properties.reported.temp), SUM(tags.w), MIN(tags.w) AS lo, "
            "MAX(tags.w) FROM devices GROUP BY tags.floor"
        ),
        Query(
            Source.DEVICES,
            (
                Projection(tag("floor"), "floor"),
                Projection(AggregateCall(AggregateFunction.COUNT), "n"),
                Projection(AggregateCall(AggregateFunction.AVG, reported("temp"))),
                Projection(AggregateCall(AggregateFunction.SUM, tag("w"))),
                Projection(AggregateCall(AggregateFunction.MIN, tag("w")), "lo"),
                Projection(AggregateCall(AggregateFunction.MAX, tag("w"))),
            ),
            group_by=(tag("floor"),),
        ),
    )


def test_aggregates_without_group_by_and_group_by_several_expressions() -> None:
    same(query("SELECT COUNT() FROM devices").select, (Projection(AggregateCall(AggregateFunction.COUNT)),))
    parsed = query("SELECT tags.a, LOWER(tags.b), COUNT() FROM devices GROUP BY tags.a, LOWER(tags.b)")
    same(parsed.group_by, (tag("a"), Call(FunctionName.LOWER, (tag("b"),))))
    assert parsed.is_aggregate


def test_where_and_group_by_and_top_together() -> None:
    same(
        query("SELECT TOP 5 tags.a AS a, COUNT() AS n FROM devices WHERE tags.b = 1 GROUP BY tags.a"),
        Query(
            Source.DEVICES,
            (Projection(tag("a"), "a"), Projection(AggregateCall(AggregateFunction.COUNT), "n")),
            where=eq(tag("b"), lit(1)),
            group_by=(tag("a"),),
            top=5,
        ),
    )


def test_whitespace_and_newlines_anywhere() -> None:
    same(
        query("\n  SELECT\t*\r\nFROM   devices\nWHERE tags.x=1  \n"), Query(Source.DEVICES, Star(), where=eq(X, lit(1)))
    )
    same(query("SELECT * FROM devices WHERE tags . x = 1"), Query(Source.DEVICES, Star(), where=eq(X, lit(1))))


# -- case-insensitivity -------------------------------------------------------------------


def test_keywords_functions_sources_and_identity_fields_are_case_insensitive() -> None:
    lower = query(
        "select top 3 deviceid as d, count() as n from DEVICES where Tags.x in [1] and not Properties.Reported.y "
        "nin [2] or is_defined(PROPERTIES.DESIRED.z) and STATUS = TRUE and connectionstate = null group by DeviceId"
    )
    same(
        lower,
        Query(
            Source.DEVICES,
            (Projection(DEVICE_ID, "d"), Projection(AggregateCall(AggregateFunction.COUNT), "n")),
            where=or_(
                and_(InList(X, (lit(1),)), not_(InList(reported("y"), (lit(2),), negated=True))),
                and_(
                    and_(Call(FunctionName.IS_DEFINED, (desired("z"),)), eq(STATUS, lit(True))),
                    eq(Field(FieldRoot.CONNECTION_STATE), lit(None)),
                ),
            ),
            group_by=(DEVICE_ID,),
            top=3,
        ),
    )
    assert query("SELECT * FROM Devices.JOBS").source is Source.JOBS


@pytest.mark.parametrize(
    ("written", "root"),
    [
        ("deviceId", FieldRoot.DEVICE_ID),
        ("DEVICEID", FieldRoot.DEVICE_ID),
        ("Status", FieldRoot.STATUS),
        ("connectionstate", FieldRoot.CONNECTION_STATE),
        ("LastActivityTime", FieldRoot.LAST_ACTIVITY_TIME),
        ("ETag", FieldRoot.ETAG),
        ("VERSION", FieldRoot.VERSION),
    ],
)
def test_identity_fields(written: str, root: FieldRoot) -> None:
    same(where(f"{written} = 'a'"), eq(Field(root), lit("a")))


def test_paths_below_a_root_keep_their_case() -> None:
    same(where("TAGS.Location.Region = 'US'"), eq(tag("Location", "Region"), lit("US")))
    same(where("properties.REPORTED.Temp.Max > 1"), binary(">", reported("Temp", "Max"), lit(1)))


def test_whole_sections_are_fields() -> None:
    same(where("IS_OBJECT(tags)"), Call(FunctionName.IS_OBJECT, (tag(),)))
    same(where("IS_OBJECT(properties.desired)"), Call(FunctionName.IS_OBJECT, (desired(),)))
    same(where("IS_OBJECT(properties.reported)"), Call(FunctionName.IS_OBJECT, (reported(),)))


def test_function_names_are_case_insensitive() -> None:
    for written, function in [
        ("is_defined", FunctionName.IS_DEFINED),
        ("Is_Null", FunctionName.IS_NULL),
        ("is_string", FunctionName.IS_STRING),
        ("IS_NUMBER", FunctionName.IS_NUMBER),
        ("is_bool", FunctionName.IS_BOOL),
        ("is_object", FunctionName.IS_OBJECT),
        ("is_array", FunctionName.IS_ARRAY),
    ]:
        same(where(f"{written}(tags.x)"), Call(function, (X,)))
    same(where("startsWith(deviceId, 'a')"), Call(FunctionName.STARTSWITH, (DEVICE_ID, lit("a"))))
    same(where("endswith(deviceId, 'a')"), Call(FunctionName.ENDSWITH, (DEVICE_ID, lit("a"))))
    same(where("Contains(deviceId, 'a')"), Call(FunctionName.CONTAINS, (DEVICE_ID, lit("a"))))
    same(where("array_contains(tags.list, 3)"), Call(FunctionName.ARRAY_CONTAINS, (tag("list"), lit(3))))
    same(
        where("lower(deviceId) = upper('b')"),
        eq(Call(FunctionName.LOWER, (DEVICE_ID,)), Call(FunctionName.UPPER, (lit("b"),))),
    )
    same(where("length(deviceId) > 3"), binary(">", Call(FunctionName.LENGTH, (DEVICE_ID,)), lit(3)))


# -- precedence and associativity ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        # OR < AND < NOT < comparison < + - < * / % < unary minus
        ("tags.x OR tags.y AND tags.z", or_(X, and_(Y, Z))),
        ("tags.x AND tags.y OR tags.z", or_(and_(X, Y), Z)),
        ("NOT tags.x AND tags.y", and_(not_(X), Y)),
        ("NOT tags.x = 1", not_(eq(X, lit(1)))),
        ("NOT NOT tags.x", not_(not_(X))),
        ("tags.x = 1 + 2", eq(X, binary("+", lit(1), lit(2)))),
        ("tags.x + 1 < tags.y * 2", binary("<", binary("+", X, lit(1)), binary("*", Y, lit(2)))),
        ("tags.x + tags.y * tags.z = 0", eq(binary("+", X, binary("*", Y, Z)), lit(0))),
        ("tags.x * tags.y + tags.z = 0", eq(binary("+", binary("*", X, Y), Z), lit(0))),
        ("-tags.x * tags.y = 0", eq(binary("*", neg(X), Y), lit(0))),
        ("tags.x + 1 IN [2]", InList(binary("+", X, lit(1)), (lit(2),))),
        ("NOT tags.x IN [2]", not_(InList(X, (lit(2),)))),
        ("(tags.x OR tags.y) AND tags.z", and_(or_(X, Y), Z)),
        ("tags.x * (tags.y + tags.z) = 0", eq(binary("*", X, binary("+", Y, Z)), lit(0))),
        ("((tags.x))", X),
        # left associativity of arithmetic
        ("tags.x - tags.y - tags.z = 0", eq(binary("-", binary("-", X, Y), Z), lit(0))),
        ("tags.x / tags.y % tags.z = 0", eq(binary("%", binary("/", X, Y), Z), lit(0))),
        ("tags.x - (tags.y - tags.z) = 0", eq(binary("-", X, binary("-", Y, Z)), lit(0))),
        ("- - tags.x = 0", eq(neg(neg(X)), lit(0))),
        # comparison operators
        ("tags.x != 1", binary("!=", X, lit(1))),
        ("tags.x <> 1", binary("!=", X, lit(1))),
        ("tags.x <= 1", binary("<=", X, lit(1))),
        ("tags.x >= 1", binary(">=", X, lit(1))),
        ("tags.x < 1", binary("<", X, lit(1))),
        ("tags.x > 1", binary(">", X, lit(1))),
    ],
)
def test_precedence_and_associativity(text: str, tree: Expr) -> None:
    same(where(text), tree)


def test_and_or_chains_are_balanced_and_keep_their_operands_in_order() -> None:
    a, b, c, d, e = (tag(name) for name in "abcde")
    same(where("tags.a OR tags.b OR tags.c"), or_(or_(a, b), c))
    same(where("tags.a OR tags.b OR tags.c OR tags.d"), or_(or_(a, b), or_(c, d)))
    same(where("tags.a AND tags.b AND tags.c AND tags.d AND tags.e"), and_(and_(and_(a, b), c), and_(d, e)))
    # Parentheses around a same-operator group are kept when they change the shape.
    same(where("tags.a OR (tags.b OR tags.c)"), or_(a, or_(b, c)))


def test_a_long_or_chain_stays_shallow() -> None:
    text = " OR ".join(f"tags.n = {i}" for i in range(500))
    condition = where(text)
    assert depth(condition) == 11  # ceil(log2(500)) levels of OR over a comparison of two leaves


def test_comparisons_do_not_chain() -> None:
    error = error_of("SELECT * FROM devices WHERE tags.x = 1 = 2")
    assert error.message == (
        "Syntax error at line 1, column 40 (offset 39): found '=', expected an arithmetic operator, AND, OR, "
        "GROUP BY or end of query"
    )


# -- constants ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("'abc'", "abc"),
        ('"abc"', "abc"),
        ("''", ""),
        ("'say \"hi\"'", 'say "hi"'),
        ('"it\'s"', "it's"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        (r"'a\/b'", "a/b"),
        (r"'\b\f\n\r\t'", "\b\f\n\r\t"),
        (r"'\u00e9\u00C9'", "éÉ"),
        (r"'\ud83d\ude00'", "\U0001f600"),
        ("'raw ünïcödé 😀'", "raw ünïcödé 😀"),
        ("'line\nbreak'", "line\nbreak"),
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("1.5e-3", 0.0015),
        ("2E+2", 200.0),
        ("0x1F", 31),
        ("0X1f", 31),
        ("-1", -1),
        ("- 1", -1),
        ("-1.5", -1.5),
        ("-0x10", -16),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("true", True),
        ("FALSE", False),
        ("Null", None),
    ],
)
def test_constants(written: str, value: str | int | float | bool | None) -> None:
    same(where(f"tags.x = {written}"), eq(X, lit(value)))


def test_a_minus_before_a_parenthesised_number_stays_an_operator() -> None:
    same(where("tags.x = -(1)"), eq(X, neg(lit(1))))
    same(where("tags.x = --1"), eq(X, neg(lit(-1))))
    same(where("tags.x - 1 = 0"), eq(binary("-", X, lit(1)), lit(0)))
    same(where("tags.x-1 = 0"), eq(binary("-", X, lit(1)), lit(0)))


def test_in_and_nin_lists() -> None:
    same(
        where("tags.x IN ['a', \"b\", 1, -2.5, 0x1, true, false, null]"),
        InList(X, (lit("a"), lit("b"), lit(1), lit(-2.5), lit(1), lit(True), lit(False), lit(None))),
    )
    same(where("tags.x NIN [1]"), InList(X, (lit(1),), negated=True))
    same(where("tags.x in[1,2]"), InList(X, (lit(1), lit(2))))


# -- names: [[ ]], keywords after a dot, $version, devices. prefix, devices.jobs --------


def test_escaped_segments() -> None:
    same(where("tags.[[group]] = 1"), eq(tag("group"), lit(1)))
    same(where("tags.[[odd name-1.x]] = 1"), eq(tag("odd name-1.x"), lit(1)))
    same(where("tags.[[a]b]] = 1"), eq(tag("a]b"), lit(1)))
    same(where("tags.[[$anything]] = 1"), eq(tag("$anything"), lit(1)))
    same(where("tags.[[0]].[[SELECT]] = 1"), eq(tag("0", "SELECT"), lit(1)))
    same(where("[[tags]].x = 1"), eq(X, lit(1)))


def test_keywords_are_plain_names_after_a_dot() -> None:
    same(where("tags.group = 1"), eq(tag("group"), lit(1)))
    same(
        where("tags.select.from.where.in.null.true = 1"),
        eq(tag("select", "from", "where", "in", "null", "true"), lit(1)),
    )


def test_version_of_the_desired_and_reported_sections() -> None:
    same(where("properties.reported.$version > 3"), binary(">", reported("$version"), lit(3)))
    same(where("properties.desired.$version > 3"), binary(">", desired("$version"), lit(3)))


def test_devices_prefix_on_device_fields() -> None:
    same(where("devices.deviceId = 'a'"), eq(DEVICE_ID, lit("a")))
    same(where("DEVICES.tags.x = 1"), eq(X, lit(1)))
    same(where("devices.properties.reported.$version = 1"), eq(reported("$version"), lit(1)))


@pytest.mark.parametrize(
    ("written", "root"),
    [
        ("deviceId", FieldRoot.DEVICE_ID),
        ("jobId", FieldRoot.JOB_ID),
        ("JOBTYPE", FieldRoot.JOB_TYPE),
        ("status", FieldRoot.STATUS),
        ("startTimeUtc", FieldRoot.START_TIME),
        ("endtimeutc", FieldRoot.END_TIME),
        ("createdDateTimeUtc", FieldRoot.CREATED_TIME),
        ("createdTimeUtc", FieldRoot.CREATED_TIME),  # the spelling in Microsoft's own example
        ("lastUpdatedDateTimeUtc", FieldRoot.LAST_UPDATED_TIME),
        ("devices.jobs.jobId", FieldRoot.JOB_ID),
        ("Devices.Jobs.CreatedTimeUtc", FieldRoot.CREATED_TIME),
    ],
)
def test_devices_jobs_fields(written: str, root: FieldRoot) -> None:
    parsed = query(f"SELECT * FROM devices.jobs WHERE {written} = 'x'")
    same(parsed.where, eq(Field(root), lit("x")))


# -- positions -----------------------------------------------------------------------------


def test_positions_point_at_each_node() -> None:
    #            0         1         2         3         4         5         6
    #            0123456789012345678901234567890123456789012345678901234567890123456789
    text = "SELECT * FROM devices WHERE NOT tags.x >= -1 AND STARTSWITH(deviceId, 'a')"
    condition = parse_query(text).where
    assert isinstance(condition, BinaryOp)
    assert condition.position == text.index("AND")
    negation = condition.left
    assert isinstance(negation, UnaryOp)
    assert negation.position == text.index("NOT")
    comparison = negation.operand
    assert isinstance(comparison, BinaryOp)
    assert comparison.position == text.index(">=")
    assert comparison.left.position == text.index("tags")
    assert comparison.right.position == text.index("-1")
    call = condition.right
    assert isinstance(call, Call)
    assert call.position == text.index("STARTSWITH")
    assert [arg.position for arg in call.args] == [text.index("deviceId"), text.index("'a'")]


def test_positions_of_in_lists_aggregates_and_prefixed_fields() -> None:
    text = "SELECT COUNT() AS n FROM devices WHERE devices.tags.x NIN [1, 'b'] GROUP BY tags.y"
    parsed = parse_query(text)
    assert isinstance(parsed.select, tuple)
    aggregate = parsed.select[0].expr
    assert isinstance(aggregate, AggregateCall)
    assert aggregate.position == text.index("COUNT")
    in_list = parsed.where
    assert isinstance(in_list, InList)
    assert in_list.position == text.index("NIN")
    assert in_list.operand.position == text.index("devices.tags")
    assert [item.position for item in in_list.items] == [text.index("1,"), text.index("'b'")]
    assert parsed.group_by[0].position == text.index("tags.y")


# -- the IoT Hub documentation examples (reference §3) -------------------------------------


def test_doc_example_tag_and_reported_property() -> None:
    same(
        query(
            "SELECT * FROM devices WHERE tags.location.region = 'US' AND "
            "properties.reported.telemetryConfig.sendFrequencyInSecs >= 60"
        ),
        Query(
            Source.DEVICES,
            Star(),
            where=and_(
                eq(tag("location", "region"), lit("US")),
                binary(">=", reported("telemetryConfig", "sendFrequencyInSecs"), lit(60)),
            ),
        ),
    )


def test_doc_example_in() -> None:
    same(
        query("SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired','wifi']").where,
        InList(reported("connectivity"), (lit("wired"), lit("wifi"))),
    )


def test_doc_example_group_by() -> None:
    same(
        query(
            "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices "
            "GROUP BY properties.reported.telemetryConfig.status"
        ),
        Query(
            Source.DEVICES,
            (
                Projection(reported("telemetryConfig", "status"), "status"),
                Projection(AggregateCall(AggregateFunction.COUNT), "numberOfDevices"),
            ),
            group_by=(reported("telemetryConfig", "status"),),
        ),
    )


def test_doc_example_identity_projection() -> None:
    same(
        query(
            "SELECT DeviceId, LastActivityTime FROM devices WHERE status = 'enabled' AND "
            "connectionState = 'Disconnected'"
        ),
        Query(
            Source.DEVICES,
            (Projection(DEVICE_ID), Projection(Field(FieldRoot.LAST_ACTIVITY_TIME))),
            where=and_(eq(STATUS, lit("enabled")), eq(Field(FieldRoot.CONNECTION_STATE), lit("Disconnected"))),
        ),
    )


def test_doc_example_devices_modules_is_a_clear_error() -> None:
    text = (
        "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' AND "
        "deviceId IN ['device1','device2']"
    )
    error = error_of(text)
    assert error.message == (
        "Query error at line 1, column 15 (offset 14): found devices.modules, expected devices or devices.jobs "
        "(fleethub has no module twins)"
    )
    assert error.position == 14


def test_doc_example_devices_jobs_with_created_time_utc() -> None:
    same(
        query(
            "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'd1' AND devices.jobs.jobType = "
            "'scheduleUpdateTwin' AND devices.jobs.status = 'completed' AND devices.jobs.createdTimeUtc > '2016-09-01'"
        ),
        Query(
            Source.JOBS,
            Star(),
            where=and_(
                and_(eq(DEVICE_ID, lit("d1")), eq(Field(FieldRoot.JOB_TYPE), lit("scheduleUpdateTwin"))),
                and_(eq(STATUS, lit("completed")), binary(">", Field(FieldRoot.CREATED_TIME), lit("2016-09-01"))),
            ),
        ),
    )


# -- parse_condition (a job's queryCondition) ------------------------------------------------


def test_condition_star_means_every_device() -> None:
    assert parse_condition("*") is None
    assert parse_condition("  *\n") is None
    assert parse_condition("*", Source.JOBS) is None


def test_a_2016_preview_select_means_its_where_part() -> None:
    # The IoT Hub jobs tutorial of September 2016 passed a whole query as its queryCondition.
    assert parse_condition("SELECT * FROM devices") is None
    preview = parse_condition("select * from devices where deviceId IN ['d1', 'd2']")
    assert preview is not None
    same(strip(preview), InList(DEVICE_ID, (lit("d1"), lit("d2"))))


def test_condition_is_the_where_part() -> None:
    condition = parse_condition("deviceId IN ['d1', 'd2']")
    assert condition is not None
    same(strip(condition), InList(DEVICE_ID, (lit("d1"), lit("d2"))))
    assert condition.position == len("deviceId ")
    jobs = parse_condition("jobType = 'x'", Source.JOBS)
    assert jobs is not None
    same(strip(jobs), eq(Field(FieldRoot.JOB_TYPE), lit("x")))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SELECT deviceId FROM devices WHERE deviceId = 'a'",
            "Syntax error at line 1, column 1 (offset 0): found a query that selects more than SELECT * FROM "
            "devices, expected only the condition of a WHERE clause (a queryCondition is like deviceId IN "
            "['d1', 'd2'], or * for every device; the 2016 preview's SELECT * FROM devices [WHERE ...] is accepted "
            "too)",
        ),
        (
            "SELECT TOP 2 * FROM devices",
            "Syntax error at line 1, column 1 (offset 0): found a query that selects more than SELECT * FROM "
            "devices, expected only the condition of a WHERE clause (a queryCondition is like deviceId IN "
            "['d1', 'd2'], or * for every device; the 2016 preview's SELECT * FROM devices [WHERE ...] is accepted "
            "too)",
        ),
        (
            "SELECT * FROM devices.jobs",
            "Syntax error at line 1, column 1 (offset 0): found a query that selects more than SELECT * FROM "
            "devices, expected only the condition of a WHERE clause (a queryCondition is like deviceId IN "
            "['d1', 'd2'], or * for every device; the 2016 preview's SELECT * FROM devices [WHERE ...] is accepted "
            "too)",
        ),
        (
            "  where deviceId = 'a'",
            "Syntax error at line 1, column 3 (offset 2): found WHERE, expected only the condition of a WHERE clause "
            "without the WHERE keyword (a queryCondition is like deviceId IN ['d1', 'd2'], or * for every device)",
        ),
        (
            "   ",
            "Syntax error at line 1, column 4 (offset 3): found an empty condition, expected a condition, "
            "or * for every device",
        ),
        (
            "deviceId = 'a' GROUP BY deviceId",
            "Syntax error at line 1, column 16 (offset 15): found 'GROUP', expected an arithmetic operator, AND, OR "
            "or end of query",
        ),
        (
            "COUNT() > 1",
            "Query error at line 1, column 1 (offset 0): found the aggregate COUNT() in a condition, expected "
            "aggregates only as whole projections (SELECT COUNT() AS n FROM devices)",
        ),
        (
            "LOWER(deviceId)",
            "Query error at line 1, column 1 (offset 0): found 'LOWER(deviceId)', a string as the condition, "
            "expected a boolean",
        ),
    ],
)
def test_condition_errors(text: str, message: str) -> None:
    assert error_of(text, condition=True).message == message


def test_condition_on_devices_jobs_takes_only_job_fields() -> None:
    error = error_of("tags.x = 1", condition=True, source=Source.JOBS)
    assert error.message.startswith("Query error at line 1, column 1 (offset 0): found the twin field 'tags.x' in a ")


# -- syntax errors: position, what was found, what was expected -----------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Syntax error at line 1, column 1 (offset 0): found end of query, expected SELECT"),
        (
            "SELECT * FROM devices WHER tags.x = 1",
            "Syntax error at line 1, column 23 (offset 22): found 'WHER', expected WHERE, GROUP BY or end of query",
        ),
        (
            "SELECT * FROM devices WHERE",
            "Syntax error at line 1, column 28 (offset 27): found end of query, expected NOT, a field, a constant "
            "or '('",
        ),
        (
            "SELECT * FROM devices WHERE tags.x =",
            "Syntax error at line 1, column 37 (offset 36): found end of query, expected a field, a constant or '('",
        ),
        (
            "SELECT FROM devices",
            "Syntax error at line 1, column 8 (offset 7): found 'FROM', expected TOP, '*', NOT, a field, a constant "
            "or '('",
        ),
        ("SELECT *", "Syntax error at line 1, column 9 (offset 8): found end of query, expected ',' or FROM"),
        (
            "SELECT * FROM",
            "Syntax error at line 1, column 14 (offset 13): found end of query, expected devices or devices.jobs",
        ),
        (
            "SELECT * FROM devices WHERE (tags.x = 1",
            "Syntax error at line 1, column 40 (offset 39): found end of query, expected an arithmetic operator, "
            "AND, OR or ')'",
        ),
        (
            "SELECT a b FROM devices",
            "Syntax error at line 1, column 10 (offset 9): found 'b', expected an operator, AS, ',' or FROM",
        ),
        (
            "SELECT * FROM devices WHERE tags.x # 1",
            "Syntax error at line 1, column 36 (offset 35): found '#', expected an operator, GROUP BY or end of query",
        ),
        (
            "SELECT * FROM devices WHERE tags.x == 1",
            "Syntax error at line 1, column 37 (offset 36): found '=', expected a field, a constant or '('",
        ),
        (
            "SELECT * FROM devices WHERE tags.x IN [1,]",
            "Syntax error at line 1, column 42 (offset 41): found ']', expected a constant",
        ),
        (
            "SELECT * FROM devices WHERE tags.x IN [tags.y]",
            "Syntax error at line 1, column 40 (offset 39): found 'tags', expected a constant or ']'",
        ),
        (
            "SELECT * FROM devices WHERE tags.x IN 1",
            "Syntax error at line 1, column 39 (offset 38): found '1', expected '['",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = [1]",
            "Syntax error at line 1, column 38 (offset 37): found '[', expected a field, a constant or '('",
        ),
        (
            "SELECT * FROM devices WHERE tags. = 1",
            "Syntax error at line 1, column 35 (offset 34): found '=', expected a name",
        ),
        (
            "SELECT * FROM devices WHERE tags.x.5 = 1",
            "Syntax error at line 1, column 36 (offset 35): found '5', expected a name ([[5]] for one that starts "
            "with a digit)",
        ),
        ("SELECT TOP * FROM devices", "Syntax error at line 1, column 12 (offset 11): found '*', expected a number"),
        (
            "SELECT * FROM devices GROUP tags.x",
            "Syntax error at line 1, column 29 (offset 28): found 'tags', expected BY",
        ),
        (
            "SELECT deviceId AS FROM devices",
            "Syntax error at line 1, column 20 (offset 19): found 'FROM', expected an alias",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = 1 ORDER BY deviceId",
            "Syntax error at line 1, column 40 (offset 39): found 'ORDER', expected an arithmetic operator, AND, OR, "
            "GROUP BY or end of query",
        ),
        (
            "SELECT * FROM devices\nWHERE tags.x = 1\n  AND AND",
            "Syntax error at line 3, column 7 (offset 45): found 'AND', expected NOT, a field, a constant or '('",
        ),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    error = error_of(text)
    assert error.message == message
    assert error.message.count(f"(offset {error.position})") == 1


@pytest.mark.parametrize(
    ("condition", "offset", "message"),
    [
        ("tags.x = 'abc", 37, "found the unterminated string ''abc', expected a closing '"),
        ('tags.x = "abc', 37, "found the unterminated string '\"abc', expected a closing \""),
        ("tags.x = 'abc\\'", 37, "found the unterminated string ''abc\\'', expected a closing '"),
        ("tags.[[abc = 1", 33, "found the unterminated name '[[abc = 1', expected a closing ]]"),
        (
            "tags.x = 'a\\qb'",
            39,
            "found the escape '\\q', expected one of \\' \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX",
        ),
        ("tags.x = 'a\\u12'", 39, "found the escape '\\u12', expected \\u and four hex digits"),
        ("tags.x = 'a\\u12G4'", 39, "found the escape '\\u12G4', expected \\u and four hex digits"),
        (
            "tags.x = '\\ud83d'",
            38,
            "found the lone surrogate \\ud83d, expected a complete character "
            "(a \\uD800-\\uDBFF escape followed by a \\uDC00-\\uDFFF one)",
        ),
        (
            "tags.x = '\\ude00\\ud83d'",
            38,
            "found the lone surrogate \\ude00, expected a complete character "
            "(a \\uD800-\\uDBFF escape followed by a \\uDC00-\\uDFFF one)",
        ),
        ("tags.x = 'a\\u0000'", 39, "found the NUL character, expected text without it"),
        ("tags.x = 'a\x00'", 39, "found the NUL character, expected text without it"),
        (
            "tags.x = '\ud800'",
            38,
            "found the lone surrogate \\ud800, expected a complete character "
            "(a \\uD800-\\uDBFF escape followed by a \\uDC00-\\uDFFF one)",
        ),
        ("tags.x = 0xZZ", 37, "found the malformed hex number '0xZZ', expected 0x followed by hex digits (0x1F)"),
        ("tags.x = 0x", 37, "found the malformed hex number '0x', expected 0x followed by hex digits (0x1F)"),
        (
            "tags.x = 12abc",
            37,
            "found the malformed number '12abc', expected digits (12, 1.5, .5, 1e3) or a hex number (0x1F)",
        ),
        (
            "tags.x = 1e",
            37,
            "found the malformed number '1e', expected digits (12, 1.5, .5, 1e3) or a hex number (0x1F)",
        ),
        (
            "tags.x = 9223372036854775808",
            37,
            "found the integer '9223372036854775808', expected an integer between -9223372036854775808 and "
            "9223372036854775807",
        ),
        (
            "tags.x IN [-9223372036854775809]",
            39,
            "found the integer '-9223372036854775809', expected an integer between -9223372036854775808 and "
            "9223372036854775807",
        ),
        ("tags.x = 1e999", 37, "found the number '1e999', expected a number within the 64-bit floating-point range"),
        ("tags.[[]] = 1", 33, "found [[]], expected a name inside [[ ]]"),
    ],
)
def test_constant_and_name_errors(condition: str, offset: int, message: str) -> None:
    error = error_of(f"SELECT * FROM devices WHERE {condition}")
    assert error.message == f"Syntax error at line 1, column {offset + 1} (offset {offset}): {message}"
    assert error.position == offset


def test_a_huge_integer_is_refused_without_converting_it() -> None:
    error = error_of("SELECT * FROM devices WHERE tags.x = " + "1" * 5000)
    assert "found the integer '1111" in error.message
    assert error.position == 37


def test_found_text_is_shortened_and_control_characters_are_escaped() -> None:
    error = error_of("SELECT * FROM devices WHERE tags.x = 1 'a\x01" + "b" * 100 + "'")
    assert error.message == (
        "Syntax error at line 1, column 40 (offset 39): found ''a\\u0001bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb...', "
        "expected an arithmetic operator, AND, OR, GROUP BY or end of query"
    )


# -- query errors: fields, functions, aggregates, shapes -----------------------------------


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        (
            "SELECT * FROM devices WHERE foo = 1",
            28,
            "found the unknown field 'foo', expected deviceId, status, connectionState, lastActivityTime, etag, "
            "version, tags..., properties.desired... or properties.reported...; did you mean tags.foo?",
        ),
        (
            "SELECT * FROM devices WHERE location.region = 'US'",
            28,
            "found the unknown field 'location.region', expected deviceId, status, connectionState, lastActivityTime, "
            "etag, version, tags..., properties.desired... or properties.reported...; "
            "did you mean tags.location.region?",
        ),
        (
            "SELECT * FROM devices WHERE devicId = 'a'",
            28,
            "found the unknown field 'devicId', expected deviceId, status, connectionState, lastActivityTime, etag, "
            "version, tags..., properties.desired... or properties.reported...; did you mean deviceId?",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = undefined",
            37,
            "found undefined, expected a value (to test for a missing field, use IS_DEFINED(x) or NOT IS_DEFINED(x))",
        ),
        (
            "SELECT * FROM devices WHERE properties.foo = 1",
            39,
            "found 'properties.foo', expected properties.desired or properties.reported",
        ),
        (
            "SELECT * FROM devices WHERE IS_DEFINED(properties)",
            39,
            "found 'properties', expected properties.desired or properties.reported",
        ),
        (
            "SELECT * FROM devices WHERE deviceId.x = 1",
            37,
            "found 'deviceId.x', expected deviceId alone (deviceId has no fields below it)",
        ),
        (
            "SELECT * FROM devices WHERE tags.$metadata = 1",
            33,
            "found '$metadata', expected a name ($version is the only $ name, directly below properties.desired "
            "or properties.reported)",
        ),
        (
            "SELECT * FROM devices WHERE properties.reported.a.$version = 1",
            50,
            "found '$version', expected a name ($version is the only $ name, directly below properties.desired "
            "or properties.reported)",
        ),
        (
            "SELECT * FROM devices WHERE properties.reported.$Version = 1",
            48,
            "found '$Version', expected a name ($version is the only $ name, directly below properties.desired "
            "or properties.reported)",
        ),
        (
            "SELECT * FROM devices WHERE jobId = 'j'",
            28,
            "found the devices.jobs field 'jobId' in a query FROM devices, expected a device field "
            "(query FROM devices.jobs for job fields)",
        ),
        (
            "SELECT * FROM devices WHERE devices.jobs.jobId = 'j'",
            28,
            "found the devices.jobs field 'devices.jobs.jobId' in a query FROM devices, expected a device field "
            "(query FROM devices.jobs for job fields)",
        ),
        (
            "SELECT * FROM devices WHERE devices.modules.x = 1",
            28,
            "found devices.modules, expected a device field (fleethub has no module twins)",
        ),
        (
            "SELECT * FROM devices.jobs WHERE tags.x = 1",
            33,
            "found the twin field 'tags.x' in a query FROM devices.jobs, expected deviceId, jobId, jobType, status, "
            "startTimeUtc, endTimeUtc, createdDateTimeUtc or lastUpdatedDateTimeUtc "
            "(IoT Hub allows no twin fields on devices.jobs)",
        ),
        (
            "SELECT * FROM devices.jobs WHERE properties.reported.x = 1",
            33,
            "found the twin field 'properties.reported.x' in a query FROM devices.jobs, expected deviceId, jobId, "
            "jobType, status, startTimeUtc, endTimeUtc, createdDateTimeUtc or lastUpdatedDateTimeUtc "
            "(IoT Hub allows no twin fields on devices.jobs)",
        ),
        (
            "SELECT * FROM devices.jobs WHERE jobTyp = 'x'",
            33,
            "found the unknown field 'jobTyp', expected deviceId, jobId, jobType, status, startTimeUtc, endTimeUtc, "
            "createdDateTimeUtc or lastUpdatedDateTimeUtc; did you mean jobType?",
        ),
        (
            "SELECT * FROM devices.jobs WHERE devices.jobId = 'x'",
            33,
            "found 'devices.jobId', expected a devices.jobs field, bare or as devices.jobs.<field>: deviceId, jobId, "
            "jobType, status, startTimeUtc, endTimeUtc, createdDateTimeUtc or lastUpdatedDateTimeUtc",
        ),
        (
            "SELECT * FROM devices.jobs WHERE jobId.x = 'x'",
            39,
            "found 'jobId.x', expected a devices.jobs field alone (job fields have no fields below them)",
        ),
        ("SELECT * FROM twins", 14, "found 'twins', expected devices or devices.jobs"),
        (
            "SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'a')",
            28,
            "found the unknown function 'STARTS_WITH', expected one of IS_DEFINED, IS_NULL, IS_STRING, IS_NUMBER, "
            "IS_BOOL, IS_OBJECT, IS_ARRAY, STARTSWITH, ENDSWITH, CONTAINS, ARRAY_CONTAINS, LOWER, UPPER, LENGTH; "
            "did you mean STARTSWITH?",
        ),
        (
            "SELECT * FROM devices WHERE CONCAT(deviceId, 'a') = 'b'",
            28,
            "found the unknown function 'CONCAT', expected one of IS_DEFINED, IS_NULL, IS_STRING, IS_NUMBER, "
            "IS_BOOL, IS_OBJECT, IS_ARRAY, STARTSWITH, ENDSWITH, CONTAINS, ARRAY_CONTAINS, LOWER, UPPER, LENGTH",
        ),
        (
            "SELECT * FROM devices WHERE COUNT() > 1",
            28,
            "found the aggregate COUNT() in WHERE, expected aggregates only as whole projections "
            "(SELECT COUNT() AS n FROM devices)",
        ),
        (
            "SELECT COUNT() + 1 FROM devices",
            7,
            "found the aggregate COUNT() inside an expression, expected aggregates only as whole projections "
            "(SELECT COUNT() AS n FROM devices)",
        ),
        (
            "SELECT SUM(MAX(tags.x)) FROM devices",
            11,
            "found the aggregate MAX() inside another aggregate, expected aggregates only as whole projections "
            "(SELECT COUNT() AS n FROM devices)",
        ),
        (
            "SELECT tags.x, COUNT() FROM devices GROUP BY LOWER(SUM(tags.y))",
            51,
            "found the aggregate SUM() in GROUP BY, expected aggregates only as whole projections "
            "(SELECT COUNT() AS n FROM devices)",
        ),
        ("SELECT COUNT(tags.x) FROM devices", 7, "found an argument to COUNT, expected COUNT() (it counts rows)"),
        ("SELECT COUNT(1, 2) FROM devices", 7, "found 2 arguments to COUNT, expected none: COUNT()"),
        ("SELECT AVG() FROM devices", 7, "found 0 arguments to AVG, expected 1"),
        ("SELECT MAX(tags.x, tags.y) FROM devices", 7, "found 2 arguments to MAX, expected 1"),
        ("SELECT SUM('a') FROM devices", 11, "found the string 'a' as the argument of SUM, expected a number"),
        (
            "SELECT *, deviceId FROM devices",
            7,
            "found * next to other projections, expected either SELECT * or a list of projections",
        ),
        ("SELECT TOP 0 * FROM devices", 11, "found TOP '0', expected a positive integer"),
        ("SELECT TOP 2.5 * FROM devices", 11, "found TOP '2.5', expected a positive integer"),
        (
            "SELECT deviceId FROM devices GROUP BY deviceId",
            38,
            "found GROUP BY without an aggregate, expected COUNT(), AVG, SUM, MIN or MAX among the projections",
        ),
        (
            "SELECT * FROM devices GROUP BY deviceId",
            31,
            "found SELECT * with GROUP BY, expected the GROUP BY expressions and aggregates "
            "(COUNT(), AVG, SUM, MIN, MAX) as projections",
        ),
        (
            "SELECT tags.x, COUNT() FROM devices GROUP BY tags.y",
            7,
            "found the projection 'tags.x' next to an aggregate, expected an aggregate or one of the GROUP BY "
            "expressions",
        ),
        (
            "SELECT deviceId, COUNT() FROM devices",
            7,
            "found the projection 'deviceId' next to an aggregate, expected an aggregate or GROUP BY deviceId",
        ),
        ("SELECT COUNT() FROM devices GROUP BY 1", 37, "found GROUP BY '1', expected an expression with a field"),
        (
            "SELECT deviceId FROM devices.jobs",
            7,
            "found a projection on devices.jobs, expected SELECT * (IoT Hub allows only SELECT * there)",
        ),
        (
            "SELECT COUNT() FROM devices.jobs",
            7,
            "found a projection on devices.jobs, expected SELECT * (IoT Hub allows only SELECT * there)",
        ),
    ],
)
def test_query_errors(text: str, offset: int, message: str) -> None:
    error = error_of(text)
    assert error.message == f"Query error at line 1, column {offset + 1} (offset {offset}): {message}"
    assert error.position == offset


# -- type errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "offset", "message"),
    [
        ("STARTSWITH(deviceId)", 28, "found 1 argument to STARTSWITH, expected 2 arguments"),
        ("IS_DEFINED(tags.x, tags.y)", 28, "found 2 arguments to IS_DEFINED, expected 1 argument"),
        ("IS_NULL()", 28, "found 0 arguments to IS_NULL, expected 1 argument"),
        ("STARTSWITH(deviceId, 3)", 49, "found the number 3 as the second argument of STARTSWITH, expected a string"),
        ("ENDSWITH(true, 'a')", 37, "found the boolean true as the first argument of ENDSWITH, expected a string"),
        ("CONTAINS(deviceId, null)", 47, "found null as the second argument of CONTAINS, expected a string"),
        ("LENGTH(5) > 1", 35, "found the number 5 as the argument of LENGTH, expected a string"),
        (
            "LOWER(LENGTH(deviceId)) = 'a'",
            34,
            "found 'LENGTH(deviceId)', a number as the argument of LOWER, expected a string",
        ),
        (
            "ARRAY_CONTAINS('x', 1)",
            43,
            "found the string 'x' as the first argument of ARRAY_CONTAINS, expected an array field",
        ),
        (
            "ARRAY_CONTAINS(LOWER(tags.x), 1)",
            43,
            "found 'LOWER(tags.x)', a string as the first argument of ARRAY_CONTAINS, expected an array field",
        ),
        ("'a' + 1 = 2", 28, "found the string 'a' as an operand of '+', expected a number"),
        ("tags.x * true = 2", 37, "found the boolean true as an operand of '*', expected a number"),
        ("tags.x % null = 2", 37, "found null as an operand of '%', expected a number"),
        ("-'a' = tags.x", 29, "found the string 'a' after unary '-', expected a number"),
        ("(tags.x = 1) + 1 = 2", 36, "found 'tags.x = 1', a boolean as an operand of '+', expected a number"),
        ("NOT 'x'", 32, "found the string 'x' after NOT, expected a boolean"),
        ("NOT LENGTH(deviceId)", 32, "found 'LENGTH(deviceId)', a number after NOT, expected a boolean"),
        ("tags.x AND 3", 39, "found the number 3 as an operand of AND, expected a boolean"),
        ("'a' OR tags.x", 28, "found the string 'a' as an operand of OR, expected a boolean"),
        ("3", 28, "found the number 3 as the condition, expected a boolean"),
        ("null", 28, "found null as the condition, expected a boolean"),
        ("tags.x + 1", 35, "found 'tags.x + 1', a number as the condition, expected a boolean"),
        (
            "'a' = 1",
            32,
            "found the string 'a' = the number 1, expected two values of the same type "
            "(values of different types never compare)",
        ),
        (
            "LENGTH(deviceId) < 'abc'",
            45,
            "found 'LENGTH(deviceId)', a number < the string 'abc', expected two values of the same type "
            "(values of different types never compare)",
        ),
        (
            "true != null",
            33,
            "found the boolean true != null, expected two values of the same type "
            "(values of different types never compare)",
        ),
        (
            "'a' IN ['a', 1]",
            41,
            "found the number 1 in the IN list of the string 'a', expected a string "
            "(values of different types never compare)",
        ),
        (
            "LENGTH(deviceId) NIN [1, 'x']",
            53,
            "found the string 'x' in the NIN list of 'LENGTH(deviceId)', a number, expected a number "
            "(values of different types never compare)",
        ),
        ("tags.x IN []", 35, "found an empty list after IN, expected at least one constant"),
    ],
)
def test_type_errors(condition: str, offset: int, message: str) -> None:
    error = error_of(f"SELECT * FROM devices WHERE {condition}")
    assert error.message == f"Query error at line 1, column {offset + 1} (offset {offset}): {message}"
    assert error.position == offset


@pytest.mark.parametrize(
    "condition",
    [
        "tags.x = 'a'",
        "tags.x = tags.y",
        "tags.x",
        "NOT tags.x",
        "tags.x AND tags.y",
        "true",
        "false OR tags.x",
        "tags.x + 1 = 2",
        "-tags.x < 0",
        "'a' = 'b'",
        "1 < 2.5",
        "null = null",
        "true = false",
        "tags.x IN ['a', 1, true, null]",
        "'a' IN ['a', 'b']",
        "LENGTH(tags.x) + 1 > 2",
        "STARTSWITH(LOWER(deviceId), 'ab')",
        "ARRAY_CONTAINS(tags.list, 'a')",
        "ARRAY_CONTAINS(tags.list, LOWER(tags.y))",
        "IS_DEFINED(tags.x) AND NOT IS_NULL(tags.x)",
        "IS_STRING('x')",
        "properties.reported.x = properties.desired.x",
        "tags.x = (tags.y = 1)",
    ],
)
def test_well_typed_conditions_pass(condition: str) -> None:
    parse_query(f"SELECT * FROM devices WHERE {condition}")


def test_grouping_may_select_keys_with_their_aliases_and_aggregates_in_any_order() -> None:
    parse_query("SELECT COUNT() AS n, tags.a AS a, LOWER(tags.b) FROM devices GROUP BY LOWER(tags.b), tags.a")
    parse_query("SELECT COUNT() FROM devices GROUP BY tags.a")
    parse_query("SELECT AVG(properties.reported.t * 2), SUM(LENGTH(deviceId)) FROM devices")


# -- limits ---------------------------------------------------------------------------------


def test_queries_up_to_8192_characters_parse_and_longer_ones_are_refused() -> None:
    head = "SELECT * FROM devices WHERE tags.x = '"
    exact = head + "a" * (MAX_QUERY_LENGTH - len(head) - 1) + "'"
    assert len(exact) == MAX_QUERY_LENGTH
    parse_query(exact)
    error = error_of(exact + " ")
    assert error.message == (
        "Syntax error at line 1, column 8193 (offset 8192): found a query of 8193 characters, expected at most 8192"
    )
    assert error.position == MAX_QUERY_LENGTH
    assert error_of("(" * 100_000, condition=True).position == MAX_QUERY_LENGTH


@pytest.mark.parametrize(
    "condition",
    [
        "(" * 3000 + "tags.x" + ")" * 3000,
        "NOT " * 1500 + "tags.x",
        "-" * 4000 + "tags.x = 1",
        "tags.x + " * 800 + "1 = 2",
        "LOWER(" * 900 + "tags.x" + ")" * 900 + " = 'a'",
    ],
)
def test_deep_nesting_is_refused_cleanly(condition: str) -> None:
    error = error_of(f"SELECT * FROM devices WHERE {condition}")
    assert f"found an expression nested more than {MAX_DEPTH} levels deep" in error.message


def test_nesting_up_to_the_limit_parses() -> None:
    condition = "NOT " * (MAX_DEPTH - 2) + "tags.x = 1"
    parsed = parse_condition(condition)
    assert parsed is not None
    assert depth(parsed) == MAX_DEPTH
    error = error_of("NOT " + condition, condition=True)
    assert "nested more than 64 levels deep" in error.message


# -- the checker on hand-built trees --------------------------------------------------------


def test_check_query_rejects_hand_built_trees_the_parser_never_makes() -> None:
    with pytest.raises(QuerySyntaxError, match=r"found the field tags, expected a field of devices\.jobs"):
        check_query(Query(Source.JOBS, Star(), where=eq(X, lit(1))))
    with pytest.raises(QuerySyntaxError, match="found TOP 0, expected a positive integer"):
        check_query(Query(Source.DEVICES, Star(), top=0))
    with pytest.raises(QuerySyntaxError, match="found no projections"):
        check_query(Query(Source.DEVICES, ()))
    with pytest.raises(QuerySyntaxError, match=r"found GROUP BY on devices\.jobs"):
        check_query(Query(Source.JOBS, Star(), group_by=(DEVICE_ID,)))
    deep: Expr = X
    for _ in range(100):
        deep = not_(deep)
    with pytest.raises(QuerySyntaxError, match="nested more than 64 levels"):
        check_condition(deep)
    checked = Query(Source.DEVICES, Star(), where=eq(X, lit(1)))
    assert check_query(checked) is checked


def test_check_messages_name_the_position_in_the_given_text() -> None:
    text = "line one\n  tags.x + 'a'"
    condition = BinaryOp(BinaryOperator.ADD, Field(FieldRoot.TAGS, ("x",), 11), Literal("a", 20), position=18)
    with pytest.raises(QuerySyntaxError) as caught:
        check_query(Query(Source.DEVICES, (Projection(condition),)), text)
    assert caught.value.message.startswith("Query error at line 2, column 12 (offset 20): found the string 'a'")


def test_query_syntax_error_is_a_bad_request() -> None:
    error = error_of("SELECT")
    assert isinstance(error, BadRequestError)
    assert error.code == "BadRequest"


# -- the printer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("select * from devices", "SELECT * FROM devices"),
        ("select top 3 * from DEVICES.JOBS where JOBID = 'j'", "SELECT TOP 3 * FROM devices.jobs WHERE jobId = 'j'"),
        (
            "SELECT deviceid AS [[my id]], count() FROM devices GROUP BY deviceid",
            "SELECT deviceId AS [[my id]], COUNT() FROM devices GROUP BY deviceId",
        ),
        (
            "SELECT * FROM devices WHERE (tags.a OR tags.b) AND NOT (tags.c AND tags.d)",
            "SELECT * FROM devices WHERE (tags.a OR tags.b) AND NOT (tags.c AND tags.d)",
        ),
        (
            "SELECT * FROM devices WHERE tags.a OR tags.b OR tags.c OR tags.d OR tags.e",
            "SELECT * FROM devices WHERE tags.a OR tags.b OR tags.c OR tags.d OR tags.e",
        ),
        (
            "SELECT * FROM devices WHERE tags.a OR (tags.b OR tags.c)",
            "SELECT * FROM devices WHERE tags.a OR (tags.b OR tags.c)",
        ),
        (
            "SELECT * FROM devices WHERE tags.x - (1 - 2) * -3 = -(4) % 0x10",
            "SELECT * FROM devices WHERE tags.x - (1 - 2) * -3 = -(4) % 16",
        ),
        (
            'SELECT * FROM devices WHERE tags.group = "it\'s\\n" AND properties.reported.$version > 1.50',
            "SELECT * FROM devices WHERE tags.[[group]] = 'it\\'s\\u000a' AND properties.reported.$version > 1.5",
        ),
        (
            "SELECT * FROM devices WHERE tags.x nin [1, 'a', TRUE, NULL] AND is_defined(tags.[[a b]])",
            "SELECT * FROM devices WHERE tags.x NIN [1, 'a', true, null] AND IS_DEFINED(tags.[[a b]])",
        ),
        (
            "SELECT * FROM devices WHERE (tags.x = 1) = (tags.y < 2)",
            "SELECT * FROM devices WHERE (tags.x = 1) = (tags.y < 2)",
        ),
    ],
)
def test_printer(text: str, printed: str) -> None:
    assert format_query(parse_query(text)) == printed
    same(query(printed), query(text))


def test_printer_refuses_names_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        format_expr(tag("a]]b"))
    with pytest.raises(ValueError, match="has no query text"):
        format_expr(lit(float("inf")))


# -- modules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [parser, check, printer])
def test_every_exported_name_exists(module: ModuleType) -> None:
    names = module.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), name


def test_messages_never_hold_text_that_cannot_be_encoded() -> None:
    error = error_of("SELECT * FROM devices WHERE tags.x = 1 \ud800")
    error.message.encode("utf-8")
    assert re.search(r"found '\\ud800'", error.message)


@pytest.mark.parametrize("condition", ['tags.[[a"b]] = 1', "properties.reported.[[x\\y]] = 1"])
def test_names_sql_cannot_spell_are_refused_at_parse_time(condition: str) -> None:
    # A job's queryCondition must fail when the job is created, not when it starts.
    with pytest.raises(QuerySyntaxError, match="unsupported character in property name"):
        parse_condition(condition)
