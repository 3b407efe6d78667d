"""Device publishes, hub sends and topic scoping on the real gateway."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from gateway_support import (
    TWIN_BODY,
    RecordingEvents,
    bound_socket,
    device_client,
    good_password,
    next_message,
    raw_client,
    unique_id,
)

from broker_config import GatewayConfig
from hub.errors import DeviceNotOnlineError
from hub.gateway import Gateway

METHOD_TOPIC = "$iothub/methods/POST/lockDoor/?$rid=7"


async def test_twin_get_round_trip_and_the_connection_keeps_working(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id) as device:
        await device.subscribe("$iothub/twin/res/#", qos=1)
        await device.publish("$iothub/twin/GET/?$rid=1", b"")
        message = await next_message(device)
        assert message.topic.value == "$iothub/twin/res/200/?$rid=1"
        assert message.payload == TWIN_BODY

        # amqtt's stock broker leaves the connection half-dead after a `$` publish.
        await device.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"temp": 21}', qos=1)
        message = await next_message(device)
        assert message.topic.value == "$iothub/twin/res/204/?$rid=2&$version=2"
        await device.subscribe("$iothub/methods/POST/#", qos=1)
        await device.publish("$iothub/methods/res/200/?$rid=9", b'{"ok": true}', qos=1)
        await events.wait_for(
            lambda: ("$iothub/methods/res/200/?$rid=9", b'{"ok": true}') in events.messages(device_id)
        )
        await device.publish("$iothub/twin/GET/?$rid=3", b"")
        assert (await next_message(device)).topic.value == "$iothub/twin/res/200/?$rid=3"
    assert [topic for topic, _ in events.messages(device_id)] == [
        "$iothub/twin/GET/?$rid=1",
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        "$iothub/methods/res/200/?$rid=9",
        "$iothub/twin/GET/?$rid=3",
    ]


async def test_own_telemetry_reaches_the_hub(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id) as device:
        await device.publish(f"devices/{device_id}/messages/events/a=1&b=2", b"hello", qos=1)
        await device.publish(f"devices/{device_id}/messages/events", b"bare")
        await events.wait_for(lambda: len(events.messages(device_id)) == 2)
    assert events.messages(device_id) == [
        (f"devices/{device_id}/messages/events/a=1&b=2", b"hello"),
        (f"devices/{device_id}/messages/events", b"bare"),
    ]


async def test_send_reaches_only_the_target_device(gateway: Gateway) -> None:
    target, other = unique_id("target"), unique_id("other")
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, target) as device, device_client(gateway.mqtt_port, other) as bystander:
        await device.subscribe("$iothub/methods/POST/#", qos=1)
        await bystander.subscribe("$iothub/methods/POST/#", qos=1)
        await gateway.send(target, METHOD_TOPIC, b'{"door": 1}')
        message = await next_message(device)
        assert (message.topic.value, message.payload) == (METHOD_TOPIC, b'{"door": 1}')
        # Sent after the first one on the same path: had the first leaked, it came first.
        await gateway.send(other, "$iothub/methods/POST/marker/?$rid=8", b"null")
        assert (await next_message(bystander)).topic.value == "$iothub/methods/POST/marker/?$rid=8"


async def test_send_arrives_without_a_subscription_after_reconnect(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id, clean_session=False) as device:
        await device.subscribe("$iothub/methods/POST/#", qos=1)
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    async with device_client(gateway.mqtt_port, device_id, clean_session=False) as device:
        assert await gateway.wait_connected(device_id, 5)
        await gateway.send(device_id, METHOD_TOPIC, b"null")
        message = await next_message(device)
        assert (message.topic.value, message.payload) == (METHOD_TOPIC, b"null")


async def test_subscriptions_outside_the_device_scope_get_0x80(gateway: Gateway) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        codes = await client.subscribe(
            "#",
            "+/x",
            "+/+/messages/events",
            "devices/other/messages/devicebound/#",
            f"devices/{device_id}x/#",
            "$SYS/#",
            "$iothub/#/bad",
            "$iothub/#",
            "$iothub/+/POST/#",
            "$iothub/methods/POST/#",
            f"devices/{device_id}/messages/devicebound/#",
            "$iothub/twin/res/#",
        )
        assert codes == [0x80] * 9 + [1, 1, 1]
        assert await client.subscribe("$iothub/twin/PATCH/properties/desired/#", qos=2) == [1]
        assert await client.subscribe("$iothub/twin/PATCH/properties/desired/#", qos=0) == [0]


async def test_publish_to_another_devices_topic_is_dropped(gateway: Gateway, events: RecordingEvents) -> None:
    victim, spoofer = unique_id("victim"), unique_id("spoofer")
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, victim) as device, raw_client(gateway.mqtt_port) as attacker:
        await device.subscribe(f"devices/{victim}/#", qos=1)
        assert await attacker.connect(spoofer, good_password(spoofer)) == (0, 0)
        await attacker.publish(f"devices/{victim}/messages/events/", b"spoofed", qos=1)
        await attacker.publish(f"devices/{victim}/messages/devicebound/x", b"spoofed")
        await attacker.publish("some/other/topic", b"spoofed")
        await attacker.publish(f"devices/{spoofer}/messages/devicebound/x", b"not telemetry")
        await attacker.publish(f"devices/{spoofer}/messages/events/", b"marker")
        await events.wait_for(lambda: (f"devices/{spoofer}/messages/events/", b"marker") in events.messages(spoofer))
        assert events.messages(spoofer) == [(f"devices/{spoofer}/messages/events/", b"marker")]
        assert events.messages(victim) == []
        await gateway.send(victim, f"devices/{victim}/messages/devicebound/ok", b"from hub")
        message = await next_message(device)
        assert (message.topic.value, message.payload) == (f"devices/{victim}/messages/devicebound/ok", b"from hub")


async def test_send_to_an_offline_device_raises(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    with pytest.raises(DeviceNotOnlineError) as info:
        await gateway.send(device_id, METHOD_TOPIC, b"null")
    assert info.value.device_id == device_id
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id):
        assert await gateway.wait_connected(device_id, 5)
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    with pytest.raises(DeviceNotOnlineError):
        await gateway.send(device_id, METHOD_TOPIC, b"null")


async def test_hub_disconnect_closes_the_device_connection(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        assert await gateway.wait_connected(device_id, 5)
        await gateway.disconnect(device_id)
        assert not gateway.is_connected(device_id)
        await client.wait_closed()
        await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    await gateway.disconnect(device_id)  # no connection: nothing to do


async def test_a_failing_handler_does_not_break_the_connection(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id) as device:
        await device.publish("$iothub/twin/GET/boom/?$rid=1", b"")
        await device.publish("$iothub/twin/GET/?$rid=2", b"")
        message = await next_message(device)
        assert message.topic.value == "$iothub/twin/res/200/?$rid=2"
        assert gateway.is_connected(device_id)


async def test_failing_presence_handlers_do_not_break_the_connection(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    events.presence_errors.add(device_id)
    assert gateway.mqtt_port
    for _ in range(2):
        async with device_client(gateway.mqtt_port, device_id) as device:
            await device.publish("$iothub/twin/GET/?$rid=1", b"")
            assert (await next_message(device)).topic.value == "$iothub/twin/res/200/?$rid=1"
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"] * 2)


async def test_a_slow_handler_does_not_stall_the_connection(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        await client.publish("$iothub/twin/GET/slow/?$rid=1")
        await events.wait_for(lambda: len(events.messages(device_id)) == 1)
        assert await client.subscribe("$iothub/methods/POST/#") == [1]
        await client.ping()
        assert await client.read_packet() == (0xD0, b"")
        await gateway.send(device_id, METHOD_TOPIC, b"null")
        assert await client.next_publish() == (METHOD_TOPIC, b"null")
        # The device's messages are handled in order: the next one waits for the slow one.
        await client.publish("$iothub/twin/GET/?$rid=2")
        events.release.set()
        assert await client.next_publish() == ("$iothub/twin/res/200/?$rid=1", TWIN_BODY)
        assert await client.next_publish() == ("$iothub/twin/res/200/?$rid=2", TWIN_BODY)


async def test_messages_sent_just_before_a_drop_reach_the_hub_before_on_disconnected(
    gateway: Gateway, events: RecordingEvents
) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        for rid in range(20):
            await client.publish(f"$iothub/methods/res/200/?$rid={rid}", b"{}")
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    device_log = [e for e in events.log if e[1] == device_id]
    assert [e[0] for e in device_log] == ["connected"] + ["message"] * 20 + ["disconnected"]
    assert [e[2] for e in device_log[1:-1]] == [f"$iothub/methods/res/200/?$rid={rid}" for rid in range(20)]


async def test_a_qos2_publish_closes_the_connection(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        await client.publish(f"devices/{device_id}/messages/events/", b"x", qos=2)
        await client.wait_closed()
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert events.messages(device_id) == []


@pytest.fixture
async def small_gateway(events: RecordingEvents, gateway_config: GatewayConfig) -> AsyncIterator[Gateway]:
    config = dataclasses.replace(gateway_config, max_message_bytes=1024, max_topic_length=200)
    async with Gateway(mqtt_socket=bound_socket(), config=config).serving(events) as gateway:
        yield gateway


async def test_an_oversized_payload_closes_the_connection(small_gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert small_gateway.mqtt_port
    async with raw_client(small_gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        await client.publish(f"devices/{device_id}/messages/events/", b"x" * 1024)
        await client.publish(f"devices/{device_id}/messages/events/", b"x" * 1025)
        await client.wait_closed()
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert events.messages(device_id) == [(f"devices/{device_id}/messages/events/", b"x" * 1024)]


async def test_a_device_too_far_ahead_of_the_hub_is_closed_with_one_warning(
    events: RecordingEvents, gateway_config: GatewayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_pending_messages queued behind a slow handler the connection is closed, once:
    publishes still arriving on the closing connection are dropped without a line each."""
    config = dataclasses.replace(gateway_config, max_pending_messages=5)
    async with Gateway(mqtt_socket=bound_socket(), config=config).serving(events) as gateway:
        device_id = unique_id()
        assert gateway.mqtt_port
        async with raw_client(gateway.mqtt_port) as client:
            assert await client.connect(device_id, good_password(device_id)) == (0, 0)
            await client.publish("$iothub/twin/GET/slow/?$rid=0")  # holds the worker
            for rid in range(1, 60):
                await client.publish(f"$iothub/twin/GET/?$rid={rid}")
            await client.wait_closed()
        events.release.set()
        await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    ahead = [r for r in caplog.records if "messages ahead of the hub" in r.getMessage()]
    assert len(ahead) == 1, [r.getMessage() for r in ahead]
    assert len(events.messages(device_id)) <= 1 + 5


async def test_an_overlong_topic_closes_the_connection(small_gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert small_gateway.mqtt_port
    async with raw_client(small_gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
        await client.publish(f"devices/{device_id}/messages/events/" + "p" * 200, b"x")
        await client.wait_closed()
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert events.messages(device_id) == []


async def test_a_will_on_own_telemetry_becomes_telemetry_when_the_device_vanishes(
    gateway: Gateway, events: RecordingEvents
) -> None:
    device_id = unique_id()
    will_topic = f"devices/{device_id}/messages/events/lastwill=1"
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        assert await client.connect(device_id, good_password(device_id), will=(will_topic, b"gone")) == (0, 0)
        await events.wait_for(lambda: events.presence(device_id) == ["connected"])
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert events.messages(device_id) == [(will_topic, b"gone")]


async def test_a_will_elsewhere_is_ignored(gateway: Gateway, events: RecordingEvents) -> None:
    device_id, other = unique_id(), unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        will = ("$iothub/methods/POST/evil/?$rid=1", b"x")
        assert await client.connect(device_id, good_password(device_id), will=will) == (0, 0)
        await events.wait_for(lambda: events.presence(device_id) == ["connected"])
    async with raw_client(gateway.mqtt_port) as client:
        will = (f"devices/{other}/messages/events/", b"x")
        assert await client.connect(device_id, good_password(device_id), will=will) == (0, 0)
        await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected", "connected"])
    await events.wait_for(lambda: events.presence(device_id).count("disconnected") == 2)
    assert events.all_message_topics() == []


async def test_a_clean_disconnect_sends_no_will(gateway: Gateway, events: RecordingEvents) -> None:
    device_id = unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as client:
        will = (f"devices/{device_id}/messages/events/", b"gone")
        assert await client.connect(device_id, good_password(device_id), will=will) == (0, 0)
        await client.disconnect()
        await client.wait_closed()
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])
    assert events.messages(device_id) == []


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x30\xff\xff\xff\xff\x00", id="remaining length of five bytes"),
        pytest.param(b"\xf0\x00", id="reserved packet type 15"),
        pytest.param(b"\x00\x00", id="reserved packet type 0"),
        pytest.param(b"\x20\x02\x00\x00", id="a CONNACK from the client"),
        pytest.param(b"\x82\x03\x00\x01\x00", id="a SUBSCRIBE cut short"),
    ],
)
async def test_a_malformed_packet_closes_only_its_connection(
    gateway: Gateway, events: RecordingEvents, garbage: bytes
) -> None:
    """amqtt 0.12.1 logs "Message discarded" and reads on from inside the garbage, leaving the
    connection open; MQTT 3.1.1 section 4.8 says to close it (HubProtocolHandler._reader_loop)."""
    bad, good = unique_id(), unique_id()
    assert gateway.mqtt_port
    async with raw_client(gateway.mqtt_port) as victim, raw_client(gateway.mqtt_port) as bystander:
        assert await victim.connect(bad, good_password(bad)) == (0, 0)
        assert await bystander.connect(good, good_password(good)) == (0, 0)
        victim.writer.write(garbage)
        await victim.writer.drain()
        await victim.wait_closed()
        await events.wait_for(lambda: events.presence(bad) == ["connected", "disconnected"])
        await gateway.send(good, "$iothub/twin/PATCH/properties/desired/?$version=2", b"{}")
        assert await bystander.next_publish() == ("$iothub/twin/PATCH/properties/desired/?$version=2", b"{}")
