"""MQTT over WebSockets: ``GET /$iothub/websocket`` (subprotocol ``mqtt``) on the hub's HTTP
and HTTPS listeners, as IoT Hub serves it on 443 for devices behind firewalls that pass only
HTTPS (``websockets=True`` in the Python SDK, ``MqttWs`` in Node's).

There is one MQTT gateway and this is only a second way in: the WebSocket's binary messages
are the bytes of an MQTT connection, handed to the gateway through ``DeviceStreams``, which
serves them exactly like a socket of the MQTT listener (login, scope, limits, keepalive,
presence). ``WebSocketTransport`` is the asyncio Transport the gateway writes to: its writes
leave as binary messages, with the same flow control a socket has.

A text message, a frame over the size limit or a protocol error closes only that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hub.ports import DeviceStreams

__all__ = ["DEVICE_WEBSOCKET_PATH", "WebSocketTransport", "router"]

log = logging.getLogger(__name__)

DEVICE_WEBSOCKET_PATH = "/$iothub/websocket"
SUBPROTOCOL = "mqtt"
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_UNSUPPORTED_DATA = 1003  # WebSocket close code: "a text message where binary is expected"

router = APIRouter()


class WebSocketTransport(asyncio.Transport):
    """An asyncio Transport over one accepted Starlette WebSocket. ``run`` pumps both ways
    until the connection ends; the protocol's ``connection_lost`` is called exactly once."""

    def __init__(self, websocket: WebSocket) -> None:
        super().__init__()
        self._ws = websocket
        self._protocol: asyncio.Protocol | None = None
        self._out = bytearray()
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._closing = False
        self._aborted = False
        self._writing_paused = False
        self._lost = False
        self._ended = asyncio.Event()
        self._close_code = 1000

    # -- what the gateway calls --------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._out += data
        self._wake.set()
        if not self._writing_paused and len(self._out) > _HIGH_WATER and self._protocol is not None:
            self._writing_paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what is buffered, then close the WebSocket."""
        if not self._closing:
            self._closing = True
            self._wake.set()

    def abort(self) -> None:
        self._closing = self._aborted = True
        self._out.clear()
        self._wake.set()
        self._ended.set()

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            client = self._ws.client
            return (client.host, client.port) if client is not None else default
        if name == "sockname":
            return self._ws.scope.get("server") or default
        if name == "websocket":
            return self._ws
        return default

    # -- the pump ------------------------------------------------------------------------------

    async def run(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        error: Exception | None = None
        try:
            async with asyncio.TaskGroup() as group:
                receiving = group.create_task(self._receive(protocol), name="websocket-receive")
                sending = group.create_task(self._send(), name="websocket-send")
                await self._ended.wait()
                receiving.cancel()
                sending.cancel()
        except* (WebSocketDisconnect, OSError, RuntimeError) as failures:
            error = failures.exceptions[0]
            log.debug("device WebSocket from %s ended: %r", self.get_extra_info("peername"), error)
        finally:
            self._closing = True
            if not self._lost:
                self._lost = True
                protocol.connection_lost(error)
            await self._close_websocket()

    async def _receive(self, protocol: asyncio.Protocol) -> None:
        try:
            while not self._closing:
                await self._reading.wait()
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    protocol.eof_received()
                    return
                data = message.get("bytes")
                if data is None:
                    peer = self.get_extra_info("peername")
                    log.info("device WebSocket from %s sent a text message; closing it", peer)
                    self._close_code = _UNSUPPORTED_DATA
                    return
                if data:
                    protocol.data_received(data)
        finally:
            self._ended.set()

    async def _send(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._aborted:
                    return
                if self._out:
                    data = bytes(self._out)
                    self._out.clear()
                    await self._ws.send_bytes(data)
                    if self._writing_paused and len(self._out) <= _LOW_WATER and self._protocol is not None:
                        self._writing_paused = False
                        self._protocol.resume_writing()
                if self._closing and not self._out:
                    return
        finally:
            self._ended.set()

    async def _close_websocket(self) -> None:
        if self._ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self._ws.close(code=self._close_code)


@router.websocket(DEVICE_WEBSOCKET_PATH)
async def device_websocket(websocket: WebSocket) -> None:
    """A device's MQTT connection over a WebSocket; no HTTP auth, the MQTT CONNECT logs in."""
    streams: DeviceStreams | None = websocket.app.state.device_streams
    offered = websocket.scope.get("subprotocols") or []
    if streams is None or SUBPROTOCOL not in offered:
        # Refused before the handshake completes: the client sees HTTP 403.
        await websocket.close(code=1002)
        return
    await websocket.accept(subprotocol=SUBPROTOCOL)
    transport = WebSocketTransport(websocket)
    try:
        protocol = streams.open_stream(transport)
    except ConnectionRefusedError:
        await websocket.close(code=1013)  # try again later: the hub is stopping
        return
    await transport.run(protocol)
