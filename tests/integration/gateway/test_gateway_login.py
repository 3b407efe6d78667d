"""Login, refusal and takeover on the real gateway."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from gateway_support import RecordingEvents, device_client, good_password, next_message, raw_client, unique_id

from hub.gateway import Gateway

NOT_AUTHORIZED = 5
SERVER_UNAVAILABLE = 3


async def test_accepted_login_marks_device_connected(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id):
        assert await gateway.wait_connected(device_id, 5)
        await events.wait_for(lambda: events.presence(device_id) == ["connected"])
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert not gateway.is_connected(device_id)


async def test_wrong_password_gets_connack_5_and_the_socket_closed(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, "wrong") == (0, NOT_AUTHORIZED)
        await client.wait_closed()
    assert not gateway.is_connected(device_id)
    assert events.presence(device_id) == []


async def test_aiomqtt_sees_the_refusal(gateway: Gateway) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with device_client(gateway.mqtt_port, device_id, password="wrong"):
            pass
    assert str(info.value.rc) == "Not authorized"


@pytest.mark.parametrize("clean", [True, False])
async def test_failed_login_with_a_live_device_id_leaves_the_device_alone(
    gateway: Gateway, events: RecordingEvents, clean: bool
) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id, clean_session=False) as device:
        await events.wait_for(lambda: events.presence(device_id) == ["connected"])
        async with raw_client(gateway.mqtt_port) as rogue:
            assert await rogue.connect(device_id, "stolen-id-wrong-key", clean=clean) == (0, NOT_AUTHORIZED)
            await rogue.wait_closed()
        assert gateway.is_connected(device_id)
        await gateway.send(device_id, "$iothub/methods/POST/lockDoor/?$rid=1", b"{}")
        message = await next_message(device)
        assert message.topic.value == "$iothub/methods/POST/lockDoor/?$rid=1"
        assert events.presence(device_id) == ["connected"]


async def test_failing_authentication_answers_server_unavailable(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    events.auth_errors.add(device_id)
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, SERVER_UNAVAILABLE)
        await client.wait_closed()
    assert not gateway.is_connected(device_id)


@pytest.mark.parametrize("client_id", ["dev+", "dev#1"])
async def test_ids_with_wildcard_characters_may_log_in(gateway: Gateway, client_id: str) -> None:
    # Valid IoT Hub device ids; the scope rules keep them to $iothub/ topics.
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(client_id, good_password(client_id)) == (0, 0)


@pytest.mark.parametrize("client_id", ["", "a/b"])
async def test_client_ids_unfit_for_topics_are_refused(gateway: Gateway, client_id: str) -> None:
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        _, code = await client.connect(client_id, good_password(client_id))
        assert code in (2, NOT_AUTHORIZED)
        await client.wait_closed()


async def test_takeover_closes_the_old_connection_and_leaves_the_device_connected(
    gateway: Gateway, events: RecordingEvents
) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as first, raw_client(gateway.mqtt_port) as second:
        assert await first.connect(device_id, good_password(device_id), clean=False) == (0, 0)
        await events.wait_for(lambda: events.presence(device_id) == ["connected"])
        assert await second.connect(device_id, good_password(device_id), clean=False) == (0, 0)
        await first.wait_closed()
        await events.wait_for(lambda: len(events.presence(device_id)) == 3)
        assert events.presence(device_id) == ["connected", "disconnected", "connected"]
        assert gateway.is_connected(device_id)
        await gateway.send(device_id, "$iothub/twin/PATCH/properties/desired/?$version=2", b"{}")
        assert await second.next_publish() == ("$iothub/twin/PATCH/properties/desired/?$version=2", b"{}")


async def test_concurrent_logins_of_one_device_end_with_one_live_connection(
    gateway: Gateway, events: RecordingEvents
) -> None:
    device_id = unique_id()
    port = gateway.mqtt_port
    assert port

    async def log_in(ready: asyncio.Event, done: asyncio.Event) -> None:
        async with raw_client(port) as client:
            await client.connect(device_id, good_password(device_id))
            ready.set()
            await done.wait()

    done = asyncio.Event()
    readies = [asyncio.Event() for _ in range(6)]
    async with asyncio.TaskGroup() as group:
        for ready in readies:
            group.create_task(log_in(ready, done))
        for ready in readies:
            await ready.wait()
        await events.wait_for(
            lambda: (
                events.presence(device_id).count("connected") == 6
                and events.presence(device_id).count("disconnected") == 5
            )
        )
        presence = events.presence(device_id)
        assert presence[-1] == "connected"
        assert presence == ["connected", "disconnected"] * 5 + ["connected"]
        assert gateway.is_connected(device_id)
        done.set()
    await events.wait_for(lambda: events.presence(device_id)[-1] == "disconnected")
