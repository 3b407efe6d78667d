"""The whole hub on PostgreSQL: registry, MQTT devices, methods, twins, etag races and presence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from hub.domain.devices import ConnectionState
from hub.runtime import Hub
from job_client import AsyncRegistryClient, PreconditionFailedError
from job_client.jobs import AsyncJobClient
from job_client.models import JobStatus, MethodParams
from tests.e2e.conftest import (
    body,
    create_device,
    fleet_of,
    hub_settings,
    mqtt_client,
    next_message,
    service_token,
    simulated_device,
    wait_for_state,
    wait_for_twin,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def hub(tmp_path: Path, postgres_url: str) -> AsyncIterator[Hub]:
    """Overrides the SQLite hub of tests/e2e/conftest.py, so ``api`` and ``registry`` talk to this one."""
    async with Hub(hub_settings(tmp_path / "data", database_url=postgres_url)) as running:
        yield running


async def _stored_state(hub: Hub, device_id: str, wanted: ConnectionState, timeout: float = 15) -> None:
    """Wait until the presence flush has written ``wanted`` to PostgreSQL (not only the in-memory overlay)."""
    assert hub.services is not None
    store = hub.services.store
    async with asyncio.timeout(timeout):
        while (await store.get_device(device_id)).connection_state is not wanted:
            await asyncio.sleep(0.05)


async def test_hub_runs_on_postgres(hub: Hub, postgres_url: str) -> None:
    assert hub.settings.resolved_database_url == postgres_url
    assert hub.services is not None
    await hub.services.store.ping()
    assert {"iothubowner", "service", "registryRead", "registryReadWrite"} <= set(hub.services.policies)


async def test_device_method_desired_and_reported_on_postgres(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    creds = await create_device(api, "pg-dev-$1'")
    assert (await registry.get_device(creds.device_id)).primary_key == creds.primary_key

    async with simulated_device(hub, creds) as device:
        await device.wait_connected(15)
        await wait_for_state(api, creds.device_id)

        result = await registry.invoke_method(creds.device_id, "lockDoor", {"door": "front"}, response_timeout=10)
        assert (result.status, result.payload) == (200, {"locked": True})

        path = f"/twins/{quote(creds.device_id, safe='')}"
        response = await api.patch(path, json={"tags": {"floor": 3}, "properties": {"desired": {"fan": "on"}}})
        assert response.status_code == 200, response.text
        version = response.json()["properties"]["desired"]["$version"]
        async with asyncio.timeout(15):
            while device.desired.get("fan") != "on":
                await asyncio.sleep(0.02)
        assert device.desired_version == version

        reported_version = await device.patch_reported({"battery": {"level": 97}, "firmware": "2.0"}, 10)
        assert reported_version is not None
        twin = await wait_for_twin(
            api,
            creds.device_id,
            lambda t: (
                t["properties"]["reported"].get("lastDesiredVersion") == version
                and t["properties"]["reported"].get("firmware") == "2.0"
            ),
        )
        reported = twin["properties"]["reported"]
        assert reported["battery"] == {"level": 97}
        assert reported["fan"] == "on"
        assert reported["$version"] >= reported_version
        assert "$lastUpdated" in reported["$metadata"]["battery"]["level"]
        assert twin["tags"] == {"floor": 3}


async def test_raw_mqtt_desired_push_and_reported_patch_on_postgres(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api, "pg-raw-1")
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/twin/#")
        await wait_for_state(api, creds.device_id)

        response = await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"building": "43"}}})
        assert response.status_code == 200
        message = await next_message(client, "$iothub/twin/PATCH/properties/desired/")
        assert str(message.topic) == "$iothub/twin/PATCH/properties/desired/?$version=2"
        assert body(message) == {"building": "43", "$version": 2}

        await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=r1", json.dumps({"temp": 21.5}))
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic) == "$iothub/twin/res/204/?$rid=r1&$version=2"

        await client.publish("$iothub/twin/GET/?$rid=g1", b"")
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic).startswith("$iothub/twin/res/200/?$rid=g1")
        doc = body(reply)
        assert isinstance(doc, dict)
        assert doc["desired"]["building"] == "43"
        assert doc["reported"]["temp"] == 21.5

    twin = (await api.get(f"/twins/{creds.device_id}")).json()
    assert twin["properties"]["reported"]["temp"] == 21.5


async def test_concurrent_tag_increments_with_if_match_on_postgres(
    api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    creds = await create_device(api, "pg-counter")

    async def increment() -> None:
        while True:
            twin = await registry.get_twin(creds.device_id)
            counter = twin.tags.get("counter", 0)
            try:
                await registry.update_twin(creds.device_id, {"tags": {"counter": counter + 1}}, etag=twin.etag)
            except PreconditionFailedError:
                continue
            return

    async with asyncio.timeout(120):
        await asyncio.gather(*(increment() for _ in range(20)))

    twin = await registry.get_twin(creds.device_id)
    assert twin.tags["counter"] == 20
    # Every successful PATCH bumped the version exactly once; the refused ones did not.
    created_version = 1
    assert twin.version == created_version + 20


async def test_presence_connected_then_disconnected_on_postgres(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api, "pg-presence")
    before = (await api.get(f"/twins/{creds.device_id}")).json()
    assert before["connectionState"] == "Disconnected"

    async with mqtt_client(hub, creds):
        await wait_for_state(api, creds.device_id)
        await _stored_state(hub, creds.device_id, ConnectionState.CONNECTED)
        device = (await api.get(f"/devices/{creds.device_id}")).json()
        assert device["connectionState"] == "Connected"
        assert device["lastActivityTime"] is not None

    await wait_for_state(api, creds.device_id, "Disconnected")
    await _stored_state(hub, creds.device_id, ConnectionState.DISCONNECTED)
    assert hub.services is not None
    stored = await hub.services.store.get_device(creds.device_id)
    assert stored.last_activity_time is not None


def _client(running: Hub) -> httpx.AsyncClient:
    assert running.endpoints is not None
    return httpx.AsyncClient(
        base_url=running.endpoints.http_url, timeout=30, headers={"Authorization": service_token(running)}
    )


async def test_state_survives_a_restart_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    settings = hub_settings(tmp_path / "data", database_url=postgres_url)
    async with Hub(settings) as first, _client(first) as api:
        creds = await create_device(api, "pg-restart")
        response = await api.patch(f"/twins/{creds.device_id}", json={"tags": {"kept": True}})
        assert response.status_code == 200
        async with mqtt_client(first, creds):
            await _stored_state(first, creds.device_id, ConnectionState.CONNECTED)

    async with Hub(settings) as second, _client(second) as api:
        twin = (await api.get(f"/twins/{creds.device_id}")).json()
        assert twin["tags"] == {"kept": True}
        # Presence is reset at start: nothing is connected to a hub that just started.
        assert twin["connectionState"] == "Disconnected"
        device = (await api.get(f"/devices/{creds.device_id}")).json()
        assert device["authentication"]["symmetricKey"]["primaryKey"] == creds.primary_key
        async with mqtt_client(second, creds):
            await wait_for_state(api, creds.device_id)


async def test_method_and_twin_jobs_on_postgres(hub: Hub, registry: AsyncRegistryClient, jobs: AsyncJobClient) -> None:
    await registry.create_device("pg-offline")
    async with fleet_of(hub, registry, 5, "pg-job-") as fleet:
        await jobs.schedule_device_method(
            "pg-lock", "STARTSWITH(deviceId, 'pg-job-')", MethodParams("lockDoor", {}, 10)
        )
        lock = await jobs.wait_for_job("pg-lock", poll_interval=0.1, timeout=60)
        assert lock.status is JobStatus.COMPLETED
        assert (lock.statistics.device_count, lock.statistics.succeeded_count) == (5, 5)
        patch = {"tags": {"building": "43"}, "properties": {"desired": {"floor": 3}}}
        await jobs.schedule_twin_update("pg-move", "*", patch)
        move = await jobs.wait_for_job("pg-move", poll_interval=0.1, timeout=60)
        assert (move.statistics.device_count, move.statistics.succeeded_count) == (6, 6)
        assert (await registry.get_twin("pg-offline")).tags == {"building": "43"}
        for device in fleet:
            async with asyncio.timeout(10):
                while device.desired.get("floor") != 3:
                    await asyncio.sleep(0.05)
