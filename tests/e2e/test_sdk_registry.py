"""job_client against a real hub: plain HTTP and HTTPS with the hub's CA, devices, twins, methods, errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from hub.runtime import Hub
from job_client import (
    AsyncRegistryClient,
    ConnectionState,
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceSpec,
    DeviceStatus,
    FleetHubConnectionError,
    ForbiddenError,
    PreconditionFailedError,
    RegistryClient,
    Twin,
    TwinProperties,
    UnauthorizedError,
)
from job_client.errors import DeviceAlreadyExistsError
from tests.e2e.conftest import DeviceCreds, connection_string, simulated_device, wait_for_state

# Characters IoT Hub allows in device ids that mean something in a URL.
_ODD = "#?%$'"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["http", "https"])
async def client(hub: Hub, request: pytest.FixtureRequest) -> AsyncIterator[AsyncRegistryClient]:
    """iothubowner over plain HTTP (url override), or over HTTPS where the connection string's
    HostName carries the port and the hub's CA is the trust root (no url override)."""
    assert hub.endpoints is not None
    if request.param == "http":
        sdk = AsyncRegistryClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url)
    else:
        cs = connection_string(hub, hostname=f"localhost:{hub.endpoints.https_port}")
        sdk = AsyncRegistryClient.from_connection_string(cs, ca_cert=hub.endpoints.ca_cert)
    async with sdk:
        yield sdk


async def test_https_checks_the_certificate_against_the_hub_ca(hub: Hub) -> None:
    assert hub.endpoints is not None
    cs = connection_string(hub, hostname=f"localhost:{hub.endpoints.https_port}")
    async with AsyncRegistryClient.from_connection_string(cs) as untrusting:
        with pytest.raises(FleetHubConnectionError, match="https://localhost:"):
            await untrusting.list_devices()
    async with AsyncRegistryClient.from_connection_string(cs, ca_cert=hub.endpoints.ca_cert) as trusting:
        assert await trusting.list_devices() == []


async def test_device_crud_with_odd_ids(client: AsyncRegistryClient) -> None:
    ids = [f"{_unique('crud')}{ch}x" for ch in _ODD] + [_unique("crud") + _ODD]
    for device_id in ids:
        created = await client.create_device(device_id)
        assert created.device_id == device_id
        assert created.primary_key
        assert created.secondary_key
        assert created.primary_key != created.secondary_key
        assert created.status is DeviceStatus.ENABLED
        assert created.connection_state is ConnectionState.DISCONNECTED

        fetched = await client.get_device(device_id)
        assert fetched.device_id == device_id
        assert fetched.etag == created.etag
        assert fetched.primary_key == created.primary_key

    given = await client.create_device(_unique("keys"), primary_key="A" * 44, secondary_key="B" * 44)
    assert (given.primary_key, given.secondary_key) == ("A" * 44, "B" * 44)

    listed = {device.device_id for device in await client.list_devices()}
    assert set(ids) | {given.device_id} <= listed

    with pytest.raises(DeviceAlreadyExistsError):
        await client.create_device(ids[0])

    with pytest.raises(PreconditionFailedError):
        await client.delete_device(ids[0], etag='"AAAAAAAAAAA="')
    current = await client.get_device(ids[0])
    await client.delete_device(ids[0], etag=current.etag)
    for device_id in ids[1:]:
        await client.delete_device(device_id)
    for device_id in ids:
        with pytest.raises(DeviceNotFoundError):
            await client.get_device(device_id)
    listed = {device.device_id for device in await client.list_devices()}
    assert not set(ids) & listed


@pytest.mark.parametrize("device_id", [".", "..", "x%41y", "%25"])
async def test_dot_and_percent_ids_are_addressable(
    hub: Hub, client: AsyncRegistryClient, api: httpx.AsyncClient, device_id: str
) -> None:
    # "." and ".." are valid ids; as bare URL path segments they would be dropped as dot segments.
    created = await client.create_device(device_id)
    assert created.device_id == device_id
    assert (await client.get_device(device_id)).device_id == device_id
    assert (await client.update_twin(device_id, {"tags": {"id": device_id}})).tags == {"id": device_id}
    assert created.primary_key is not None
    assert created.secondary_key is not None
    async with simulated_device(hub, DeviceCreds(device_id, created.primary_key, created.secondary_key)) as device:
        await device.wait_connected(15)
        result = await client.invoke_method(device_id, "lockDoor", response_timeout=10)
        assert (result.status, result.payload) == (200, {"locked": True})
    await client.delete_device(device_id)
    with pytest.raises(DeviceNotFoundError):
        await client.get_twin(device_id)
    # The neighbours a wrong decoding would hit do not exist.
    assert [d.device_id for d in await client.list_devices()] == []


async def test_bulk_create_reports_existing_ids(client: AsyncRegistryClient) -> None:
    prefix = _unique("bulk")
    existing = f"{prefix}-old{_ODD}"
    await client.create_device(existing)
    fresh = [f"{prefix}-{i:03d}" for i in range(25)]
    specs: list[str | DeviceSpec] = [*fresh[:-1], DeviceSpec(fresh[-1], primary_key="C" * 44), existing]

    result = await client.bulk_create_devices(specs)

    assert not result.is_successful
    assert [(e.device_id, e.error_code) for e in result.errors] == [(existing, "DeviceAlreadyExists")]
    for device_id in fresh:
        device = await client.get_device(device_id)
        assert device.primary_key
    assert (await client.get_device(fresh[-1])).primary_key == "C" * 44

    clean = await client.bulk_create_devices([f"{prefix}-new"])
    assert clean.is_successful
    assert clean.errors == []


async def test_twin_get_update_replace_with_etags(client: AsyncRegistryClient) -> None:
    device_id = _unique("twin") + "#$"
    await client.create_device(device_id)
    twin = await client.get_twin(device_id)
    assert twin.device_id == device_id
    assert twin.etag
    assert twin.tags == {}
    assert twin.properties.desired_version == 1

    updated = await client.update_twin(
        device_id, {"tags": {"site": "a"}, "properties": {"desired": {"fan": "on"}}}, etag=twin.etag
    )
    assert updated.tags == {"site": "a"}
    assert updated.desired["fan"] == "on"
    assert updated.properties.desired_version == 2
    assert updated.etag != twin.etag

    with pytest.raises(PreconditionFailedError) as stale:
        await client.update_twin(device_id, {"tags": {"site": "b"}}, etag=twin.etag)
    assert stale.value.status == 412
    with pytest.raises(PreconditionFailedError):
        await client.replace_twin(device_id, {"tags": {}, "properties": {"desired": {}}}, etag=twin.etag)
    assert (await client.get_twin(device_id)).tags == {"site": "a"}

    # Replace from the typed model: its to_json() carries tags and desired.
    current = await client.get_twin(device_id)
    replacement = Twin(
        device_id=device_id,
        etag=current.etag,
        version=current.version,
        tags={"only": True},
        properties=TwinProperties({"mode": "eco"}, {}),
    )
    replaced = await client.replace_twin(device_id, replacement, etag=current.etag)
    assert replaced.tags == {"only": True}
    assert {k: v for k, v in replaced.desired.items() if not k.startswith("$")} == {"mode": "eco"}

    # A merge patch with null deletes; no etag means unconditional.
    cleared = await client.update_twin(device_id, {"tags": {"only": None}})
    assert cleared.tags == {}

    with pytest.raises(DeviceNotFoundError):
        await client.get_twin(_unique("nobody"))


async def test_invoke_method_on_a_simulated_device(
    hub: Hub, client: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    device_id = _unique("door") + "?%"
    created = await client.create_device(device_id)
    assert created.primary_key is not None
    assert created.secondary_key is not None
    creds = DeviceCreds(device_id, created.primary_key, created.secondary_key)
    async with simulated_device(hub, creds) as device:
        await device.wait_connected(15)
        await wait_for_state(api, device_id)
        assert (await client.get_device(device_id)).connected

        result = await client.invoke_method(device_id, "lockDoor", {"door": "front"}, response_timeout=10)
        assert result.status == 200
        assert result.ok
        assert result.payload == {"locked": True}

        unknown = await client.invoke_method(device_id, "selfDestruct", response_timeout=10)
        assert unknown.status == 404
        assert not unknown.ok
    assert device.stats.methods_handled == 2

    await wait_for_state(api, device_id, "Disconnected")
    with pytest.raises(DeviceNotOnlineError) as offline:
        await client.invoke_method(device_id, "lockDoor", response_timeout=5)
    assert offline.value.status == 404
    assert offline.value.code == "DeviceNotOnline"


async def test_method_on_unknown_device_is_device_not_found(client: AsyncRegistryClient) -> None:
    with pytest.raises(DeviceNotFoundError) as info:
        await client.invoke_method(_unique("ghost") + _ODD, "lockDoor", response_timeout=5)
    assert info.value.status == 404
    assert info.value.code == "DeviceNotFound"


async def test_wrong_key_is_unauthorized(hub: Hub) -> None:
    assert hub.endpoints is not None
    good = connection_string(hub)
    wrong = good.rsplit("SharedAccessKey=", 1)[0] + "SharedAccessKey=" + "QUJD" * 11
    async with AsyncRegistryClient.from_connection_string(wrong, url=hub.endpoints.http_url) as client:
        with pytest.raises(UnauthorizedError) as info:
            await client.list_devices()
        assert info.value.status == 401
        with pytest.raises(UnauthorizedError):
            await client.create_device(_unique("nope"))
    async with AsyncRegistryClient.from_connection_string(good, url=hub.endpoints.http_url) as client:
        assert [d.device_id for d in await client.list_devices()] == []


async def test_read_only_policy_is_forbidden_to_write(hub: Hub, registry: AsyncRegistryClient) -> None:
    assert hub.endpoints is not None
    device_id = _unique("ro")
    await registry.create_device(device_id)
    cs = connection_string(hub, "registryRead")
    async with AsyncRegistryClient.from_connection_string(cs, url=hub.endpoints.http_url) as reader:
        assert (await reader.get_device(device_id)).device_id == device_id
        assert device_id in {d.device_id for d in await reader.list_devices()}
        with pytest.raises(ForbiddenError) as info:
            await reader.create_device(_unique("ro-new"))
        assert info.value.status == 403
        assert info.value.code == "IotHubUnauthorized"
        with pytest.raises(ForbiddenError):
            await reader.delete_device(device_id)
        with pytest.raises(ForbiddenError):
            await reader.bulk_create_devices([_unique("ro-bulk")])
    await registry.get_device(device_id)  # still there


async def test_sync_client_from_a_worker_thread(hub: Hub, registry: AsyncRegistryClient) -> None:
    assert hub.endpoints is not None
    cs = connection_string(hub)
    url = hub.endpoints.http_url
    device_id = _unique("sync") + _ODD

    def round_trip() -> tuple[str, dict[str, object], str]:
        with RegistryClient.from_connection_string(cs, url=url) as sync:
            created = sync.create_device(device_id)
            twin = sync.update_twin(device_id, {"tags": {"from": "thread"}})
            with pytest.raises(DeviceNotOnlineError):
                sync.invoke_method(device_id, "lockDoor", response_timeout=5)
            return created.device_id, twin.tags, sync.get_device(device_id).device_id

    created_id, tags, fetched_id = await asyncio.to_thread(round_trip)
    assert created_id == fetched_id == device_id
    assert tags == {"from": "thread"}
    assert (await registry.get_twin(device_id)).tags == {"from": "thread"}

    # On the event loop's own thread the blocking client refuses instead of deadlocking.
    sync = RegistryClient.from_connection_string(cs, url=url)
    try:
        with pytest.raises(RuntimeError, match="running event loop"):
            sync.get_device(device_id)
    finally:
        await asyncio.to_thread(sync.close)
