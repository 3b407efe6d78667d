"""Fuzzing the twin query parser: only QuerySyntaxError ever comes out, and printed ASTs read back."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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
from hub.query.check import MAX_DEPTH, depth, without_positions
from hub.query.parser import MAX_QUERY_LENGTH, parse_condition, parse_query
from hub.query.printer import format_expr, format_query

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

strip = without_positions


def assert_query_error(text: str, error: QuerySyntaxError) -> None:
    """The error is well-formed: a position inside the text, named in the message, printable as UTF-8."""
    assert isinstance(error.position, int)
    assert 0 <= error.position <= max(len(text), MAX_QUERY_LENGTH)
    assert re.match(r"(Syntax|Query) error at line \d+, column \d+ \(offset \d+\): found .+, expected ", error.message)
    assert f"(offset {error.position})" in error.message
    error.message.encode("utf-8")  # no lone surrogates: the API returns it as JSON


def parses_or_fails_cleanly(text: str) -> None:
    """Parsing ``text`` as a query and as a condition either fails with a well-formed error or
    gives a tree that prints to a text that parses to the same tree."""
    try:
        query = parse_query(text)
    except QuerySyntaxError as error:
        assert_query_error(text, error)
    else:
        assert repr(strip(parse_query(format_query(query)))) == repr(strip(query))
    for source in Source:
        try:
            condition = parse_condition(text, source)
        except QuerySyntaxError as error:
            assert_query_error(text, error)
        else:
            if condition is not None:
                again = parse_condition(format_expr(condition), source)
                assert again is not None
                assert repr(strip(again)) == repr(strip(condition))


# -- random strings ----------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=200))
def test_random_text_only_raises_query_errors(text: str) -> None:
    parses_or_fails_cleanly(text)


# Lone surrogates and control characters arrive in JSON bodies; hypothesis leaves them out by default.
ODD_TEXT = st.text(
    alphabet=st.characters(categories=["Cs", "Cc", "Cf", "Lu", "Ll", "Nd", "Po", "Sm", "Zs"]), max_size=60
)


@FUZZ
@given(ODD_TEXT)
def test_random_text_with_surrogates_and_controls_only_raises_query_errors(text: str) -> None:
    parses_or_fails_cleanly(text)
    parses_or_fails_cleanly(f"SELECT * FROM devices WHERE tags.x = '{text}'")
    parses_or_fails_cleanly(f"SELECT * FROM devices WHERE tags.[[{text}]] = 1")


@FUZZ
@given(st.text(max_size=120) | ODD_TEXT)
def test_random_text_after_a_valid_prefix_only_raises_query_errors(text: str) -> None:
    parses_or_fails_cleanly("SELECT * FROM devices WHERE " + text)
    parses_or_fails_cleanly("SELECT " + text)


# -- token soups -------------------------------------------------------------------------

KEYWORDS = [
    "SELECT", "select", "Top", "TOP", "FROM", "from", "WHERE", "where", "GROUP", "BY", "group by", "AS", "as",
    "AND", "and", "OR", "or", "NOT", "not", "IN", "in", "NIN", "nin", "true", "FALSE", "null", "undefined",
]  # fmt: skip
FUNCTIONS = [
    "COUNT", "count", "AVG", "SUM", "MIN", "MAX", "IS_DEFINED", "is_null", "IS_STRING", "STARTSWITH", "endswith",
    "CONTAINS", "ARRAY_CONTAINS", "LOWER", "UPPER", "LENGTH", "STARTS_WITH", "CONCAT",
]  # fmt: skip
FIELDS = [
    "deviceId", "DEVICEID", "status", "connectionState", "lastActivityTime", "etag", "version", "tags", "tags.x",
    "Tags.a.b", "tags.[[group]]", "tags.group", "properties", "properties.desired", "properties.reported.x",
    "properties.reported.$version", "properties.desired.$metadata", "$version", "[[x]]", "[[", "]]", "[[]]",
    "foo", "jobId", "jobType", "createdTimeUtc", "createdDateTimeUtc", "devices", "devices.jobs",
    "devices.modules", "devices.jobs.deviceId", "devices.deviceId", "devices.tags.x", ".", "x",
]  # fmt: skip
OPERATORS = ["=", "!=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "(", ")", "[", "]", ",", "!", "==", "#"]
CONSTANTS = [
    "'a'", '"b"', "'it\\'s'", "'\\u00e9'", "'\\ud83d\\ude00'", "'\\ud800'", "'\\q'", "'\\u12'", "'\\u0000'",
    "'unterminated", '"', "0", "1", "-1", "42", "1.5", ".5", "1e3", "1E-3", "1e999", "0x1F", "0xZZ", "0x",
    "12abc", "99999999999999999999", "'\x00'", "'\ud800'", "0.0", "-0",
]  # fmt: skip
TOKENS = st.sampled_from(KEYWORDS + FUNCTIONS + FIELDS + OPERATORS + CONSTANTS)
SEPARATORS = st.sampled_from([" ", " ", " ", "", "\n", "\t"])


@st.composite
def token_soups(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(TOKENS, max_size=25))
    parts: list[str] = []
    for token in tokens:
        parts.append(token)
        parts.append(draw(SEPARATORS))
    return "".join(parts)


@FUZZ
@given(token_soups())
def test_token_soups_only_raise_query_errors(text: str) -> None:
    parses_or_fails_cleanly(text)


@FUZZ
@given(token_soups(), st.sampled_from(["SELECT * FROM devices WHERE ", "SELECT ", "SELECT * FROM devices.jobs WHERE "]))
def test_token_soups_after_a_valid_prefix_only_raise_query_errors(text: str, prefix: str) -> None:
    parses_or_fails_cleanly(prefix + text)


# -- round trip: well-typed ASTs print to text that parses back to them ------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
# '"' and '\\' are refused in property names (SQLite JSON paths cannot spell them).
ODD_NAMES = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters='\x00"\\'), min_size=1, max_size=6
).filter(lambda s: "]]" not in s and not s.endswith("]"))
SEGMENTS = NAMES | ODD_NAMES | st.sampled_from(["group", "select", "in", "true", "$version", "[x", "a]b"])
PATHS = st.lists(SEGMENTS, max_size=3).map(tuple)

DEVICE_IDENTITY = [
    FieldRoot.DEVICE_ID, FieldRoot.STATUS, FieldRoot.CONNECTION_STATE, FieldRoot.LAST_ACTIVITY_TIME,
    FieldRoot.ETAG, FieldRoot.VERSION,
]  # fmt: skip
JOB_FIELDS = [
    FieldRoot.DEVICE_ID, FieldRoot.JOB_ID, FieldRoot.JOB_TYPE, FieldRoot.STATUS, FieldRoot.START_TIME,
    FieldRoot.END_TIME, FieldRoot.CREATED_TIME, FieldRoot.LAST_UPDATED_TIME,
]  # fmt: skip

DEVICE_FIELDS = st.one_of(
    st.sampled_from(DEVICE_IDENTITY).map(Field),
    st.builds(Field, st.just(FieldRoot.TAGS), PATHS),
    st.builds(Field, st.sampled_from([FieldRoot.DESIRED, FieldRoot.REPORTED]), PATHS),
    st.builds(Field, st.sampled_from([FieldRoot.DESIRED, FieldRoot.REPORTED]), st.just(("$version",))),
)
JOB_FIELD_EXPRS = st.sampled_from(JOB_FIELDS).map(Field)

STRINGS = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
NUMBERS = INTS | FLOATS


def literal(
    values: st.SearchStrategy[str] | st.SearchStrategy[int | float] | st.SearchStrategy[bool],
) -> st.SearchStrategy[Literal]:
    return values.map(Literal)


NUMBER_LITERALS = literal(NUMBERS)
STRING_LITERALS = literal(STRINGS)
BOOL_LITERALS = literal(st.booleans())
NULL_LITERALS = st.just(Literal(None))
CONSTANT_LITERALS = NUMBER_LITERALS | STRING_LITERALS | BOOL_LITERALS | NULL_LITERALS

ARITHMETIC = [BinaryOperator.ADD, BinaryOperator.SUB, BinaryOperator.MUL, BinaryOperator.DIV, BinaryOperator.MOD]
COMPARISONS = [BinaryOperator.EQ, BinaryOperator.NE, BinaryOperator.LT, BinaryOperator.GT, BinaryOperator.LE,
               BinaryOperator.GE]  # fmt: skip
TYPE_TESTS = [FunctionName.IS_DEFINED, FunctionName.IS_NULL, FunctionName.IS_STRING, FunctionName.IS_NUMBER,
              FunctionName.IS_BOOL, FunctionName.IS_OBJECT, FunctionName.IS_ARRAY]  # fmt: skip
STRING_TESTS = [FunctionName.STARTSWITH, FunctionName.ENDSWITH, FunctionName.CONTAINS]


def typed_exprs(fields: st.SearchStrategy[Field]) -> dict[str, st.SearchStrategy[Expr]]:
    """Well-typed expression strategies by static type: number, string, boolean, anything."""
    numbers: st.SearchStrategy[Expr] = st.deferred(lambda: st.one_of(
        NUMBER_LITERALS,
        fields,
        st.builds(lambda s: Call(FunctionName.LENGTH, (s,)), strings),
        st.builds(BinaryOp, st.sampled_from(ARITHMETIC), numbers, numbers),
        st.builds(lambda n: UnaryOp(UnaryOperator.NEG, n), numbers),
    ))  # fmt: skip
    strings: st.SearchStrategy[Expr] = st.deferred(lambda: st.one_of(
        STRING_LITERALS,
        fields,
        st.builds(lambda f, s: Call(f, (s,)), st.sampled_from([FunctionName.LOWER, FunctionName.UPPER]), strings),
    ))  # fmt: skip
    anything: st.SearchStrategy[Expr] = st.deferred(
        lambda: st.one_of(fields, numbers, strings, booleans, NULL_LITERALS)
    )
    comparisons = st.one_of(
        st.builds(BinaryOp, st.sampled_from(COMPARISONS), numbers, numbers),
        st.builds(BinaryOp, st.sampled_from(COMPARISONS), strings, strings),
        st.builds(BinaryOp, st.sampled_from(COMPARISONS), fields, anything),
        st.builds(BinaryOp, st.sampled_from(COMPARISONS), anything, fields),
    )
    in_lists = st.one_of(
        st.builds(InList, fields, st.lists(CONSTANT_LITERALS, min_size=1, max_size=4).map(tuple), st.booleans()),
        st.builds(InList, strings, st.lists(STRING_LITERALS, min_size=1, max_size=4).map(tuple), st.booleans()),
        st.builds(InList, numbers, st.lists(NUMBER_LITERALS, min_size=1, max_size=4).map(tuple), st.booleans()),
    )
    booleans: st.SearchStrategy[Expr] = st.deferred(lambda: st.one_of(
        BOOL_LITERALS,
        fields,
        comparisons,
        in_lists,
        st.builds(lambda b: UnaryOp(UnaryOperator.NOT, b), booleans),
        st.builds(BinaryOp, st.sampled_from([BinaryOperator.AND, BinaryOperator.OR]), booleans, booleans),
        st.builds(lambda f, x: Call(f, (x,)), st.sampled_from(TYPE_TESTS), anything),
        st.builds(lambda f, a, b: Call(f, (a, b)), st.sampled_from(STRING_TESTS), strings, strings),
        st.builds(lambda a, v: Call(FunctionName.ARRAY_CONTAINS, (a, v)), fields, anything),
    ))  # fmt: skip
    return {"number": numbers, "string": strings, "boolean": booleans, "any": anything}


DEVICE_EXPRS = typed_exprs(DEVICE_FIELDS)
JOB_EXPRS = typed_exprs(JOB_FIELD_EXPRS)
CONDITIONS = DEVICE_EXPRS["boolean"].filter(lambda e: depth(e) <= MAX_DEPTH)
ALIASES = st.none() | NAMES | ODD_NAMES
TOPS = st.none() | st.integers(min_value=1, max_value=2**63 - 1)


@st.composite
def queries(draw: st.DrawFn) -> Query:
    shape = draw(st.sampled_from(["star", "projections", "aggregates", "jobs"]))
    where_strategy = JOB_EXPRS["boolean"] if shape == "jobs" else DEVICE_EXPRS["boolean"]
    where = draw(st.none() | where_strategy.filter(lambda e: depth(e) <= MAX_DEPTH))
    top = draw(TOPS)
    if shape in ("star", "jobs"):
        return Query(Source.JOBS if shape == "jobs" else Source.DEVICES, Star(), where=where, top=top)
    if shape == "projections":
        exprs = draw(st.lists(DEVICE_EXPRS["any"].filter(lambda e: depth(e) <= MAX_DEPTH), min_size=1, max_size=3))
        select = tuple(Projection(expr, draw(ALIASES)) for expr in exprs)
        return Query(Source.DEVICES, select, where=where, top=top)
    keys = draw(st.lists(
        DEVICE_FIELDS | DEVICE_FIELDS.map(lambda f: Call(FunctionName.LOWER, (f,))), max_size=3, unique_by=format_expr,
    ))  # fmt: skip
    aggregates = draw(st.lists(
        st.just(AggregateCall(AggregateFunction.COUNT))
        | st.builds(
            AggregateCall,
            st.sampled_from([AggregateFunction.AVG, AggregateFunction.SUM, AggregateFunction.MIN,
                             AggregateFunction.MAX]),
            DEVICE_EXPRS["number"].filter(lambda e: depth(e) <= MAX_DEPTH),
        ),
        min_size=1, max_size=3,
    ))  # fmt: skip
    shown = draw(st.lists(st.sampled_from(keys), max_size=len(keys))) if keys else []
    items: list[Expr | AggregateCall] = [*shown, *aggregates]
    order = draw(st.permutations(items))
    select = tuple(Projection(expr, draw(ALIASES)) for expr in order)
    return Query(Source.DEVICES, select, where=where, group_by=tuple(keys), top=top)


@ROUND_TRIP
@given(CONDITIONS)
def test_printed_conditions_parse_back_to_the_same_tree(condition: Expr) -> None:
    text = format_expr(condition)
    assume(len(text) <= MAX_QUERY_LENGTH)
    parsed = parse_condition(text)
    assert parsed is not None
    assert repr(strip(parsed)) == repr(strip(condition))
    assert format_expr(parsed) == text


@ROUND_TRIP
@given(queries())
def test_printed_queries_parse_back_to_the_same_tree(query: Query) -> None:
    text = format_query(query)
    assume(len(text) <= MAX_QUERY_LENGTH)
    parsed = parse_query(text)
    assert repr(strip(parsed)) == repr(strip(query))
    assert format_query(parsed) == text
