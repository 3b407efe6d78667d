"""MQTT over WebSockets (``wss://{host}/$iothub/websocket``, subprotocol ``mqtt``) on the hub's
HTTPS listener: the same gateway as plain MQTT, so the same login, scope, limits, keepalive
and presence; bad frames close only their own connection."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hub.runtime import Hub
from tests.e2e.conftest import DeviceCreds, create_device, mqtt_client, next_message, wait_for_state
from tests.integration.gateway.gateway_support import connect_packet, publish_packet

PATH = "/$iothub/websocket"


def tls(hub: Hub) -> ssl.SSLContext:
    assert hub.endpoints is not None
    return ssl.create_default_context(cafile=str(hub.endpoints.ca_cert))


def ws_device(hub: Hub, creds: DeviceCreds, *, keepalive: int = 60) -> aiomqtt.Client:
    """What azure-iot-device does with websockets=True: paho over wss on the HTTPS port."""
    assert hub.endpoints is not None
    return aiomqtt.Client(
        "localhost",
        hub.endpoints.https_port,
        identifier=creds.device_id,
        username=f"localhost/{creds.device_id}/?api-version=2021-04-12",
        password=creds.token(),
        transport="websockets",
        websocket_path=PATH,
        tls_context=tls(hub),
        keepalive=keepalive,
        timeout=10,
    )


@asynccontextmanager
async def raw_ws(hub: Hub, **kwargs: object) -> AsyncIterator[ClientConnection]:
    assert hub.endpoints is not None
    async with connect(
        f"wss://localhost:{hub.endpoints.https_port}{PATH}",
        ssl=tls(hub),
        subprotocols=["mqtt"],  # type: ignore[list-item]
        max_size=None,
        **kwargs,  # type: ignore[arg-type]
    ) as ws:
        yield ws


async def connack(ws: ClientConnection) -> int:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, bytes)
    assert frame[0] == 0x20
    return frame[3]


async def read_until_closed(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 10)


async def read_messages(client: aiomqtt.Client) -> None:
    async with asyncio.timeout(10):
        async for _ in client.messages:
            pass


async def answer_methods(client: aiomqtt.Client) -> None:
    async for message in client.messages:
        topic = str(message.topic)
        if topic.startswith("$iothub/methods/POST/"):
            rid = topic.split("$rid=")[1]
            await client.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"over": "websockets"}')


async def assert_answers(api: httpx.AsyncClient, device_id: str) -> None:
    response = await api.post(
        f"/twins/{device_id}/methods", json={"methodName": "ping", "payload": None, "responseTimeoutInSeconds": 5}
    )
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == {"over": "websockets"}


async def test_a_device_over_websockets_does_everything_a_tcp_device_does(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with ws_device(hub, creds) as device:
        await device.subscribe("$iothub/twin/res/#")
        await device.subscribe("$iothub/twin/PATCH/properties/desired/#")
        await wait_for_state(api, creds.device_id, "Connected")
        await device.publish("$iothub/twin/GET/?$rid=1", b"")
        got = await next_message(device, "$iothub/twin/res/200/")
        assert json.loads(bytes(got.payload))["desired"]["$version"] == 1  # type: ignore[arg-type]
        await device.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"transport": "wss"}')
        assert str((await next_message(device, "$iothub/twin/res/")).topic).startswith("$iothub/twin/res/204/")
        await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"floor": 3}}})
        pushed = await next_message(device, "$iothub/twin/PATCH/properties/desired/")
        assert json.loads(bytes(pushed.payload))["floor"] == 3  # type: ignore[arg-type]
        twin = (await api.get(f"/twins/{creds.device_id}")).json()
        assert twin["properties"]["reported"]["transport"] == "wss"
        await device.subscribe("$iothub/methods/POST/#")
        async with asyncio.TaskGroup() as group:
            answering = group.create_task(answer_methods(device))
            await assert_answers(api, creds.device_id)
            answering.cancel()
    await wait_for_state(api, creds.device_id, "Disconnected")


async def test_a_websocket_without_the_mqtt_subprotocol_is_refused(hub: Hub) -> None:
    assert hub.endpoints is not None
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"wss://localhost:{hub.endpoints.https_port}{PATH}", ssl=tls(hub)):
            pass
    assert info.value.response.status_code == 403


async def test_a_wrong_token_over_websockets_gets_connack_5(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with raw_ws(hub) as ws:
        await ws.send(connect_packet(creds.device_id, "SharedAccessSignature sr=x&sig=y&se=1"))
        assert await connack(ws) == 5
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


async def test_keepalive_is_enforced_over_websockets(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with raw_ws(hub) as ws:
        await ws.send(connect_packet(creds.device_id, creds.token(), keepalive=1))
        assert await connack(ws) == 0
        await wait_for_state(api, creds.device_id, "Connected")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)  # silent past 1.5 x keepalive: closed
    await wait_for_state(api, creds.device_id, "Disconnected")


async def test_scope_holds_over_websockets(hub: Hub, api: httpx.AsyncClient) -> None:
    mine, other = await create_device(api), await create_device(api)
    async with raw_ws(hub) as ws:
        await ws.send(connect_packet(mine.device_id, mine.token()))
        assert await connack(ws) == 0
        suback = struct.pack("!H", 7)
        await ws.send(bytes([0x82, 2 + 2 + len(f"devices/{other.device_id}/#") + 1]) + suback
                      + struct.pack("!H", len(f"devices/{other.device_id}/#")) + f"devices/{other.device_id}/#".encode()
                      + b"\x01")  # fmt: skip
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(frame, bytes)
        assert frame[0] == 0x90  # SUBACK
        assert frame[-1] == 0x80  # failure


@pytest.mark.parametrize("bad", ["text frame", "garbage", "oversized frame", "oversized packet"])
async def test_a_bad_websocket_closes_only_itself(hub: Hub, api: httpx.AsyncClient, bad: str) -> None:
    good, victim = await create_device(api), await create_device(api)
    async with ws_device(hub, good) as device:
        await device.subscribe("$iothub/methods/POST/#")
        await wait_for_state(api, good.device_id, "Connected")
        async with raw_ws(hub) as ws:
            await ws.send(connect_packet(victim.device_id, victim.token()))
            assert await connack(ws) == 0
            # The gateway takes payloads up to 256 KiB (max_message_bytes) and frames up to
            # the largest packet that allows.
            if bad == "text frame":
                await ws.send("CONNECT?")
            elif bad == "garbage":
                await ws.send(b"\xff\xff\xff\xff\xff\x00")
            elif bad == "oversized frame":
                await ws.send(b"\x00" * (256 * 1024 + 64 * 1024 + 1))
            else:
                await ws.send(publish_packet(f"devices/{victim.device_id}/messages/events/", b"x" * (256 * 1024 + 1)))
            with pytest.raises(ConnectionClosed) as info:
                await read_until_closed(ws)
            if bad in ("text frame", "oversized frame"):
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == {"text frame": 1003, "oversized frame": 1009}[bad]
        await wait_for_state(api, victim.device_id, "Disconnected")
        async with asyncio.TaskGroup() as group:
            answering = group.create_task(answer_methods(device))
            await assert_answers(api, good.device_id)
            answering.cancel()


async def test_one_gateway_two_transports_one_connection_per_device(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with ws_device(hub, creds) as over_websockets:
        await wait_for_state(api, creds.device_id, "Connected")
        async with mqtt_client(hub, creds) as over_tcp:
            with pytest.raises(aiomqtt.MqttError):
                await read_messages(over_websockets)
            await over_tcp.subscribe("$iothub/methods/POST/#")
            async with asyncio.TaskGroup() as group:
                answering = group.create_task(answer_methods(over_tcp))
                await assert_answers(api, creds.device_id)
                answering.cancel()
