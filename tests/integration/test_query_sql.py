"""The twin query compiler (hub.query.sql) run by SqlStore on SQLite and PostgreSQL: every
operator and function on crafted twins, undefined and type traps, unicode, hostile input,
devices.jobs, aggregates, paging and the etag column. Each case is also checked against the
reference evaluator, so a wrong expectation here cannot hide a wrong evaluator or vice versa."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hub.domain.devices import new_device
from hub.domain.jobs import DeviceJob, DeviceJobStatus, JobType, device_job_document
from hub.domain.json import JsonObject
from hub.domain.twin import PropertySet, Twin, twin_document
from hub.errors import QuerySyntaxError
from hub.ports import PresenceUpdate
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
    Literal,
    Projection,
    Query,
    Scalar,
    Source,
    Star,
)
from hub.query.evaluate import matches, run_query
from hub.query.parser import parse_condition, parse_query
from hub.query.sql import (
    DEVICE_JOBS_TABLE,
    DEVICES_TABLE,
    PG_FUNCTIONS,
    TAG_VALUES_TABLE,
    Dialect,
    compile_aggregate,
    compile_condition,
    compile_rows,
)
from hub.storage import SqlStore
from hub.storage.tables import device_jobs_table, devices_table

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

# tags, desired, reported per device
TWINS: dict[str, tuple[JsonObject, JsonObject, JsonObject]] = {
    "d-num": (
        {
            "n": 5,
            "f": 2.5,
            "one": 1.0,
            "s": "abc",
            "b": True,
            "nul": None,
            "arr": [1, "two", True, None, {"k": 1}],
            "obj": {"k": "v", "deep": {"x": 1}},
            "u": "é😀",
            "q": "it's",
        },
        {"mode": "eco"},
        {"temp": 21.5, "fw": "1.0.0"},
    ),
    "d-str": (
        {"n": "5", "f": "2.5", "s": "ABC", "b": "true", "arr": ["1", 1.0], "obj": {"k": 1}, "u": "e", "q": "it''s"},
        {"mode": "boost"},
        {"temp": 19, "fw": "1.1.0"},
    ),
    "d-float": (
        {"n": 5.0, "f": -2.5, "s": "abcdef", "b": False, "arr": [], "obj": {}, "u": "Z"},
        {},
        {"temp": -3.25},
    ),
    "d-empty": ({}, {}, {}),
}
ALL = sorted(TWINS)


async def _load(store: SqlStore) -> list[JsonObject]:
    """The crafted twins, stored; returns their documents as the store gives them back."""
    for index, (device_id, (tags, desired, reported)) in enumerate(sorted(TWINS.items())):
        await store.add_device(new_device(device_id, T0))
        twin = Twin(
            device_id,
            tags=tags,
            desired=PropertySet(desired, {}, 2 + index),
            reported=PropertySet(reported, {}, 3),
            version=2,
            revision=2,
        )
        await store.save_twin(twin, expected_revision=1)
    await store.record_presence([PresenceUpdate("d-num", None, T0)])
    twins = await store.query_twins(None, after=None, limit=100)
    return [twin_document(twin) for twin in twins]


async def _selected(store: SqlStore, text: str | Expr) -> list[str]:
    condition = parse_condition(text) if isinstance(text, str) else text
    return [twin.device_id for twin in await store.query_twins(condition, after=None, limit=100)]


async def _check(store: SqlStore, docs: list[JsonObject], cases: list[tuple[str | Expr, list[str]]]) -> None:
    """Each condition (query text, or an AST the parser would not build) selects exactly the
    expected devices in the store and in the evaluator."""
    failures = []
    for text, expected in cases:
        condition = parse_condition(text) if isinstance(text, str) else text
        reference = [doc["deviceId"] for doc in docs if matches(condition, doc)]
        got = await _selected(store, condition)
        if got != sorted(expected) or reference != sorted(expected):
            failures.append(f"{text}: store {got}, evaluator {reference}, expected {sorted(expected)}")
    assert failures == []


def _equals(field: Field, value: Scalar) -> Expr:
    return BinaryOp(BinaryOperator.EQ, field, Literal(value))


def _equals_sum(left: Expr, right: Expr, total: Scalar) -> Expr:
    return BinaryOp(BinaryOperator.EQ, BinaryOp(BinaryOperator.ADD, left, right), Literal(total))


# -- schema ------------------------------------------------------------------------------


def test_schema_constants_match_the_tables() -> None:
    for schema, table in ((DEVICES_TABLE, devices_table), (DEVICE_JOBS_TABLE, device_jobs_table)):
        assert schema.name == table.name
        assert set(schema.columns) <= set(table.c.keys())
        assert set(schema.key) == {column.name for column in table.primary_key.columns}
    # device_jobs pages in (device_id, job_id) order: an index must have exactly that order.
    indexed = [tuple(column.name for column in index.columns) for index in device_jobs_table.indexes]
    assert DEVICE_JOBS_TABLE.key in indexed


async def test_migrations_create_what_the_compiler_needs(store: SqlStore) -> None:
    def inspect(connection: sa.Connection) -> tuple[list[str], set[str]]:
        inspector = sa.inspect(connection)
        tables = inspector.get_table_names()
        columns = (
            {column["name"] for column in inspector.get_columns(TAG_VALUES_TABLE.name)}
            if TAG_VALUES_TABLE.name in tables
            else set()
        )
        return tables, columns

    async with store.engine.connect() as connection:
        tables, tag_value_columns = await connection.run_sync(inspect)
        if connection.dialect.name == "postgresql":
            query = sa.text("SELECT proname FROM pg_proc WHERE proname LIKE 'fleethub%'")
            functions = set((await connection.execute(query)).scalars())
            assert set(PG_FUNCTIONS) <= functions
            assert TAG_VALUES_TABLE.name not in tables
        else:
            assert tag_value_columns == set(TAG_VALUES_TABLE.columns)
    assert {DEVICES_TABLE.name, DEVICE_JOBS_TABLE.name} <= set(tables)


# -- safety ------------------------------------------------------------------------------

HOSTILE_CONSTANTS = ["'; DROP TABLE devices; --", "x') OR 1=1 --", "$1", "%_*", "\\'", "é😀"]
HOSTILE_NAMES = ["a'b", "x'); DROP TABLE devices; --", "p1:", "%", "a b", "$version"]


@pytest.mark.parametrize("dialect", list(Dialect))
def test_compiled_sql_holds_no_user_text(dialect: Dialect) -> None:
    for constant in HOSTILE_CONSTANTS:
        for name in HOSTILE_NAMES:
            field = Field(FieldRoot.TAGS, ("outer", name))
            condition = BinaryOp(
                BinaryOperator.OR,
                BinaryOp(BinaryOperator.EQ, field, Literal(constant)),
                BinaryOp(BinaryOperator.LT, Field(FieldRoot.REPORTED, (name,)), Literal(constant)),
            )
            query = Query(Source.DEVICES, Star(), where=condition)
            grouped = Query(
                Source.DEVICES,
                (Projection(field),),
                where=condition,
                group_by=(field,),
            )
            fragments = [
                compile_condition(condition, dialect),
                compile_rows(query, dialect, after=(constant,), limit=10),
                compile_aggregate(grouped, dialect),
            ]
            for fragment in fragments:
                assert constant not in fragment.text
                assert name not in fragment.text
                assert constant in fragment.params.values() or any(
                    constant in str(value) for value in fragment.params.values()
                )
                assert all(key.startswith("p") for key in fragment.params)


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("name", ['a"b', "a\\b"])
def test_property_names_sqlite_paths_cannot_hold_are_query_errors(dialect: Dialect, name: str) -> None:
    condition = BinaryOp(BinaryOperator.EQ, Field(FieldRoot.TAGS, ("x", name)), Literal(1))
    with pytest.raises(QuerySyntaxError, match="unsupported character in property name"):
        compile_condition(condition, dialect)


async def test_hostile_queries_run_harmlessly(store: SqlStore) -> None:
    docs = await _load(store)
    await _check(
        store,
        docs,
        [
            ("tags.[[x'); DROP TABLE devices; --]] = 'a'", []),
            ("tags.q = 'it\\'s'", ["d-num"]),
            ("tags.q = \"it''s\"", ["d-str"]),
            ("tags.s = '\\'; DROP TABLE devices; --'", []),
            ("tags.s = 'abc' OR tags.s = '\\' OR 1=1 --'", ["d-num"]),
        ],
    )
    assert await store.count_devices() == len(TWINS)


# -- operators and functions -------------------------------------------------------------


async def test_comparisons_are_typed(store: SqlStore) -> None:
    docs = await _load(store)
    await _check(
        store,
        docs,
        [
            ("tags.n = 5", ["d-num", "d-float"]),  # 5 = 5.0; the string "5" never
            ("tags.n = '5'", ["d-str"]),
            ("tags.n != 5", []),  # d-str's "5" is another type: undefined, not true
            ("tags.n != '6'", ["d-str"]),
            ("tags.n > 4", ["d-num", "d-float"]),
            ("tags.n <= 5.0", ["d-num", "d-float"]),
            ("tags.f < 0", ["d-float"]),
            ("tags.b = true", ["d-num"]),
            ("tags.b = false", ["d-float"]),
            ("tags.b = 1", []),  # booleans are never numbers
            ("tags.b != 1", []),
            ("tags.b < true", ["d-float"]),
            ("tags.nul = null", ["d-num"]),
            ("tags.nul <= null", ["d-num"]),
            ("tags.nul < null", []),
            ("tags.nul != null", []),
            ("tags.missing = null", []),
            ("tags.obj = 'v'", []),
            ("tags.obj.k = 'v'", ["d-num"]),
            ("tags.obj.deep.x = 1", ["d-num"]),
            ("tags.arr = 1", []),
            ("tags.s < 'abd'", ["d-num", "d-str", "d-float"]),  # 'ABC' < 'abc' by code point
            ("tags.s > 'ABC'", ["d-num", "d-float"]),
            ("tags.s >= 'abc'", ["d-num", "d-float"]),
            ("tags.n = tags.f", []),
            ("tags.s = tags.s", ["d-num", "d-str", "d-float"]),
            ("tags.nul = tags.nul", ["d-num"]),
            ("tags.n = properties.desired.$version + 1", ["d-num"]),  # d-num's desired $version is 4
            ("tags.n IN [5, 'x']", ["d-num", "d-float"]),
            ("tags.n IN ['5']", ["d-str"]),
            ("tags.n NIN [5]", ["d-str"]),
            ("tags.nul IN [null]", ["d-num"]),
            ("tags.nul NIN [1]", ["d-num"]),
            ("tags.obj IN ['v']", []),
            ("tags.obj NIN ['v']", []),
            ("tags.missing NIN ['v']", []),
            ("tags.b IN [true, 1]", ["d-num"]),
        ],
    )


async def test_logic_is_three_valued(store: SqlStore) -> None:
    docs = await _load(store)
    await _check(
        store,
        docs,
        [
            ("NOT (tags.n = 5)", []),  # d-str: undefined; d-empty: undefined
            ("NOT (tags.n = '5')", []),  # d-str: NOT true; the numbers: 5 = '5' is undefined
            ("NOT tags.b", ["d-float"]),
            ("tags.b", ["d-num"]),
            ("tags.b AND tags.n = 5", ["d-num"]),
            ("tags.b OR tags.n = '5'", ["d-num", "d-str"]),
            ("NOT (tags.missing = 1) OR tags.s = 'ABC'", ["d-str"]),
            ("NOT (tags.missing = 1 AND tags.b = false)", ["d-num"]),  # undefined AND false = false
            ("tags.missing = 1 OR true", ALL),
            ("NOT (tags.s = 1)", []),
            ("tags.s", []),  # a string is not a condition
            ("IS_DEFINED(tags.n) AND NOT IS_DEFINED(tags.nul)", ["d-str", "d-float"]),
        ],
    )


async def test_functions(store: SqlStore) -> None:
    docs = await _load(store)
    await _check(
        store,
        docs,
        [
            ("IS_DEFINED(tags.nul)", ["d-num"]),
            ("IS_DEFINED(tags)", ALL),
            ("IS_DEFINED(lastActivityTime)", ["d-num"]),
            ("IS_NULL(tags.nul)", ["d-num"]),
            ("IS_NULL(tags.missing)", []),
            ("NOT IS_NULL(tags.missing)", ALL),
            ("IS_STRING(tags.n)", ["d-str"]),
            ("IS_NUMBER(tags.n)", ["d-num", "d-float"]),
            ("IS_BOOL(tags.b)", ["d-num", "d-float"]),
            ("IS_OBJECT(tags.obj)", ["d-num", "d-str", "d-float"]),
            ("IS_OBJECT(properties.reported)", ALL),
            ("IS_ARRAY(tags.arr)", ["d-num", "d-str", "d-float"]),
            ("IS_ARRAY(tags.obj)", []),
            ("STARTSWITH(tags.s, 'ab')", ["d-num", "d-float"]),
            ("STARTSWITH(tags.s, '')", ["d-num", "d-str", "d-float"]),
            ("STARTSWITH(tags.n, '5')", ["d-str"]),
            ("STARTSWITH(tags.s, 'a%')", []),  # no LIKE wildcards
            ("STARTSWITH(tags.s, 'abcdefg')", []),
            ("ENDSWITH(tags.s, 'def')", ["d-float"]),
            ("ENDSWITH(tags.s, '')", ["d-num", "d-str", "d-float"]),
            ("ENDSWITH(tags.s, 'xabcdef')", []),
            ("ENDSWITH(tags.u, '😀')", ["d-num"]),
            ("CONTAINS(tags.s, 'bcd')", ["d-float"]),
            ("CONTAINS(tags.s, 'BC')", ["d-str"]),  # case-sensitive
            ("CONTAINS(tags.s, '_')", []),
            ("NOT CONTAINS(tags.n, '5')", []),  # numbers are not strings: undefined
            ("ARRAY_CONTAINS(tags.arr, 1)", ["d-num", "d-str"]),  # 1 = 1.0
            ("ARRAY_CONTAINS(tags.arr, '1')", ["d-str"]),
            ("ARRAY_CONTAINS(tags.arr, 'two')", ["d-num"]),
            ("ARRAY_CONTAINS(tags.arr, true)", ["d-num"]),
            ("ARRAY_CONTAINS(tags.arr, null)", ["d-num"]),
            ("NOT ARRAY_CONTAINS(tags.arr, 'x')", ["d-num", "d-str", "d-float"]),
            ("NOT ARRAY_CONTAINS(tags.obj, 'x')", []),
            ("ARRAY_CONTAINS(tags.arr, tags.n)", []),
            ("ARRAY_CONTAINS(tags.arr, tags.obj.deep.x)", ["d-num"]),
            ("NOT ARRAY_CONTAINS(tags.arr, tags.missing)", []),
            ("LOWER(tags.s) = 'abc'", ["d-num", "d-str"]),
            ("UPPER(tags.s) = 'ABCDEF'", ["d-float"]),
            ("LOWER(tags.u) = 'é😀'", ["d-num"]),
            ("UPPER(tags.u) = 'é😀'", ["d-num"]),  # ASCII letters only
            ("LENGTH(tags.u) = 2", ["d-num"]),  # characters, not bytes
            ("LENGTH(tags.s) > 3", ["d-float"]),
            ("LENGTH(tags.n) = 1", ["d-str"]),
        ],
    )


async def test_arithmetic(store: SqlStore) -> None:
    docs = await _load(store)
    await _check(
        store,
        docs,
        [
            ("tags.n + 1 = 6", ["d-num", "d-float"]),
            ("tags.n - tags.f = 2.5", ["d-num"]),
            ("tags.n * 2 = 10", ["d-num", "d-float"]),
            ("tags.n / 2 = 2.5", ["d-num", "d-float"]),  # true division
            ("tags.n % 3 = 2", ["d-num", "d-float"]),
            ("-tags.n % 3 = -2", ["d-num", "d-float"]),  # the sign of the dividend
            ("tags.n % -3 = 2", ["d-num", "d-float"]),
            ("tags.f % 1 = 0.5", ["d-num"]),
            ("tags.f % 1 = -0.5", ["d-float"]),
            ("tags.one % 0.1 > 0.09", ["d-num"]),  # exactly fmod: 0.09999999999999995
            ("tags.n / 0 = 1 OR NOT (tags.n / 0 = 1)", []),
            ("tags.n % 0 = 1 OR NOT (tags.n % 0 = 1)", []),
            ("tags.n * 1e308 * 10 > 0 OR NOT (tags.n * 1e308 * 10 > 0)", []),  # overflow: undefined
            ("tags.n * 1e-300 * 1e-300 = 0", ["d-num", "d-float"]),  # underflow: zero
            ("tags.n * 1e-300 / 1e300 = 0", ["d-num", "d-float"]),
            (_equals_sum(Field(FieldRoot.TAGS, ("n",)), Literal("1"), 6), []),  # no string arithmetic
            ("tags.b + 1 = 2", []),
            ("-tags.f = 2.5", ["d-float"]),
            ("properties.reported.temp * 2 = 43", ["d-num"]),
            ("version + 1 = 3", ALL),
            ("LENGTH(tags.s) * 2 = 12", ["d-float"]),
        ],
    )


async def test_identity_fields_and_unicode(store: SqlStore) -> None:
    docs = await _load(store)
    activity = "2024-05-01T12:00:00.1234560Z"
    await _check(
        store,
        docs,
        [
            ("deviceId = 'd-num'", ["d-num"]),
            ("deviceId IN ['d-num', 'd-str', 'nobody']", ["d-num", "d-str"]),
            ("deviceId > 'd-f'", ["d-float", "d-num", "d-str"]),
            ("status = 'enabled'", ALL),
            ("connectionState = 'Disconnected'", ALL),
            (f"lastActivityTime = '{activity}'", ["d-num"]),
            ("lastActivityTime > '2024-05-01T12'", ["d-num"]),
            ("NOT (lastActivityTime > '2024')", []),
            ("version = 2", ALL),
            ("etag = 'AAAAAAAAAAI='", ALL),
            ("properties.desired.$version = 3", ["d-float"]),
            ("properties.reported.$version = 3", ALL),
            ("properties.desired.mode = 'eco'", ["d-num"]),
            ("properties.reported.fw > '1.0.0'", ["d-str"]),
            (Call(FunctionName.IS_DEFINED, (Field(FieldRoot.REPORTED, ("$metadata",)),)), []),
            (Call(FunctionName.IS_DEFINED, (Field(FieldRoot.DESIRED, ("$version", "x")),)), []),
            (Call(FunctionName.IS_DEFINED, (Field(FieldRoot.TAGS, ("", "x")),)), []),
            (Call(FunctionName.IS_DEFINED, (Field(FieldRoot.JOB_ID),)), []),
            (_equals(Field(FieldRoot.DEVICE_ID, ("x",)), "d-num"), []),
            ("tags.u = 'é😀'", ["d-num"]),
            ("tags.u > 'é'", ["d-num"]),  # by code point: é😀 > é > e > Z
            ("tags.u < 'é'", ["d-str", "d-float"]),
            ("tags.u < 'a'", ["d-float"]),
            ("tags.[[it's]] = 1", []),
        ],
    )


async def test_etag_follows_the_twin_revision(store: SqlStore) -> None:
    await store.add_device(new_device("d-1", T0))
    assert await _selected(store, "etag = 'AAAAAAAAAAE='") == ["d-1"]
    twin = await store.get_twin("d-1")
    await store.save_twin(replace(twin, tags={"x": 1}, revision=2), expected_revision=1)
    assert await _selected(store, "etag = 'AAAAAAAAAAE='") == []
    assert await _selected(store, f"etag = '{twin_document(await store.get_twin('d-1'))['etag']}'") == ["d-1"]


async def test_tag_lookups_follow_every_write(store: SqlStore) -> None:
    # SQLite answers tag equality from a trigger-maintained table: it must track inserts,
    # updates and deletes (PostgreSQL reads the jsonb itself).
    await store.add_devices([new_device(f"d-{i}", T0) for i in range(3)])
    for i in range(3):
        twin = await store.get_twin(f"d-{i}")
        await store.save_twin(replace(twin, tags={"site": f"s{i % 2}", "a": ["s9"]}, revision=2), expected_revision=1)
    assert await _selected(store, "tags.site = 's0'") == ["d-0", "d-2"]
    assert await _selected(store, "tags.site IN ['s1', 's9']") == ["d-1"]
    assert await _selected(store, "ARRAY_CONTAINS(tags.a, 's9')") == ["d-0", "d-1", "d-2"]
    twin = await store.get_twin("d-0")
    await store.save_twin(replace(twin, tags={"site": "s1"}, revision=3), expected_revision=2)
    reported = replace(twin, tags={"site": "s1"}, reported=PropertySet({"r": 1}, {}, 2), revision=4)
    await store.save_twin(reported, expected_revision=3)
    await store.remove_device("d-2")
    assert await _selected(store, "tags.site = 's0'") == []
    assert await _selected(store, "tags.site = 's1'") == ["d-0", "d-1"]
    await store.add_device(new_device("d-2", T0))
    assert await _selected(store, "tags.site = 's0' OR tags.site = 's1'") == ["d-0", "d-1"]


# -- paging ------------------------------------------------------------------------------


async def test_pages_follow_the_key_order(store: SqlStore) -> None:
    ids = ["b", "a", "A", "a-1", "a.1", "Z9", "z"]
    await store.add_devices([new_device(device_id, T0) for device_id in ids])
    condition = parse_condition("status = 'enabled'")
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.query_twins(condition, after=after, limit=2)
        if not page:
            break
        seen.extend(twin.device_id for twin in page)
        after = page[-1].device_id
    assert seen == sorted(ids)  # code point order: 'A' < 'Z9' < 'a' < 'a-1' < 'a.1' < 'b' < 'z'
    assert [t.device_id for t in await store.query_twins(None, after="a", limit=10)] == ["a-1", "a.1", "b", "z"]
    assert await store.query_twins(None, after=None, limit=0) == []


async def test_device_ids_are_the_ids_of_the_twins_selected(store: SqlStore) -> None:
    await _load(store)
    await store.add_devices([new_device(device_id, T0) for device_id in ["b", "a", "A", "a-1", "Z9", "z"]])
    conditions: list[Expr | None] = [
        None,
        parse_condition("status = 'enabled'"),
        parse_condition("tags.n = 5"),
        parse_condition("IS_DEFINED(properties.reported.temp) OR deviceId = 'z'"),
        parse_condition("tags.missing = 1"),
    ]
    for condition in conditions:
        for after in (None, "a", "d-num", "zz"):
            for limit in (0, 1, 2, 100):
                twins = await store.query_twins(condition, after=after, limit=limit)
                ids = await store.query_device_ids(condition, after=after, limit=limit)
                assert ids == [twin.device_id for twin in twins], (condition, after, limit)
        # Paging by the last id gives every selected id once, in key order.
        seen: list[str] = []
        page_after: str | None = None
        while page := await store.query_device_ids(condition, after=page_after, limit=3):
            seen.extend(page)
            page_after = page[-1]
        assert seen == [twin.device_id for twin in await store.query_twins(condition, after=None, limit=100)]


def test_keys_only_selects_just_the_key_columns() -> None:
    query = Query(Source.JOBS, Star(), where=parse_condition("status = 'failed'"))
    for dialect in Dialect:
        full = compile_rows(query, dialect, after=("d-1", "job-a"), limit=5)
        keys = compile_rows(query, dialect, after=("d-1", "job-a"), limit=5, keys_only=True)
        assert keys.text.startswith("SELECT device_jobs.device_id, device_jobs.job_id FROM device_jobs WHERE ")
        assert keys.text.split(" FROM ", 1)[1] == full.text.split(" FROM ", 1)[1]
        assert keys.params == full.params


# -- devices.jobs ------------------------------------------------------------------------


def _job(job_id: str, device_id: str, status: DeviceJobStatus, **changes: object) -> DeviceJob:
    job = DeviceJob(
        job_id=job_id,
        device_id=device_id,
        job_type=JobType.DEVICE_METHOD,
        status=status,
        created_time=T0,
        last_updated_time=T0 + timedelta(seconds=1),
    )
    return replace(job, **changes)  # type: ignore[arg-type]


async def test_device_jobs_are_queryable(store: SqlStore) -> None:
    jobs = [
        _job("job-b", "d-1", DeviceJobStatus.COMPLETED, start_time=T0, end_time=T0 + timedelta(seconds=5)),
        _job("job-a", "d-1", DeviceJobStatus.FAILED, error={"code": "JobTimedOut"}, outcome={"status": 504}),
        _job("job-a", "d-2", DeviceJobStatus.PENDING, job_type=JobType.UPDATE_TWIN),
        _job("job-a", "d-0", DeviceJobStatus.RUNNING, start_time=T0 + timedelta(minutes=1)),
    ]
    assert await store.add_device_jobs(jobs) == set()
    assert await store.add_device_jobs([jobs[0], _job("job-c", "d-3", DeviceJobStatus.PENDING)]) == {("job-b", "d-1")}

    everything = await store.query_device_jobs(None, after=None, limit=100)
    assert [(job.device_id, job.job_id) for job in everything] == [
        ("d-0", "job-a"),
        ("d-1", "job-a"),
        ("d-1", "job-b"),
        ("d-2", "job-a"),
        ("d-3", "job-c"),
    ]
    assert everything[1] == jobs[1]  # every field survives, outcome and error included
    assert everything[2] == jobs[0]
    docs = [device_job_document(job) for job in everything]
    all_keys = [(job.device_id, job.job_id) for job in everything]

    cases = [
        ("status = 'pending'", [("d-2", "job-a"), ("d-3", "job-c")]),
        ("jobId = 'job-a' AND status != 'failed'", [("d-0", "job-a"), ("d-2", "job-a")]),
        ("devices.jobs.jobType = 'scheduleUpdateTwin'", [("d-2", "job-a")]),
        ("IS_DEFINED(endTimeUtc)", [("d-1", "job-b")]),
        ("NOT IS_DEFINED(startTimeUtc)", [("d-1", "job-a"), ("d-2", "job-a"), ("d-3", "job-c")]),
        ("startTimeUtc > '2024-05-01T12:00:00.1234560Z'", [("d-0", "job-a")]),
        ("createdDateTimeUtc = '2024-05-01T12:00:00.1234560Z' AND deviceId = 'd-3'", [("d-3", "job-c")]),
        ("lastUpdatedDateTimeUtc < '2024-05-01T12:00:01.1234561Z'", all_keys),
        ("lastUpdatedDateTimeUtc > '2024-05-01T12:00:01.1234560Z'", []),
    ]
    for text, expected in cases:
        query = parse_query(f"SELECT * FROM devices.jobs WHERE {text}")
        got = await store.query_device_jobs(query.where, after=None, limit=100)
        assert [(job.device_id, job.job_id) for job in got] == expected, text
        reference = [(doc["deviceId"], doc["jobId"]) for doc in run_query(query, docs)]
        assert reference == expected, text
    # devices.jobs records have no twin: a twin field there is undefined (the checker refuses it).
    tags_condition = BinaryOp(BinaryOperator.EQ, Field(FieldRoot.TAGS, ("x",)), Literal(1))
    assert await store.query_device_jobs(tags_condition, after=None, limit=10) == []

    page = await store.query_device_jobs(None, after=("d-1", "job-a"), limit=2)
    assert [(job.device_id, job.job_id) for job in page] == [("d-1", "job-b"), ("d-2", "job-a")]


# -- aggregates --------------------------------------------------------------------------


async def _aggregate_both(store: SqlStore, docs: list[JsonObject], text: str) -> tuple[object, object]:
    query = parse_query(text)
    return await store.aggregate(query), run_query(query, docs)


async def test_aggregates_match_the_evaluator(store: SqlStore) -> None:
    docs = await _load(store)
    texts = [
        "SELECT COUNT() AS n FROM devices",
        "SELECT COUNT() AS n, SUM(tags.n) AS s, AVG(tags.n) AS a, MIN(tags.f) AS lo, MAX(tags.f) AS hi FROM devices",
        "SELECT COUNT() AS n, SUM(tags.n) AS s FROM devices WHERE tags.s = 'nothing'",
        "SELECT tags.s AS s, COUNT() AS n FROM devices GROUP BY tags.s",
        "SELECT tags.n, COUNT() FROM devices GROUP BY tags.n",
        "SELECT tags.b, COUNT() AS n, SUM(properties.reported.temp) AS t FROM devices GROUP BY tags.b",
        "SELECT tags.obj, COUNT() FROM devices GROUP BY tags.obj",
        "SELECT tags.arr AS a, COUNT() AS n FROM devices GROUP BY tags.arr",
        "SELECT properties.desired AS d, COUNT() AS n FROM devices GROUP BY properties.desired",
        "SELECT LENGTH(tags.s) AS l, COUNT() AS n FROM devices GROUP BY LENGTH(tags.s)",
        "SELECT tags.s AS s, tags.b AS b, COUNT() AS n FROM devices GROUP BY tags.s, tags.b",
        "SELECT TOP 2 tags.s AS s, COUNT() AS n FROM devices GROUP BY tags.s",
        "SELECT COUNT() AS n, MAX(version) AS v, SUM(properties.desired.$version) AS dv FROM devices",
        "SELECT deviceId AS id, MIN(tags.n * 2) AS m FROM devices WHERE IS_DEFINED(tags.n) GROUP BY deviceId",
        "SELECT status, COUNT() FROM devices GROUP BY status",
    ]
    failures = []
    for text in texts:
        got, expected = await _aggregate_both(store, docs, text)
        if got != expected:
            failures.append(f"{text}: store {got}, evaluator {expected}")
    assert failures == []


async def test_groups_merge_and_order_as_the_evaluator_says(store: SqlStore) -> None:
    values: list[object] = [{"b": 1, "a": 2}, {"a": 2, "b": 1.0}, [1, 2], "x", 2.0, 2, True, False, None]
    await store.add_devices([new_device(f"d-{i}", T0) for i in range(len(values) + 1)])
    for i, value in enumerate(values):
        twin = await store.get_twin(f"d-{i}")
        await store.save_twin(replace(twin, tags={"g": value, "n": i}, revision=2), expected_revision=1)
    docs = [twin_document(twin) for twin in await store.query_twins(None, after=None, limit=100)]
    got, expected = await _aggregate_both(
        store, docs, "SELECT tags.g AS g, COUNT() AS n, MIN(tags.n) AS first FROM devices GROUP BY tags.g"
    )
    assert got == expected
    assert got == [
        {"n": 1},  # undefined: d-9 has no g (nor n)
        {"g": None, "n": 1, "first": 8},
        {"g": False, "n": 1, "first": 7},
        {"g": True, "n": 1, "first": 6},
        {"g": 2.0, "n": 2, "first": 4},  # 2.0 (d-4) and 2 (d-5) are one group showing d-4's value
        {"g": "x", "n": 1, "first": 3},
        {"g": [1, 2], "n": 1, "first": 2},
        {"g": {"b": 1, "a": 2}, "n": 2, "first": 0},
    ]
    assert isinstance(got[4]["g"], float)


async def test_sums_of_integers_are_exact(store: SqlStore) -> None:
    big = 2**52 - 1
    await store.add_devices([new_device(f"d-{i}", T0) for i in range(4)])
    for i, value in enumerate([big, big, -big + 5, 7]):
        twin = await store.get_twin(f"d-{i}")
        await store.save_twin(replace(twin, tags={"v": value}, revision=2), expected_revision=1)
    docs = [twin_document(twin) for twin in await store.query_twins(None, after=None, limit=100)]
    got, expected = await _aggregate_both(
        store, docs, "SELECT SUM(tags.v) AS s, AVG(tags.v) AS a, MAX(tags.v) AS m FROM devices"
    )
    assert got == expected == [{"s": big + 12, "a": (big + 12) / 4, "m": big}]


async def test_count_of_an_expression_counts_its_defined_values(store: SqlStore) -> None:
    docs = await _load(store)
    await store.reindex()  # planner statistics; changes no answer
    # COUNT(x) is refused by the type checker, but the evaluator defines it.
    counted = AggregateCall(AggregateFunction.COUNT, Field(FieldRoot.TAGS, ("n",)))
    query = Query(Source.DEVICES, (Projection(counted, "defined"), Projection(AggregateCall(AggregateFunction.COUNT))))
    got = await store.aggregate(query)
    assert got == run_query(query, docs) == [{"defined": 3, "$2": 4}]


@pytest.mark.parametrize(
    "query",
    [
        Query(Source.DEVICES, Star(), group_by=(Field(FieldRoot.TAGS, ("a",)),)),
        Query(
            Source.DEVICES,
            (Projection(Field(FieldRoot.TAGS, ("b",))), Projection(AggregateCall(AggregateFunction.COUNT))),
            group_by=(Field(FieldRoot.TAGS, ("a",)),),
        ),
        Query(Source.DEVICES, (Projection(AggregateCall(AggregateFunction.SUM)),)),
    ],
)
def test_aggregates_the_evaluator_refuses_are_query_errors(query: Query) -> None:
    with pytest.raises(QuerySyntaxError):
        run_query(query, [])
    for dialect in Dialect:
        with pytest.raises(QuerySyntaxError):
            compile_aggregate(query, dialect)
