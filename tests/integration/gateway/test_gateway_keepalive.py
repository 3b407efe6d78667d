"""Keepalive as IoT Hub enforces it: 1.5 x the client's keepalive of silence drops it."""

from __future__ import annotations

import asyncio

from gateway_support import RecordingEvents, good_password, raw_client, unique_id

from hub.gateway import Gateway


async def test_a_silent_client_is_dropped(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id), keepalive=1) == (0, 0)
        assert await gateway.wait_connected(device_id, 5)
        await client.wait_closed(timeout=5)  # 1.5 s of silence is the rule; 5 s is the test's bound
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert not gateway.is_connected(device_id)


async def test_a_pinging_client_stays(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id), keepalive=1) == (0, 0)
        for _ in range(6):  # 3 s, twice the allowed silence
            await client.ping()
            assert await client.read_packet() == (0xD0, b"")
            await asyncio.sleep(0.5)
        assert gateway.is_connected(device_id)
    assert events.presence(device_id)[0] == "connected"
