"""Runs compiled twin queries (hub.query.sql) and turns their rows into twins, job records and
aggregate results."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Final

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.domain.jobs import DeviceJob
from hub.domain.json import JsonObject, JsonValue
from hub.domain.twin import Twin
from hub.query.ast import AggregateFunction, Expr, Query, Source, Star
from hub.query.sql import (
    AggregateOutput,
    Dialect,
    SqlFragment,
    TableSchema,
    aggregate_outputs,
    compile_aggregate,
    compile_rows,
    table_of,
)
from hub.query.values import UNDEFINED, Number, Value, group_identity, group_order
from hub.storage.engines import json_loads  # numbers read back as from JSON columns
from hub.storage.failures import translate_errors
from hub.storage.mappers import device_job_from_row, twin_from_row
from hub.storage.tables import device_jobs_table, devices_table

__all__ = ["SqlQueries", "decode_aggregate"]

_TABLES: Final = {"devices": devices_table, "device_jobs": device_jobs_table}


class SqlQueries:
    """The QueryStore part of SqlStore (hub.ports documents the methods)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = Dialect(engine.dialect.name)

    async def _fetch(self, fragment: SqlFragment, schema: TableSchema | None = None) -> Sequence[RowMapping]:
        text = sa.text(fragment.text).bindparams(**fragment.params)
        statement: sa.TextClause | sa.TextualSelect = text
        if schema is not None:
            # Typed columns, so JSON and UTC datetimes come back as they do from the table.
            table = _TABLES[schema.name]
            statement = text.columns(*(table.c[name] for name in schema.columns))
        with translate_errors():
            async with self._engine.connect() as connection:
                return (await connection.execute(statement)).mappings().all()

    async def query_twins(self, condition: Expr | None, *, after: str | None, limit: int) -> list[Twin]:
        query = Query(Source.DEVICES, Star(), where=condition)
        fragment = compile_rows(query, self._dialect, after=None if after is None else (after,), limit=limit)
        rows = await self._fetch(fragment, table_of(Source.DEVICES))
        return [twin_from_row(row) for row in rows]

    async def query_device_ids(self, condition: Expr | None, *, after: str | None, limit: int) -> list[str]:
        query = Query(Source.DEVICES, Star(), where=condition)
        fragment = compile_rows(
            query, self._dialect, after=None if after is None else (after,), limit=limit, keys_only=True
        )
        rows = await self._fetch(fragment)
        return [str(row["device_id"]) for row in rows]

    async def query_device_jobs(
        self, condition: Expr | None, *, after: tuple[str, str] | None, limit: int
    ) -> list[DeviceJob]:
        query = Query(Source.JOBS, Star(), where=condition)
        fragment = compile_rows(query, self._dialect, after=after, limit=limit)
        rows = await self._fetch(fragment, table_of(Source.JOBS))
        return [device_job_from_row(row) for row in rows]

    async def aggregate(self, query: Query) -> list[JsonObject]:
        outputs = aggregate_outputs(query)
        rows = await self._fetch(compile_aggregate(query, self._dialect))
        return decode_aggregate(query, outputs, rows)


# -- aggregate rows -> results (the row shape is compile_aggregate's) --------------------


def _key_value(raw: object) -> Value:
    """A GROUP BY key: NULL is undefined, text is JSON, SQLite gives numbers as they are."""
    if raw is None:
        return UNDEFINED
    if isinstance(raw, str):
        value: JsonValue = json_loads(raw)
        return value
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return raw
    raise TypeError(f"unexpected group key of type {type(raw).__name__}")


def _number(raw: object) -> Number:
    """A MIN / MAX value: a plain number (SQLite) or JSON number text (PostgreSQL)."""
    if isinstance(raw, str):
        raw = json_loads(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise TypeError(f"expected a number, got {type(raw).__name__}")
    return raw


def _exact(raw: object) -> Fraction:
    if raw is None:
        return Fraction(0)
    if isinstance(raw, int | float | Decimal):
        return Fraction(raw)
    raise TypeError(f"expected a number, got {type(raw).__name__}")


@dataclass(slots=True)
class _Partial:
    """One aggregate over part of a group; parts of one group add up (merge)."""

    count: int = 0  # COUNT(x), or numbers seen
    integer_sum: int = 0
    float_sum: Fraction = field(default_factory=Fraction)
    float_count: int = 0
    float_overflow: bool = False
    extreme: Number | None = None

    def merge(self, other: _Partial, function: AggregateFunction) -> None:
        self.count += other.count
        self.integer_sum += other.integer_sum
        self.float_sum += other.float_sum
        self.float_count += other.float_count
        self.float_overflow |= other.float_overflow
        if other.extreme is not None:
            if self.extreme is None:
                self.extreme = other.extreme
            elif function is AggregateFunction.MIN:
                self.extreme = min(self.extreme, other.extreme)
            else:
                self.extreme = max(self.extreme, other.extreme)


def _partial(row: RowMapping, output: AggregateOutput) -> _Partial:
    prefix = output.column
    if output.function is AggregateFunction.COUNT and not output.counts_defined:
        return _Partial(count=int(row["n"]))  # COUNT(): the group's rows
    if output.counts_defined:
        return _Partial(count=int(row[f"{prefix}_count"]))
    partial = _Partial(count=int(row[f"{prefix}_n"]))
    if output.function in (AggregateFunction.MIN, AggregateFunction.MAX):
        raw = row[f"{prefix}_v"]
        partial.extreme = None if raw is None else _number(raw)
        return partial
    partial.integer_sum = int(_exact(row[f"{prefix}_ihi"])) * 2**32 + int(_exact(row[f"{prefix}_ilo"]))
    partial.float_count = int(row[f"{prefix}_fn"] or 0)
    raw_float = row[f"{prefix}_fsum"]
    if isinstance(raw_float, float) and not math.isfinite(raw_float):
        partial.float_overflow = True
    else:
        partial.float_sum = _exact(raw_float)
    return partial


def _result(partial: _Partial, function: AggregateFunction) -> Value:
    if function is AggregateFunction.COUNT:
        return partial.count
    if partial.count == 0:
        return UNDEFINED
    if function in (AggregateFunction.MIN, AggregateFunction.MAX):
        return partial.extreme if partial.extreme is not None else UNDEFINED
    total: Number
    if partial.float_count == 0:
        total = partial.integer_sum
    else:
        if partial.float_overflow:
            return UNDEFINED
        try:
            total = float(partial.integer_sum + partial.float_sum)
        except OverflowError:
            return UNDEFINED
    if function is AggregateFunction.SUM:
        return total
    try:
        average = total / partial.count
    except OverflowError:
        return UNDEFINED
    return average if math.isfinite(average) else UNDEFINED


@dataclass(slots=True)
class _Group:
    first_key: str | None
    keys: tuple[Value, ...]
    partials: dict[int, _Partial]


def decode_aggregate(query: Query, outputs: Sequence[AggregateOutput], rows: Sequence[RowMapping]) -> list[JsonObject]:
    """The results the reference evaluator's run_query gives, from compile_aggregate's rows."""
    key_count = len(query.group_by)
    groups: dict[tuple[Hashable, ...], _Group] = {}
    for row in rows:
        keys = tuple(_key_value(row[f"k{index}"]) for index in range(key_count))
        partials = {index: _partial(row, output) for index, output in enumerate(outputs) if output.function is not None}
        group = _Group(row["first_key"], keys, partials)
        identity = tuple(group_identity(key) for key in keys)
        known = groups.get(identity)
        if known is None:
            groups[identity] = group
            continue
        # The group shows the key values of its first row in key order.
        if group.first_key is not None and (known.first_key is None or group.first_key < known.first_key):
            known.first_key, known.keys = group.first_key, group.keys
        for index, partial in partials.items():
            function = outputs[index].function
            assert function is not None
            known.partials[index].merge(partial, function)
    ordered = sorted(groups.values(), key=lambda group: tuple(group_order(key) for key in group.keys))
    results: list[JsonObject] = []
    for group in ordered:
        result: JsonObject = {}
        for index, output in enumerate(outputs):
            value: Value
            if output.group is not None:
                value = group.keys[output.group]
            else:
                assert output.function is not None
                value = _result(group.partials[index], output.function)
            if value is not UNDEFINED:
                result[output.key] = value
        results.append(result)
    return results if query.top is None else results[: query.top]
