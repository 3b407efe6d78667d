"""Gateway: the hub's DeviceLink, an embedded amqtt broker on sockets the hub bound (and
on streams other listeners hand it: DeviceStreams)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

from OpenSSL import SSL

from broker_config import GatewayConfig, load_gateway_config
from hub.errors import DeviceNotOnlineError
from hub.gateway.broker import HubBroker, Listener
from hub.ports import DeviceEvents

__all__ = ["Gateway"]

logger = logging.getLogger(__name__)

MQTT_LISTENER = "mqtt"
MQTTS_LISTENER = "mqtts"


class Gateway:
    """Devices connect here; the engine reaches them through ``DeviceLink``.

    The gateway takes ownership of the sockets (already bound; listening is optional) and
    closes them when it stops; ``tls`` is the MQTTS listener's context
    (hub.gateway.tlsbio.server_context). It serves devices inside ``serving(events)``,
    reporting to ``events`` what they do (the engine that implements DeviceEvents is built
    with this gateway as its link, so the two meet there, not at construction). Leaving
    drops every device, each with ``on_disconnected``, so ``events`` must still work while
    the gateway closes.
    """

    def __init__(
        self,
        *,
        mqtt_socket: socket.socket | None = None,
        mqtts_socket: socket.socket | None = None,
        tls: SSL.Context | None = None,
        config: GatewayConfig | None = None,
    ) -> None:
        if mqtt_socket is None and mqtts_socket is None:
            raise ValueError("the gateway needs an mqtt_socket, an mqtts_socket or both")
        if (mqtts_socket is None) != (tls is None):
            raise ValueError("mqtts_socket and tls go together")
        self._config = config if config is not None else load_gateway_config()
        self._listeners: list[Listener] = []
        self._mqtt_port: int | None = None
        self._mqtts_port: int | None = None
        if mqtt_socket is not None:
            self._listeners.append(Listener(MQTT_LISTENER, mqtt_socket))
            self._mqtt_port = mqtt_socket.getsockname()[1]
        if mqtts_socket is not None:
            self._listeners.append(Listener(MQTTS_LISTENER, mqtts_socket, tls))
            self._mqtts_port = mqtts_socket.getsockname()[1]
        self._broker: HubBroker | None = None
        self._used = False

    @property
    def mqtt_port(self) -> int | None:
        """The plain MQTT listener's port, or None without one."""
        return self._mqtt_port

    @property
    def mqtts_port(self) -> int | None:
        """The MQTT-over-TLS listener's port, or None without one."""
        return self._mqtts_port

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @property
    def connected_count(self) -> int:
        """How many devices are connected right now."""
        return self._broker.connected_count() if self._broker is not None else 0

    @contextlib.asynccontextmanager
    async def serving(self, events: DeviceEvents) -> AsyncIterator[Gateway]:
        """Serve devices until the block ends; a gateway serves once (it owns its sockets)."""
        if self._used:
            raise RuntimeError("a Gateway serves once (it owns its sockets)")
        self._used = True
        try:
            broker = HubBroker(events, self._listeners, self._config)
            await broker.start()
        except BaseException:
            self._close_sockets()
            raise
        self._broker = broker
        logger.info("MQTT gateway listening (mqtt port %s, mqtts port %s)", self._mqtt_port, self._mqtts_port)
        try:
            yield self
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Drop every device and close the sockets (what leaving ``serving`` does; idempotent)."""
        broker, self._broker = self._broker, None
        try:
            if broker is not None:
                await broker.shutdown()
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for listener in self._listeners:
            listener.sock.close()

    # -- DeviceLink ---------------------------------------------------------------------

    def is_connected(self, device_id: str) -> bool:
        return self._broker is not None and self._broker.is_connected(device_id)

    async def wait_connected(self, device_id: str, timeout: float) -> bool:
        if self._broker is None:
            return False
        return await self._broker.wait_connected(device_id, timeout)

    async def send(self, device_id: str, topic: str, payload: bytes) -> None:
        if self._broker is None:
            raise DeviceNotOnlineError(f"Device {device_id} is not connected", device_id=device_id)
        await self._broker.send(device_id, topic, payload)

    async def disconnect(self, device_id: str) -> None:
        if self._broker is not None:
            await self._broker.disconnect_device(device_id)

    # -- DeviceStreams ------------------------------------------------------------------

    def open_stream(self, transport: asyncio.Transport) -> asyncio.Protocol:
        if self._broker is None:
            raise ConnectionRefusedError("the MQTT gateway is not running")
        return self._broker.open_stream(transport)
