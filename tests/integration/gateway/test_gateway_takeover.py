"""Takeovers: one device id, many connections. Presence must follow the gateway's
connection table exactly (connected and disconnected alternate, the last word is the live
connection's), however slow a closing connection is, and a storm of takeovers is throttled."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
from gateway_support import RawClient, RecordingEvents, bound_socket, good_password, raw_client, unique_id

from broker_config import GatewayConfig
from hub.gateway import Gateway

SERVER_UNAVAILABLE = 3
DESIRED = "$iothub/twin/PATCH/properties/desired/?$version=2"


@pytest.fixture
async def impatient_gateway(events: RecordingEvents, gateway_config: GatewayConfig) -> AsyncIterator[Gateway]:
    """A takeover waits 0.2 s for the old connection's teardown; a closing connection may
    spend 5 s handing its last messages to the hub."""
    config = dataclasses.replace(gateway_config, close_timeout_seconds=0.2, drain_timeout_seconds=5)
    async with Gateway(mqtt_socket=bound_socket(), config=config).serving(events) as gateway:
        yield gateway


async def test_a_takeover_past_a_stuck_teardown_keeps_presence_in_order(
    impatient_gateway: Gateway, events: RecordingEvents
) -> None:
    device_id = unique_id()
    port = impatient_gateway.mqtt_port
    assert port
    async with raw_client(port) as first, raw_client(port) as second:
        assert await first.connect(device_id, good_password(device_id)) == (0, 0)
        await events.wait_for(lambda: events.presence(device_id) == ["connected"])
        # The hub is still busy with this message when the device connects again, so the
        # first connection's teardown outlasts the takeover's patience.
        await first.publish(f"devices/{device_id}/messages/events/slow", b"still working")
        await events.wait_for(lambda: len(events.messages(device_id)) == 1)
        assert await second.connect(device_id, good_password(device_id)) == (0, 0)
        await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected", "connected"])
        assert impatient_gateway.is_connected(device_id)

        events.release.set()  # now the old connection's teardown finishes
        await first.wait_closed()
        await asyncio.sleep(0.3)
        # Without care the late teardown would say "disconnected" last, about a live device.
        assert events.presence(device_id) == ["connected", "disconnected", "connected"]
        assert impatient_gateway.is_connected(device_id)
        await impatient_gateway.send(device_id, DESIRED, b"{}")
        assert await second.next_publish() == (DESIRED, b"{}")


async def test_a_device_id_that_connects_too_often_is_refused_and_the_live_connection_stays(
    events: RecordingEvents, gateway_config: GatewayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(gateway_config, connects_per_device_burst=3, connects_per_device_per_minute=6)
    device_id = unique_id()
    async with Gateway(mqtt_socket=bound_socket(), config=config).serving(events) as gateway, asyncio.TaskGroup():
        port = gateway.mqtt_port
        assert port
        clients: list[RawClient] = []
        async with raw_client(port) as a, raw_client(port) as b, raw_client(port) as c:
            for client in (a, b, c):
                assert await client.connect(device_id, good_password(device_id)) == (0, 0)
                clients.append(client)
            await a.wait_closed()
            await b.wait_closed()
            with caplog.at_level(logging.WARNING, logger="hub.gateway.broker"):
                for _ in range(3):
                    async with raw_client(port) as refused:
                        assert await refused.connect(device_id, good_password(device_id)) == (0, SERVER_UNAVAILABLE)
                        await refused.wait_closed()
            assert [r.message for r in caplog.records].count(
                next(r.message for r in caplog.records if "connects too often" in r.message)
            ) == 1
            # The refusals did not touch the live connection.
            assert events.presence(device_id) == ["connected", "disconnected"] * 2 + ["connected"]
            assert gateway.is_connected(device_id)
            await gateway.send(device_id, DESIRED, b"{}")
            assert await c.next_publish() == (DESIRED, b"{}")
            # A refused login costs no token: someone without the device's key cannot use them up.
            async with raw_client(port) as stranger:
                assert (await stranger.connect(device_id, "wrong"))[1] == 5


async def test_two_clients_fighting_over_one_id_are_slowed_to_the_throttle(
    events: RecordingEvents, gateway_config: GatewayConfig
) -> None:
    config = dataclasses.replace(gateway_config, connects_per_device_burst=5, connects_per_device_per_minute=60)
    device_id = unique_id()
    accepted = 0
    refused = 0

    async def fight(stop: asyncio.Event, port: int) -> None:
        nonlocal accepted, refused
        while not stop.is_set():
            async with raw_client(port) as client:
                try:
                    _, code = await client.connect(device_id, good_password(device_id))
                except (ConnectionError, asyncio.IncompleteReadError):
                    continue
                if code != 0:
                    refused += 1
                    await asyncio.sleep(0.01)
                    continue
                accepted += 1
                await client.wait_closed(timeout=30)

    async with Gateway(mqtt_socket=bound_socket(), config=config).serving(events) as gateway:
        port = gateway.mqtt_port
        assert port
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            fighters = [group.create_task(fight(stop, port)) for _ in range(2)]
            await asyncio.sleep(2.0)
            stop.set()
            # Whoever holds the connection waits on it: drop it until both fighters stopped.
            while not all(fighter.done() for fighter in fighters):
                await gateway.disconnect(device_id)
                await asyncio.sleep(0.05)
    # 5 at once and one a second after: 5 + 2 in the fight (and a margin for a slow machine).
    assert 5 <= accepted <= 10
    assert refused > accepted
    presence = events.presence(device_id)
    assert presence == ["connected", "disconnected"] * (len(presence) // 2)
