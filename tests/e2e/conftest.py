"""A real hub in-process (SQLite or PostgreSQL, real sockets on free ports) and helpers to talk to it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import pytest

from hub.config import Settings
from hub.runtime import Hub
from hub.wire.sas import device_resource_uri, generate_sas_token


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


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(
        base_url=hub.endpoints.http_url, timeout=30, headers={"Authorization": service_token(hub)}
    ) as client:
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
    response = await api.put(f"/devices/{device_id}", json={"deviceId": device_id})
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
    import asyncio

    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if str(message.topic).startswith(prefix):
                return message
    raise AssertionError("message stream ended")


def body(message: aiomqtt.Message) -> object:
    payload = message.payload
    assert isinstance(payload, bytes | bytearray)
    return json.loads(payload) if payload else None
