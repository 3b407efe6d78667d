"""The Store contract (hub.ports), run against SqlStore on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url

from hub.domain.devices import ConnectionState, Device, DeviceStatus, SymmetricKeys, new_device
from hub.domain.json import JsonObject
from hub.domain.policies import DEFAULT_POLICY_RIGHTS, AccessPolicy, Right
from hub.domain.twin import PropertySet, Twin
from hub.errors import (
    BadRequestError,
    ConcurrencyConflictError,
    DeviceAlreadyExistsError,
    DeviceNotFoundError,
    ServiceUnavailableError,
)
from hub.ports import PresenceUpdate, Store
from hub.storage import SqlStore
from hub.storage.tables import metadata

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _device(device_id: str, **changes: Any) -> Device:
    return new_device(device_id, T0).with_changes(**changes)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return 0.0


def _as_store(store: SqlStore) -> Store:
    return store  # mypy checks SqlStore against the protocol here


def test_sql_store_has_every_store_coroutine() -> None:
    names = [name for name in dir(Store) if not name.startswith("_")]
    assert names
    for name in names:
        assert asyncio.iscoroutinefunction(getattr(SqlStore, name)), name


# -- devices -----------------------------------------------------------------------------


async def test_add_then_get_device_keeps_every_field(store: SqlStore) -> None:
    device = _device(
        "dev-1",
        keys=SymmetricKeys("cHJpbWFyeQ==", "c2Vjb25kYXJ5"),
        status=DeviceStatus.DISABLED,
        status_reason="stolen",
        last_activity_time=T0 + timedelta(seconds=5),
    )

    added = await store.add_device(device)
    got = await store.get_device("dev-1")

    assert added == device
    assert got == device
    assert got.etag_revision == 1


async def test_add_device_gives_an_empty_twin(store: SqlStore) -> None:
    await store.add_device(_device("dev-1", status=DeviceStatus.DISABLED, status_reason="new"))

    twin = await store.get_twin("dev-1")

    assert twin == Twin(
        device_id="dev-1",
        status=DeviceStatus.DISABLED,
        status_reason="new",
        status_updated_time=T0,
        connection_state=ConnectionState.DISCONNECTED,
    )


async def test_add_device_with_a_taken_id_raises_and_keeps_the_first(store: SqlStore) -> None:
    first = await store.add_device(_device("dev-1"))

    with pytest.raises(DeviceAlreadyExistsError) as caught:
        await store.add_device(_device("dev-1", status=DeviceStatus.DISABLED))

    assert caught.value.device_id == "dev-1"
    assert await store.get_device("dev-1") == first


async def test_get_device_of_unknown_id_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(DeviceNotFoundError) as caught:
        await store.get_device("nobody")
    assert caught.value.device_id == "nobody"


async def test_list_devices_orders_by_id_bytewise_and_pages_after(store: SqlStore) -> None:
    ids = ["b", "A", "a", "Z-1", "a.b", "$x", "10", "9", "a-b", "aB", "_u"]
    assert await store.add_devices([_device(i) for i in ids]) == set()
    expected = sorted(ids)  # code point order, the same on both backends

    everything = await store.list_devices()
    pages: list[str] = []
    after: str | None = None
    while page := await store.list_devices(limit=3, after=after):
        assert len(page) <= 3
        pages += [d.device_id for d in page]
        after = page[-1].device_id

    assert [d.device_id for d in everything] == expected
    assert pages == expected
    assert await store.list_devices(limit=0) == []
    assert [d.device_id for d in await store.list_devices(after="a")] == expected[expected.index("a") + 1 :]


async def test_count_devices(store: SqlStore) -> None:
    assert await store.count_devices() == 0
    await store.add_devices([_device(f"dev-{i}") for i in range(7)])
    assert await store.count_devices() == 7


async def test_add_devices_returns_ids_that_existed_and_inserts_the_rest(store: SqlStore) -> None:
    existing = await store.add_device(_device("old", status_reason="kept"))

    existed = await store.add_devices([_device("new-1"), _device("old", status_reason="ignored"), _device("new-2")])

    assert existed == {"old"}
    assert await store.get_device("old") == existing
    assert [d.device_id for d in await store.list_devices()] == ["new-1", "new-2", "old"]


async def test_add_devices_with_a_repeated_id_writes_the_first(store: SqlStore) -> None:
    first = _device("twice", status_reason="first")

    existed = await store.add_devices([first, _device("twice", status_reason="second")])

    assert existed == set()
    assert await store.get_device("twice") == first


async def test_add_devices_in_bulk(store: SqlStore) -> None:
    devices = [_device(f"bulk-{i:05d}") for i in range(2500)]
    await store.add_devices(devices[:10])

    existed = await store.add_devices(devices)

    assert existed == {d.device_id for d in devices[:10]}
    assert await store.count_devices() == 2500
    assert await store.get_twin("bulk-02499") == Twin(device_id="bulk-02499", status_updated_time=T0)
    assert await store.add_devices([]) == set()


async def test_update_device_with_current_revision_writes_identity_and_bumps_etag(store: SqlStore) -> None:
    device = await store.add_device(_device("dev-1"))
    changed = device.with_changes(
        keys=SymmetricKeys("bmV3LXByaW1hcnk=", "bmV3LXNlY29uZGFyeQ=="),
        status=DeviceStatus.DISABLED,
        status_reason="maintenance",
        status_updated_time=T0 + timedelta(minutes=1),
    )

    updated = await store.update_device(changed, expected_revision=1)

    assert updated == changed.with_changes(etag_revision=2)
    assert await store.get_device("dev-1") == updated
    twin = await store.get_twin("dev-1")
    assert (twin.status, twin.status_reason, twin.revision) == (DeviceStatus.DISABLED, "maintenance", 1)


async def test_update_device_leaves_presence_and_identity_facts_alone(store: SqlStore) -> None:
    device = await store.add_device(_device("dev-1"))
    await store.record_presence([PresenceUpdate("dev-1", ConnectionState.CONNECTED, T0)])
    stale_view = device.with_changes(
        generation_id="other", created_time=T0 - timedelta(days=1), status_reason="changed"
    )

    updated = await store.update_device(stale_view, expected_revision=1)

    assert updated.connection_state is ConnectionState.CONNECTED
    assert updated.last_activity_time == T0
    assert updated.generation_id == device.generation_id
    assert updated.created_time == device.created_time
    assert updated.status_reason == "changed"


async def test_update_device_with_stale_revision_raises_conflict(store: SqlStore) -> None:
    device = await store.add_device(_device("dev-1"))
    await store.update_device(device.with_changes(status_reason="one"), expected_revision=1)

    with pytest.raises(ConcurrencyConflictError) as caught:
        await store.update_device(device.with_changes(status_reason="two"), expected_revision=1)

    assert caught.value.device_id == "dev-1"
    stored = await store.get_device("dev-1")
    assert (stored.status_reason, stored.etag_revision) == ("one", 2)


async def test_update_device_of_unknown_id_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(DeviceNotFoundError):
        await store.update_device(_device("nobody"), expected_revision=1)


async def test_concurrent_update_device_loses_no_update(store: SqlStore) -> None:
    await store.add_device(_device("dev-1", status_reason="0"))

    async def bump() -> None:
        while True:
            current = await store.get_device("dev-1")
            following = current.with_changes(status_reason=str(int(current.status_reason or "0") + 1))
            try:
                await store.update_device(following, expected_revision=current.etag_revision)
                return
            except ConcurrencyConflictError:
                continue

    async with asyncio.TaskGroup() as group:
        for index in range(10):
            group.create_task(bump(), name=f"bump-{index}")

    stored = await store.get_device("dev-1")
    assert (stored.status_reason, stored.etag_revision) == ("10", 11)


async def test_remove_device(store: SqlStore) -> None:
    await store.add_devices([_device("dev-1"), _device("dev-2")])

    await store.remove_device("dev-1")

    with pytest.raises(DeviceNotFoundError):
        await store.get_device("dev-1")
    with pytest.raises(DeviceNotFoundError):
        await store.get_twin("dev-1")
    with pytest.raises(DeviceNotFoundError):
        await store.remove_device("dev-1")
    assert [d.device_id for d in await store.list_devices()] == ["dev-2"]


async def test_remove_device_with_etag_only_when_it_matches(store: SqlStore) -> None:
    device = await store.add_device(_device("dev-1"))
    await store.update_device(device, expected_revision=1)

    with pytest.raises(ConcurrencyConflictError):
        await store.remove_device("dev-1", expected_revision=1)
    assert (await store.get_device("dev-1")).etag_revision == 2

    await store.remove_device("dev-1", expected_revision=2)
    with pytest.raises(DeviceNotFoundError):
        await store.remove_device("dev-1", expected_revision=2)
    assert await store.count_devices() == 0


async def test_remove_devices_returns_ids_that_did_not_exist(store: SqlStore) -> None:
    await store.add_devices([_device(f"dev-{i:04d}") for i in range(1500)])
    doomed = [f"dev-{i:04d}" for i in range(0, 1500, 2)]
    unknown = [f"ghost-{i}" for i in range(700)]

    missing = await store.remove_devices(doomed + unknown + doomed[:3])

    assert missing == set(unknown)
    assert await store.count_devices() == 750
    assert [d.device_id for d in await store.list_devices(limit=2)] == ["dev-0001", "dev-0003"]
    assert await store.remove_devices([]) == set()


# -- twins -------------------------------------------------------------------------------

AWKWARD_JSON: JsonObject = {
    "unicode": 'Grüße, 東京, emoji 🚀, quote " and backslash \\',
    "floats": [
        0.1,
        -2.5,
        3.141592653589793,
        1.5e-07,
        2.0,
        1234567.875,
        2e15,
        1e16,
        -1e20,
        1.7976931348623157e308,
        5e-324,
        -0.0,
    ],
    "ints": [0, -1, 4503599627370495, -4503599627370496, 2**31, 2**32 + 1],
    "bools": [True, False],
    "nulls": [None, 1, None, {"inner": [None]}],
    "empty": {"object": {}, "array": []},
    "nested": {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": {"l8": {"l9": "deep"}}}}}}}},
    "mixed": [{"a": 1}, [1, [2, [3]]], "s", 1.25, True, None],
}


def _twin_with_everything(twin: Twin) -> Twin:
    stamp: JsonObject = {"$lastUpdated": "2024-05-01T12:00:00.1234560Z", "$lastUpdatedVersion": 7}
    return replace(
        twin,
        tags={"building": "43", "floor": 2, "awkward": AWKWARD_JSON},
        desired=PropertySet(
            {"temperature": 21.5, "awkward": AWKWARD_JSON},
            {**stamp, "temperature": dict(stamp), "awkward": dict(stamp)},
            7,
        ),
        reported=PropertySet(
            {"firmware": {"version": "1.2.3", "ok": True}, "awkward": AWKWARD_JSON},
            {
                "$lastUpdated": "2024-05-01T12:00:01.0000000Z",
                "firmware": {"$lastUpdated": "2024-05-01T12:00:01.0000000Z"},
            },
            12,
        ),
        version=9,
        revision=twin.revision + 1,
    )


def _same_json(left: object, right: object) -> bool:
    """Equal, and with the same JSON types all the way down (1.0 is not 1, True is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same_json(a, b) for a, b in zip(left, right, strict=True))
    return left == right


async def test_save_twin_roundtrips_json_metadata_and_versions(store: SqlStore) -> None:
    await store.add_device(_device("dev-1"))
    twin = _twin_with_everything(await store.get_twin("dev-1"))

    await store.save_twin(twin, expected_revision=1)
    stored = await store.get_twin("dev-1")

    assert stored == twin
    assert (stored.version, stored.revision, stored.desired.version, stored.reported.version) == (9, 2, 7, 12)
    assert _same_json(stored.tags, twin.tags)
    assert _same_json(stored.desired.properties, twin.desired.properties)
    assert _same_json(stored.desired.metadata, twin.desired.metadata)
    assert _same_json(stored.reported.properties, twin.reported.properties)
    assert _same_json(stored.reported.metadata, twin.reported.metadata)


async def test_save_twin_leaves_identity_and_presence_alone(store: SqlStore) -> None:
    device = await store.add_device(_device("dev-1"))
    twin = await store.get_twin("dev-1")
    await store.update_device(device.with_changes(status=DeviceStatus.DISABLED), expected_revision=1)
    await store.record_presence([PresenceUpdate("dev-1", ConnectionState.CONNECTED, T0)])

    # The twin read before those changes still carries the old identity view.
    await store.save_twin(replace(twin, tags={"x": 1}, revision=2), expected_revision=1)

    stored = await store.get_twin("dev-1")
    assert (stored.tags, stored.status, stored.connection_state) == (
        {"x": 1},
        DeviceStatus.DISABLED,
        ConnectionState.CONNECTED,
    )
    assert (await store.get_device("dev-1")).etag_revision == 2


async def test_save_twin_with_stale_revision_raises_conflict(store: SqlStore) -> None:
    await store.add_device(_device("dev-1"))
    twin = await store.get_twin("dev-1")
    await store.save_twin(replace(twin, tags={"winner": True}, revision=2), expected_revision=1)

    with pytest.raises(ConcurrencyConflictError) as caught:
        await store.save_twin(replace(twin, tags={"loser": True}, revision=2), expected_revision=1)

    assert caught.value.device_id == "dev-1"
    assert (await store.get_twin("dev-1")).tags == {"winner": True}


async def test_save_twin_of_unknown_device_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(DeviceNotFoundError):
        await store.save_twin(Twin(device_id="nobody", revision=2), expected_revision=1)
    with pytest.raises(DeviceNotFoundError):
        await store.get_twin("nobody")


async def test_concurrent_save_twin_loses_no_update(store: SqlStore) -> None:
    await store.add_device(_device("counter"))

    async def increment() -> None:
        while True:
            twin = await store.get_twin("counter")
            count = twin.tags.get("counter", 0)
            assert isinstance(count, int)
            following = replace(
                twin, tags={**twin.tags, "counter": count + 1}, version=twin.version + 1, revision=twin.revision + 1
            )
            try:
                await store.save_twin(following, expected_revision=twin.revision)
                return
            except ConcurrencyConflictError:
                continue

    async with asyncio.TaskGroup() as group:
        for index in range(20):
            group.create_task(increment(), name=f"writer-{index}")

    twin = await store.get_twin("counter")
    assert twin.tags == {"counter": 20}
    assert (twin.version, twin.revision) == (21, 21)


async def test_a_value_the_database_refuses_is_a_bad_request_and_keeps_the_twin(store: SqlStore) -> None:
    await store.add_device(_device("dev-1"))
    twin = await store.get_twin("dev-1")
    awkward = replace(twin, tags={"nul": "a\u0000b", "surrogate": "\ud800"}, revision=2)

    # SQLite stores both; PostgreSQL's jsonb cannot hold either and says so.
    try:
        await store.save_twin(awkward, expected_revision=1)
    except BadRequestError:
        assert await store.get_twin("dev-1") == twin
    else:
        assert await store.get_twin("dev-1") == awkward


async def test_datetimes_come_out_utc_aware(store: SqlStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2024, 5, 1, 14, 0, 0, 654321, tzinfo=plus_two)
    await store.add_device(
        _device("dev-1", created_time=local, status_updated_time=local, connection_state_updated_time=local)
    )
    await store.record_presence([PresenceUpdate("dev-1", None, local + timedelta(seconds=1))])

    device = await store.get_device("dev-1")
    twin = await store.get_twin("dev-1")

    moments = [
        device.created_time,
        device.status_updated_time,
        device.connection_state_updated_time,
        device.last_activity_time,
        twin.status_updated_time,
        twin.last_activity_time,
    ]
    for moment in moments:
        assert moment is not None
        assert moment.tzinfo is not None
        assert moment.utcoffset() == timedelta(0)
    assert device.created_time == datetime(2024, 5, 1, 12, 0, 0, 654321, tzinfo=UTC)
    assert device.last_activity_time == datetime(2024, 5, 1, 12, 0, 1, 654321, tzinfo=UTC)


# -- presence ----------------------------------------------------------------------------


async def test_record_presence_applies_a_batch_in_order_and_ignores_unknown_ids(store: SqlStore) -> None:
    await store.add_devices([_device("a"), _device("b"), _device("c")])
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (1, 2, 3))

    await store.record_presence(
        [
            PresenceUpdate("a", ConnectionState.CONNECTED, t1),
            PresenceUpdate("ghost", ConnectionState.CONNECTED, t1),
            PresenceUpdate("b", None, t1),
            PresenceUpdate("a", None, t2),
            PresenceUpdate("c", ConnectionState.CONNECTED, t2),
            PresenceUpdate("a", ConnectionState.DISCONNECTED, t3),
        ]
    )

    a, b, c = [await store.get_device(i) for i in "abc"]
    assert (a.connection_state, a.connection_state_updated_time, a.last_activity_time) == (
        ConnectionState.DISCONNECTED,
        t3,
        t2,
    )
    assert (b.connection_state, b.connection_state_updated_time, b.last_activity_time) == (
        ConnectionState.DISCONNECTED,
        T0,
        t1,
    )
    assert (c.connection_state, c.connection_state_updated_time, c.last_activity_time) == (
        ConnectionState.CONNECTED,
        t2,
        t2,
    )
    assert (a.etag_revision, (await store.get_twin("a")).revision) == (1, 1)
    with pytest.raises(DeviceNotFoundError):
        await store.get_device("ghost")
    await store.record_presence([])


async def test_record_presence_never_moves_last_activity_back(store: SqlStore) -> None:
    await store.add_device(_device("a"))
    later, earlier = T0 + timedelta(seconds=10), T0 + timedelta(seconds=5)

    await store.record_presence(
        [
            PresenceUpdate("a", ConnectionState.CONNECTED, later),
            PresenceUpdate("a", None, earlier),
        ]
    )

    device = await store.get_device("a")
    assert (device.connection_state, device.last_activity_time) == (ConnectionState.CONNECTED, later)


async def test_reset_presence_disconnects_every_device(database_url: str) -> None:
    restart = T0 + timedelta(hours=1)
    async with SqlStore.open(database_url, clock=FixedClock(restart)) as store:
        await store.add_devices([_device("a"), _device("b"), _device("c")])
        await store.record_presence(
            [PresenceUpdate("a", ConnectionState.CONNECTED, T0), PresenceUpdate("b", ConnectionState.CONNECTED, T0)]
        )

        await store.reset_presence()

        devices = await store.list_devices()
        assert [d.connection_state for d in devices] == [ConnectionState.DISCONNECTED] * 3
        assert [d.connection_state_updated_time for d in devices] == [restart, restart, T0]
        assert [d.last_activity_time for d in devices] == [T0, T0, None]


# -- policies ----------------------------------------------------------------------------


def _policies(key_prefix: str) -> list[AccessPolicy]:
    return [
        AccessPolicy(name, f"{key_prefix}-{name}-1", f"{key_prefix}-{name}-2", rights)
        for name, rights in DEFAULT_POLICY_RIGHTS.items()
    ]


async def test_add_policies_inserts_new_names_and_keeps_existing(store: SqlStore) -> None:
    assert await store.list_policies() == []
    first = _policies("first")
    await store.add_policies(first[:2])

    empty = AccessPolicy("empty", "k1", "k2", frozenset())
    await store.add_policies([*_policies("second"), empty])

    expected = [*first[:2], *_policies("second")[2:], empty]
    assert await store.list_policies() == sorted(expected, key=lambda p: p.name)
    owner = next(p for p in await store.list_policies() if p.name == "iothubowner")
    assert owner.rights == frozenset(Right)
    await store.add_policies([])


# -- health and lifecycle ----------------------------------------------------------------


async def test_ping_answers_when_the_database_is_up(store: SqlStore) -> None:
    await store.ping()


def _join_stopped_aiosqlite_workers() -> None:
    # aiosqlite stops the worker thread of a failed connect without waiting for it; were the
    # test's event loop closed first, the worker's last call_soon_threadsafe would raise.
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            thread.join(timeout=5)


@pytest.mark.parametrize(
    "url_template",
    ["postgresql+asyncpg://postgres@127.0.0.1:1/test", "sqlite+aiosqlite:///{tmp_path}/missing-dir/fleethub.db"],
    ids=["postgres-closed-port", "sqlite-missing-dir"],
)
async def test_unreachable_database_is_service_unavailable(tmp_path: Path, url_template: str) -> None:
    url = url_template.format(tmp_path=tmp_path)

    async with SqlStore.open(url, migrate=False) as store:
        with pytest.raises(ServiceUnavailableError):
            await store.ping()
        with pytest.raises(ServiceUnavailableError):
            await store.get_device("dev-1")
        with pytest.raises(ServiceUnavailableError):
            await store.record_presence([PresenceUpdate("dev-1", None, T0)])

    with pytest.raises(ServiceUnavailableError) as caught:
        async with SqlStore.open(url):
            pass
    assert caught.value.__cause__ is not None
    _join_stopped_aiosqlite_workers()


async def test_open_accepts_plain_driver_schemes(database_url: str) -> None:
    plain = make_url(database_url).set(drivername=make_url(database_url).get_backend_name())
    async with SqlStore.open(plain.render_as_string(hide_password=False)) as store:
        await store.add_device(_device("dev-1"))
    if plain.get_backend_name() == "postgresql":
        postgres = plain.set(drivername="postgres").render_as_string(hide_password=False)
        async with SqlStore.open(postgres) as store:
            assert await store.count_devices() == 1


async def test_migrations_are_idempotent_and_match_the_tables(database_url: str) -> None:
    async with SqlStore.open(database_url) as store:
        await store.add_device(_device("dev-1"))
    async with SqlStore.open(database_url) as store:
        assert await store.count_devices() == 1

        def differences(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diffs: list[Any] = compare_metadata(context, metadata)
            return diffs

        async with store.engine.connect() as connection:
            diffs = await connection.run_sync(differences)

    def table_of(diff: Any) -> str | None:
        first = diff[0] if isinstance(diff, list) else diff
        for item in first[1:]:
            name = getattr(item, "name", None) if not isinstance(item, str) else item
            table = getattr(item, "table", None)
            if table is not None:
                return str(table.name)
            if name in ("devices", "access_policies"):
                return str(name)
        return None

    # Other tables may join the shared metadata; only this store's tables are checked here.
    assert [d for d in diffs if table_of(d) in ("devices", "access_policies")] == []


@pytest.mark.postgres
async def test_store_recovers_after_postgres_drops_its_connections(postgres_url: str) -> None:
    async with SqlStore.open(postgres_url) as store:
        await store.add_device(_device("dev-1"))
        name = make_url(postgres_url).database
        admin = await asyncpg.connect(
            make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        finally:
            await admin.close()

        await store.ping()
        assert (await store.get_device("dev-1")).device_id == "dev-1"
