"""A real hub in-process (SQLite or PostgreSQL, real sockets on free ports) and helpers to talk to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomqtt
import httpx
import pytest

from device_sim import Behaviours, DeviceIdentity, Fleet, MqttEndpoint, SimulatedDevice
from hub.config import Settings
from hub.runtime import Hub
from hub.wire.sas import ConnectionString, device_resource_uri, generate_sas_token
from job_client import AsyncRegistryClient
from job_client.jobs import AsyncJobClient
from tests.e2e.processes import Launcher


def hub_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings(
        data_dir=data_dir,
        bind_address="127.0.0.1",
        http_port=0,
        https_port=0,
        mqtt_port=0,
        mqtts_port=0,
        database_url=database_url,
        presence_flush_seconds=0.05,
    )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with Hub(hub_settings(tmp_path / "data")) as running:
        yield running


def service_token(hub: Hub, policy: str = "iothubowner", ttl: int = 3600) -> str:
    assert hub.services is not None
    p = hub.services.policies[policy]
    return generate_sas_token(hub.settings.hostname, p.primary_key, ttl=ttl, key_name=policy)


def api_client(hub: Hub, timeout: float = 30) -> httpx.AsyncClient:
    """An HTTP client for the hub's plain REST port, signed as iothubowner."""
    assert hub.endpoints is not None
    return httpx.AsyncClient(
        base_url=hub.endpoints.http_url, timeout=timeout, headers={"Authorization": service_token(hub)}
    )


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(hub) as client:
        yield client


@dataclass
class DeviceCreds:
    device_id: str
    primary_key: str
    secondary_key: str

    def token(self, hostname: str = "localhost", ttl: int = 3600, key: str | None = None) -> str:
        return generate_sas_token(device_resource_uri(hostname, self.device_id), key or self.primary_key, ttl=ttl)


async def create_device(api: httpx.AsyncClient, device_id: str | None = None) -> DeviceCreds:
    device_id = device_id or f"dev-{uuid.uuid4().hex[:8]}"
    response = await api.put(f"/devices/{quote(device_id, safe='')}", json={"deviceId": device_id})
    assert response.status_code == 200, response.text
    keys = response.json()["authentication"]["symmetricKey"]
    return DeviceCreds(device_id, keys["primaryKey"], keys["secondaryKey"])


def mqtt_client(hub: Hub, creds: DeviceCreds, *, password: str | None = None, keepalive: int = 60) -> aiomqtt.Client:
    assert hub.endpoints is not None
    return aiomqtt.Client(
        "127.0.0.1",
        hub.endpoints.mqtt_port,
        identifier=creds.device_id,
        username=f"localhost/{creds.device_id}/?api-version=2021-04-12",
        password=password if password is not None else creds.token(),
        clean_session=False,
        keepalive=keepalive,
    )


async def next_message(client: aiomqtt.Client, prefix: str, timeout: float = 10) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if str(message.topic).startswith(prefix):
                return message
    raise AssertionError("message stream ended")


def body(message: aiomqtt.Message) -> object:
    payload = message.payload
    assert isinstance(payload, bytes | bytearray)
    return json.loads(payload) if payload else None


# -- helpers for the SDK and simulator suites ---------------------------------------------------


def connection_string(hub: Hub, policy: str = "iothubowner", *, hostname: str | None = None) -> str:
    """The service connection string of ``policy``; ``hostname`` overrides HostName (it may carry a port)."""
    assert hub.services is not None
    key = hub.services.policies[policy].primary_key
    return str(ConnectionString(hostname or hub.settings.hostname, key, key_name=policy))


def device_endpoint(hub: Hub, *, tls: bool = False) -> MqttEndpoint:
    """Where simulated devices reach the in-process hub: plain MQTT, or MQTT over TLS checked against its CA."""
    assert hub.endpoints is not None
    if tls:
        return MqttEndpoint.for_hub(
            "localhost", host="127.0.0.1", port=hub.endpoints.mqtts_port, tls=True, ca_cert=hub.endpoints.ca_cert
        )
    return MqttEndpoint.for_hub("localhost", host="127.0.0.1", port=hub.endpoints.mqtt_port, tls=False)


def simulated_device(
    hub: Hub, creds: DeviceCreds, *, tls: bool = False, behaviours: Behaviours | None = None
) -> SimulatedDevice:
    """A SimulatedDevice for ``creds`` (not started)."""
    identity = DeviceIdentity(hub.settings.hostname, creds.device_id, creds.primary_key)
    return SimulatedDevice(identity, device_endpoint(hub, tls=tls), behaviours=behaviours)


@pytest.fixture
async def registry(hub: Hub) -> AsyncIterator[AsyncRegistryClient]:
    """job_client's async registry client as iothubowner over plain HTTP."""
    assert hub.endpoints is not None
    async with AsyncRegistryClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url) as client:
        yield client


async def wait_for_twin(
    api: httpx.AsyncClient, device_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    """Poll ``GET /twins/{device_id}`` until ``check(twin)`` holds; ``timeout`` is only an upper bound."""
    twin: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                response = await api.get(f"/twins/{quote(device_id, safe='')}")
                if response.status_code == 200:
                    twin = response.json()
                    if check(twin):
                        return twin
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"twin of {device_id} never matched; last seen: {twin}") from None


async def wait_for_state(api: httpx.AsyncClient, device_id: str, state: str = "Connected", timeout: float = 15) -> None:
    await wait_for_twin(api, device_id, lambda twin: twin.get("connectionState") == state, timeout)


@pytest.fixture
async def launcher(tmp_path: Path) -> AsyncIterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        await launcher.kill_all()


@pytest.fixture
async def jobs(hub: Hub) -> AsyncIterator[AsyncJobClient]:
    assert hub.endpoints is not None
    async with AsyncJobClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url) as client:
        yield client


@contextlib.asynccontextmanager
async def fleet_of(
    hub: Hub, registry: AsyncRegistryClient, count: int, prefix: str, behaviours: Behaviours | None = None
) -> AsyncIterator[Fleet]:
    fleet = await Fleet.provision(registry, device_endpoint(hub), count=count, prefix=prefix, behaviours=behaviours)
    await fleet.start()
    assert await fleet.wait_connected(timeout=30)
    try:
        yield fleet
    finally:
        await fleet.stop()
