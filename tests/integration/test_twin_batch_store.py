"""Batched twin reads and writes: the store's get_twins / save_twins (both databases) and the
ReportedBatcher that group-commits devices' reported patches through them (SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hub.domain.devices import new_device
from hub.domain.twin import PropertySet, Twin
from hub.engine.events import LocalEventBroker
from hub.engine.sessions.presence import PresenceService
from hub.engine.sessions.twins import TwinService
from hub.errors import (
    BadRequestError,
    ConcurrencyConflictError,
    DeviceNotFoundError,
    ServiceUnavailableError,
    TwinLimitError,
)
from hub.storage import SqlStore
from tests.memory_devices import MemoryDeviceRouter

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return 0.0


async def _add(store: SqlStore, *device_ids: str) -> None:
    assert not await store.add_devices([new_device(device_id, T0) for device_id in device_ids])


def _changed(twin: Twin, **tags: object) -> Twin:
    return replace(
        twin,
        tags={**twin.tags, **tags},
        reported=PropertySet({"fw": "2.0"}, {"$lastUpdated": "2024-05-01T12:00:00.0000000Z"}, 3),
        version=twin.version + 1,
        revision=twin.revision + 1,
    )


# -- store: get_twins / save_twins on both databases -------------------------------------------


async def test_get_twins_returns_existing_twins_and_leaves_missing_ids_out(store: SqlStore) -> None:
    await _add(store, "a", "b", "c")

    twins = await store.get_twins(["c", "nobody", "a", "a"])

    assert set(twins) == {"a", "c"}
    assert twins["a"] == await store.get_twin("a")
    assert twins["c"] == await store.get_twin("c")
    assert await store.get_twins([]) == {}


async def test_save_twins_round_trips(store: SqlStore) -> None:
    await _add(store, "a", "b")
    before = await store.get_twins(["a", "b"])
    written = [_changed(before["a"], n=1), _changed(before["b"], n=2)]

    unmatched = await store.save_twins([(twin, before[twin.device_id].revision) for twin in written])

    assert unmatched == set()
    after = await store.get_twins(["a", "b"])
    assert after == {twin.device_id: twin for twin in written}
    assert (after["a"].revision, after["a"].reported.version, after["b"].tags) == (2, 3, {"n": 2})


async def test_save_twins_reports_stale_and_missing_ones_and_does_not_write_them(store: SqlStore) -> None:
    await _add(store, "fresh", "stale")
    before = await store.get_twins(["fresh", "stale"])
    await store.save_twin(_changed(before["stale"], winner=True), expected_revision=1)
    ghost = Twin(device_id="ghost", revision=2)

    unmatched = await store.save_twins(
        [(_changed(before["fresh"], ok=True), 1), (_changed(before["stale"], loser=True), 1), (ghost, 1)]
    )

    assert unmatched == {"stale", "ghost"}
    after = await store.get_twins(["fresh", "stale", "ghost"])
    assert set(after) == {"fresh", "stale"}
    assert after["fresh"].tags == {"ok": True}
    assert after["stale"].tags == {"winner": True}
    assert after["stale"].revision == 2


async def test_save_twins_writes_2500_twins_in_one_call(store: SqlStore) -> None:
    ids = [f"dev-{index:05d}" for index in range(2500)]
    await _add(store, *ids)
    before = await store.get_twins(ids)
    assert len(before) == 2500

    unmatched = await store.save_twins([(_changed(before[i], index=n), 1) for n, i in enumerate(ids)])

    assert unmatched == set()
    after = await store.get_twins(ids)
    assert [after[i].tags["index"] for i in ids] == list(range(2500))
    assert {twin.revision for twin in after.values()} == {2}


async def test_save_twins_refuses_a_device_twice(store: SqlStore) -> None:
    await _add(store, "a")
    twin = await store.get_twin("a")
    with pytest.raises(ValueError, match="at most once"):
        await store.save_twins([(_changed(twin), 1), (_changed(twin), 1)])


async def test_concurrent_batch_and_single_writes_lose_no_update(store: SqlStore) -> None:
    """Batches and single writes race on the same rows; every increment lands exactly once,
    which only holds if a batch never mistakes another writer's revision for its own."""
    ids = ["c1", "c2", "c3"]
    await _add(store, *ids)

    def incremented(twin: Twin) -> Twin:
        count = twin.tags.get("count", 0)
        assert isinstance(count, int)
        return replace(twin, tags={"count": count + 1}, revision=twin.revision + 1)

    async def batch_writer() -> None:
        todo = list(ids)
        while todo:
            current = await store.get_twins(todo)
            lost = await store.save_twins([(incremented(current[i]), current[i].revision) for i in todo])
            todo = [i for i in todo if i in lost]

    async def single_writer(device_id: str) -> None:
        while True:
            twin = await store.get_twin(device_id)
            try:
                await store.save_twin(incremented(twin), expected_revision=twin.revision)
                return
            except ConcurrencyConflictError:
                continue

    async with asyncio.TaskGroup() as group:
        for _ in range(10):
            group.create_task(batch_writer())
            for device_id in ids:
                group.create_task(single_writer(device_id))

    after = await store.get_twins(ids)
    assert {i: after[i].tags["count"] for i in ids} == {i: 20 for i in ids}
    assert {after[i].revision for i in ids} == {21}


# -- the batcher, through TwinService.patch_reported, on SQLite ------------------------------


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    async with SqlStore.open(sqlite_url) as opened:
        yield opened


@pytest.fixture
async def twins(sqlite_store: SqlStore) -> AsyncIterator[TwinService]:
    clock = FixedClock()
    service = TwinService(
        sqlite_store, clock, PresenceService(sqlite_store, clock), MemoryDeviceRouter(clock), LocalEventBroker()
    )
    async with service.running():
        yield service


def _payload(value: object) -> bytes:
    return json.dumps(value).encode()


async def test_many_concurrent_patches_for_many_devices_all_apply(twins: TwinService, sqlite_store: SqlStore) -> None:
    ids = [f"dev-{index:04d}" for index in range(1200)]
    await _add(sqlite_store, *ids)

    versions = await asyncio.gather(
        *(twins.patch_reported(i, _payload({"ack": n, "fw": "2.0"})) for n, i in enumerate(ids))
    )

    assert versions == [2] * len(ids)
    stored = await sqlite_store.get_twins(ids)
    assert [stored[i].reported.properties for i in ids] == [{"ack": n, "fw": "2.0"} for n in range(len(ids))]
    assert {stored[i].reported.version for i in ids} == {2}
    assert twins._reported.batches < len(ids) // 10  # grouped, not one write per patch


async def test_patches_for_one_device_in_one_batch_apply_in_order(twins: TwinService, sqlite_store: SqlStore) -> None:
    await _add(sqlite_store, "dev")

    versions = await asyncio.gather(*(twins.patch_reported("dev", _payload({"step": n, f"k{n}": n})) for n in range(5)))

    assert versions == [2, 3, 4, 5, 6]
    twin = await sqlite_store.get_twin("dev")
    assert twin.reported.properties == {"step": 4, "k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4}
    assert (twin.reported.version, twin.revision) == (6, 6)


async def test_a_patch_over_the_limit_fails_alone(twins: TwinService, sqlite_store: SqlStore) -> None:
    await _add(sqlite_store, "big", "small")
    too_big = {f"k{n}": "x" * 4000 for n in range(10)}  # 40 KB: over the 32 KB reported limit

    results = await asyncio.gather(
        twins.patch_reported("big", _payload({"before": 1})),
        twins.patch_reported("big", _payload(too_big)),
        twins.patch_reported("big", _payload({"after": 1})),
        twins.patch_reported("small", _payload({"ok": True})),
        return_exceptions=True,
    )

    assert (results[0], results[2], results[3]) == (2, 3, 2)
    assert isinstance(results[1], TwinLimitError)
    assert (await sqlite_store.get_twin("big")).reported.properties == {"before": 1, "after": 1}
    assert (await sqlite_store.get_twin("small")).reported.properties == {"ok": True}


async def test_a_missing_device_fails_alone(twins: TwinService, sqlite_store: SqlStore) -> None:
    await _add(sqlite_store, "here")

    results = await asyncio.gather(
        twins.patch_reported("gone", _payload({"a": 1})),
        twins.patch_reported("here", _payload({"a": 1})),
        return_exceptions=True,
    )

    assert isinstance(results[0], DeviceNotFoundError)
    assert results[1] == 2


async def test_an_invalid_payload_is_a_bad_request_before_queuing(twins: TwinService) -> None:
    with pytest.raises(BadRequestError):
        await twins.patch_reported("any", b"[1, 2]")
    with pytest.raises(BadRequestError):
        await twins.patch_reported("any", b"\xff")


async def test_a_twin_changed_meanwhile_is_retried(twins: TwinService, sqlite_store: SqlStore) -> None:
    await _add(sqlite_store, "dev")
    real_get_twins = sqlite_store.get_twins
    raced = False

    async def get_twins_then_race(device_ids: list[str]) -> dict[str, Twin]:
        nonlocal raced
        found = await real_get_twins(device_ids)
        if not raced:  # a back-end write lands between the batch's read and its write
            raced = True
            twin = found["dev"]
            await sqlite_store.save_twin(replace(twin, tags={"backend": 1}, revision=2), expected_revision=1)
        return found

    sqlite_store.get_twins = get_twins_then_race  # type: ignore[method-assign]

    version = await twins.patch_reported("dev", _payload({"a": 1}))

    twin = await sqlite_store.get_twin("dev")
    assert (version, twin.tags, twin.reported.properties, twin.revision) == (2, {"backend": 1}, {"a": 1}, 3)


async def test_without_running_each_patch_is_written_alone(sqlite_store: SqlStore) -> None:
    await _add(sqlite_store, "dev")
    clock = FixedClock()
    service = TwinService(
        sqlite_store, clock, PresenceService(sqlite_store, clock), MemoryDeviceRouter(clock), LocalEventBroker()
    )

    assert await service.patch_reported("dev", _payload({"a": 1})) == 2
    assert (await sqlite_store.get_twin("dev")).reported.properties == {"a": 1}


async def test_a_database_outage_fails_the_waiting_patches_with_service_unavailable(
    twins: TwinService, sqlite_store: SqlStore
) -> None:
    await _add(sqlite_store, "a", "b")

    async def save_twins_down(writes: object) -> set[str]:
        raise ServiceUnavailableError("database unavailable")

    sqlite_store.save_twins = save_twins_down  # type: ignore[method-assign,assignment]

    results = await asyncio.gather(
        twins.patch_reported("a", _payload({"x": 1})),
        twins.patch_reported("b", _payload({"x": 1})),
        return_exceptions=True,
    )

    assert all(isinstance(result, ServiceUnavailableError) for result in results)
    assert (await sqlite_store.get_twin("a")).reported.properties == {}
