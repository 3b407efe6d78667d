"""Gateway test support: a recording DeviceEvents, aiomqtt and raw MQTT 3.1.1 device clients."""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiomqtt

from hub.wire.topics import ReportedPatch, TopicError, TwinGet, parse_device_topic, twin_response_topic

HOST = "127.0.0.1"
HUB_HOSTNAME = "fleethub.test"
TWIN_BODY = b'{"desired":{"$version":1},"reported":{"$version":1}}'


def unique_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def good_password(device_id: str) -> str:
    return f"good-{device_id}"


def username(device_id: str) -> str:
    return f"{HUB_HOSTNAME}/{device_id}/?api-version=2021-04-12"


class RecordingEvents:
    """DeviceEvents for tests: password ``good-{id}`` logs in; everything is recorded."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.auth_errors: set[str] = set()
        self.certificates: dict[str, list[bytes]] = {}  # the TLS client chain each login came with
        self.presence_errors: set[str] = set()
        self.release = asyncio.Event()  # lets a publish on a topic containing "slow" finish
        self._changed = asyncio.Condition()

    async def _record(self, entry: tuple[Any, ...]) -> None:
        async with self._changed:
            self.log.append(entry)
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def presence(self, device_id: str) -> list[str]:
        return [e[0] for e in self.log if e[0] in ("connected", "disconnected") and e[1] == device_id]

    def messages(self, device_id: str) -> list[tuple[str, bytes]]:
        return [(e[2], e[3]) for e in self.log if e[0] == "message" and e[1] == device_id]

    def all_message_topics(self) -> list[str]:
        return [e[2] for e in self.log if e[0] == "message"]

    async def authenticate(
        self, client_id: str, username: str | None, password: str | None, certificates: Sequence[bytes] = ()
    ) -> bool:
        self.certificates[client_id] = list(certificates)
        if client_id in self.auth_errors:
            raise RuntimeError("the store is down")
        return password == good_password(client_id)

    async def on_connected(self, device_id: str) -> None:
        await self._record(("connected", device_id))
        if device_id in self.presence_errors:
            raise RuntimeError("presence store failure")

    async def on_disconnected(self, device_id: str) -> None:
        await self._record(("disconnected", device_id))
        if device_id in self.presence_errors:
            raise RuntimeError("presence store failure")

    async def on_message(self, device_id: str, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        await self._record(("message", device_id, topic, payload))
        if "boom" in topic:
            raise RuntimeError("handler failure")
        if "slow" in topic:
            await self.release.wait()
        try:
            parsed = parse_device_topic(topic)
        except TopicError:
            return None
        if isinstance(parsed, TwinGet):
            return twin_response_topic(200, parsed.rid), TWIN_BODY
        if isinstance(parsed, ReportedPatch):
            return twin_response_topic(204, parsed.rid, 2), b""
        return None


def bound_socket() -> socket.socket:
    return socket.create_server((HOST, 0))


def device_client(
    port: int,
    device_id: str,
    *,
    password: str | None = None,
    keepalive: int = 60,
    clean_session: bool | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client logging in the way the Azure SDKs do."""
    return aiomqtt.Client(
        HOST,
        port,
        identifier=device_id,
        username=username(device_id),
        password=good_password(device_id) if password is None else password,
        keepalive=keepalive,
        clean_session=clean_session,
        tls_context=tls_context,
        timeout=5,
    )


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await client.messages.__anext__()


# -- a raw MQTT 3.1.1 client: exact bytes, no automatic pings or reconnects -------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str, password: str | None, *, keepalive: int = 60, user: str | None = None) -> bytes:
    """A CONNECT as the Azure SDKs send it (clean session, the IoT Hub username)."""
    flags = 0x82
    payload = _str(client_id) + _str(username(client_id) if user is None else user)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    return _packet(0x10, _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def subscribe_packet(packet_id: int, *filters: str, qos: int = 1) -> bytes:
    return _packet(0x82, struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([qos]) for f in filters))


def publish_packet(topic: str, payload: bytes = b"") -> bytes:
    """A QoS 0 PUBLISH."""
    return _packet(0x30, _str(topic) + payload)


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._packet_ids = itertools.count(1)

    async def connect(
        self,
        client_id: str,
        password: str | None,
        *,
        keepalive: int = 60,
        clean: bool = True,
        will: tuple[str, bytes] | None = None,
        user: str | None = None,
    ) -> tuple[int, int]:
        """Send CONNECT (``user`` defaults to the SDKs' username for the client id); return
        (session present, return code) from CONNACK."""
        flags = 0x80 | (0x02 if clean else 0)
        payload = _str(client_id)
        if will is not None:
            flags |= 0x04
            payload += _str(will[0]) + _str(will[1])
        payload += _str(username(client_id) if user is None else user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
        self.writer.write(_packet(0x10, body))
        await self.writer.drain()
        kind, data = await self.read_packet()
        assert kind == 0x20, f"expected CONNACK, got {kind:#x}"
        return data[0], data[1]

    async def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        packet_id = next(self._packet_ids)
        body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([qos]) for f in filters)
        self.writer.write(_packet(0x82, body))
        await self.writer.drain()
        while True:
            kind, data = await self.read_packet()
            if kind == 0x90 and struct.unpack("!H", data[:2])[0] == packet_id:
                return list(data[2:])

    async def publish(self, topic: str, payload: bytes = b"", *, qos: int = 0) -> None:
        body = _str(topic)
        if qos:
            body += struct.pack("!H", next(self._packet_ids))
        self.writer.write(_packet(0x30 | (qos << 1), body + payload))
        await self.writer.drain()

    async def ping(self) -> None:
        self.writer.write(b"\xc0\x00")
        await self.writer.drain()

    async def disconnect(self) -> None:
        self.writer.write(b"\xe0\x00")
        await self.writer.drain()

    async def read_packet(self) -> tuple[int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        length, multiplier = 0, 1
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            if not byte & 0x80:
                break
        return first & 0xF0, await self.reader.readexactly(length)

    async def next_publish(self, timeout: float = 5.0) -> tuple[str, bytes]:
        """The next PUBLISH (topic, payload), skipping other packets."""
        async with asyncio.timeout(timeout):
            while True:
                kind, data = await self.read_packet()
                if kind == 0x30:
                    (size,) = struct.unpack("!H", data[:2])
                    return data[2 : 2 + size].decode(), data[2 + size :]

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the server closes the connection (reading and discarding packets)."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(65536):
                pass


@asynccontextmanager
async def raw_client(port: int, *, tls_context: ssl.SSLContext | None = None) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection(HOST, port, ssl=tls_context)
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
