"""Gateway construction, ports, waiting for a device, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest
from amqtt.broker import Broker
from amqtt.errors import PluginImportError, PluginInitError
from gateway_support import HOST, RecordingEvents, bound_socket, device_client, good_password, raw_client, unique_id
from OpenSSL import SSL

from broker_config import GatewayConfig
from hub.errors import DeviceNotOnlineError
from hub.gateway import Gateway


async def test_ports_are_those_of_the_given_sockets(
    events: RecordingEvents, server_tls: SSL.Context, gateway_config: GatewayConfig
) -> None:
    plain, tls = bound_socket(), bound_socket()
    ports = plain.getsockname()[1], tls.getsockname()[1]
    async with Gateway(mqtt_socket=plain, mqtts_socket=tls, tls=server_tls, config=gateway_config).serving(
        events
    ) as gateway:
        assert (gateway.mqtt_port, gateway.mqtts_port) == ports
    assert plain.fileno() == -1
    assert tls.fileno() == -1


async def test_a_socket_that_is_only_bound_is_served(events: RecordingEvents) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    async with Gateway(mqtt_socket=sock).serving(events) as gateway:
        assert gateway.mqtts_port is None
        device_id = unique_id()
        assert gateway.mqtt_port
        async with raw_client(gateway.mqtt_port) as client:
            assert await client.connect(device_id, good_password(device_id)) == (0, 0)


def test_sockets_and_tls_context_must_match(server_tls: SSL.Context) -> None:
    with pytest.raises(ValueError, match="needs"):
        Gateway()
    with bound_socket() as sock:
        with pytest.raises(ValueError, match="together"):
            Gateway(mqtts_socket=sock)
        with pytest.raises(ValueError, match="together"):
            Gateway(mqtt_socket=sock, tls=server_tls)


async def test_a_gateway_serves_once(events: RecordingEvents) -> None:
    gateway = Gateway(mqtt_socket=bound_socket())
    async with gateway.serving(events):
        pass
    with pytest.raises(RuntimeError, match="once"):
        async with gateway.serving(events):
            pass


async def test_wait_connected_wakes_when_the_device_connects(gateway: Gateway) -> None:
    device_id = unique_id()
    assert not await gateway.wait_connected(device_id, 0)
    assert not await gateway.wait_connected(device_id, 0.05)
    waiting = asyncio.create_task(gateway.wait_connected(device_id, 10))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert gateway.mqtt_port
    async with device_client(gateway.mqtt_port, device_id):
        assert await waiting
        assert gateway.is_connected(device_id)
        assert gateway.connected_count == 1


async def test_exit_drops_every_device_with_on_disconnected(
    events: RecordingEvents, gateway_config: GatewayConfig
) -> None:
    ids = [unique_id() for _ in range(3)]
    async with Gateway(mqtt_socket=bound_socket(), config=gateway_config).serving(events) as gateway:
        assert gateway.mqtt_port
        async with (
            raw_client(gateway.mqtt_port) as a,
            raw_client(gateway.mqtt_port) as b,
            raw_client(gateway.mqtt_port) as c,
        ):
            for client, device_id in zip((a, b, c), ids, strict=True):
                assert await client.connect(device_id, good_password(device_id)) == (0, 0)
            for device_id in ids:
                assert await gateway.wait_connected(device_id, 5)
            await gateway.stop()
            for client in (a, b, c):
                await client.wait_closed()
        for device_id in ids:
            assert events.presence(device_id) == ["connected", "disconnected"]
        assert not gateway.is_connected(ids[0])
        assert not await gateway.wait_connected(ids[0], 1)
        with pytest.raises(DeviceNotOnlineError):
            await gateway.send(ids[0], "$iothub/methods/POST/m/?$rid=1", b"null")
        await gateway.disconnect(ids[0])


async def test_exit_ends_waits_with_false(events: RecordingEvents) -> None:
    gateway = Gateway(mqtt_socket=bound_socket())
    async with gateway.serving(events):
        waiting = asyncio.create_task(gateway.wait_connected(unique_id(), 30))
        await asyncio.sleep(0)
    assert await waiting is False


async def test_a_client_that_never_sends_connect_is_dropped(
    events: RecordingEvents, gateway_config: GatewayConfig
) -> None:
    config = dataclasses.replace(gateway_config, connect_timeout_seconds=0.2)
    async with Gateway(mqtt_socket=bound_socket(), config=config).serving(events) as gateway:
        assert gateway.mqtt_port
        async with raw_client(gateway.mqtt_port) as client:
            await client.wait_closed(timeout=5)


async def test_a_gateway_that_fails_to_start_closes_its_sockets(
    events: RecordingEvents, gateway_config: GatewayConfig
) -> None:
    sock = bound_socket()
    config = dataclasses.replace(gateway_config, plugins={"no_such_module.Plugin": {}})
    with pytest.raises(PluginImportError):
        async with Gateway(mqtt_socket=sock, config=config).serving(events):
            pass
    assert sock.fileno() == -1


async def test_the_auth_plugin_needs_the_hub_broker() -> None:
    with pytest.raises(PluginInitError):
        Broker({"listeners": {"default": {"bind": None}}, "plugins": {"hub.gateway.plugins.DeviceAuthPlugin": {}}})
