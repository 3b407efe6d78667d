"""HubBroker: amqtt's Broker carrying IoT Hub's device dialect.

What it changes in amqtt 0.12.1 (pinned; these are private methods, see the compat notes):

- ``_initialize_client_session``: the login is checked right after CONNECT, before anything
  touches an existing session with that client id, so a refused login (CONNACK 5) never
  disturbs the live device. Each connection gets a fresh amqtt Session: delivery, presence
  and subscriptions never depend on amqtt's session store.
- ``_handle_client_session`` / ``_handle_disconnect``: one connection per device id. A new
  login takes over by closing the old connection and waiting for its teardown, so presence
  always reads disconnected(old) before connected(new); a teardown that outlasts
  ``close_timeout_seconds`` announces the old connection's disconnect then and there, never
  after the new one's connect. A connection whose device left is aborted at once (nothing
  waits on a TLS close with a peer that is gone). Presence and messages go to
  ``DeviceEvents`` from one worker task per connection, in the order the device sent them.
  Logins per device id are throttled (hub.gateway.throttle).
- ``HubProtocolHandler.handle_publish`` (and ``_handle_message_delivery`` for anything that
  still takes amqtt's path): a device PUBLISH on ``$iothub/...`` or its own telemetry topic
  goes to ``DeviceEvents.on_message`` and the reply back to that connection only; anything
  else is dropped. Nothing a device sends is ever broadcast or retained.
- ``add_subscription``: SUBSCRIBE is checked (SUBACK 0x80 outside the device's scope) and
  acknowledged, but not stored: the hub sends straight to the connection's handler, so no
  per-message work grows with the number of sessions.
- ``_create_server_instance`` / ``stream_connected``: listeners serve sockets the hub bound
  itself, the TLS one through hub.gateway.tlsbio (pyOpenSSL), which hands the login the
  client certificate chain for X.509 devices; reads larger than ``max_message_bytes`` close
  the connection.
- ``HubProtocolHandler``: keepalive is enforced (amqtt's read timeout, set to 1.5 x the
  client's keepalive, now closes the connection) and QoS 2 publishes close it, as IoT Hub
  does; the hub's sends are written straight to the connection (``publish_qos0``).
- ``shutdown``: every device is dropped and its teardown awaited before amqtt stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from amqtt.adapters import BufferReader, StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError, ProtocolHandlerError
from amqtt.events import BrokerEvents, MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import CONNECTION_ACCEPTED, NOT_AUTHORIZED, SERVER_UNAVAILABLE, ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RESERVED_0,
    RESERVED_15,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from OpenSSL import SSL

from broker_config import GatewayConfig
from hub.errors import DeviceNotOnlineError
from hub.gateway import scope
from hub.gateway.throttle import ConnectThrottle
from hub.gateway.tlsbio import start_tls_server
from hub.ports import DeviceEvents

__all__ = ["STREAM_LISTENER", "HubBroker", "HubProtocolHandler", "Listener"]

logger = logging.getLogger(__name__)

_SUBACK_FAILURE = 0x80
_CONNECTION_ACCEPTED: int = CONNECTION_ACCEPTED
_SERVER_UNAVAILABLE: int = SERVER_UNAVAILABLE
_NOT_AUTHORIZED: int = NOT_AUTHORIZED
_MAX_QOS: int = QOS_1  # IoT Hub grants at most QoS 1

_STREAM_LIMIT = 2**16  # asyncio.start_server's default read buffer

STREAM_LISTENER = "stream"
"""The listener of device connections that arrive over another transport (``open_stream``)."""


@dataclass(frozen=True, slots=True)
class Listener:
    """A listening socket the hub bound itself; TLS when ``tls`` is given."""

    name: str
    sock: socket.socket
    tls: SSL.Context | None = None

    @property
    def bind(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"


class PacketTooLargeError(AMQTTError):  # type: ignore[misc]  # amqtt is untyped
    """A device sent a packet larger than the gateway takes."""


def packet_limit(config: GatewayConfig) -> int:
    """The largest packet body a device may send: the largest payload with the longest topic
    (and the topic's length and a packet id)."""
    return config.max_message_bytes + config.max_topic_length + 4


class _HubStreamReader(StreamReaderAdapter):  # type: ignore[misc]
    """Refuses single reads (a packet body, a CONNECT field) above the size limit before
    buffering them."""

    def __init__(self, reader: asyncio.StreamReader, max_read: int) -> None:
        super().__init__(reader)
        self._max_read = max_read

    async def read(self, n: int = -1) -> bytes:
        if n > self._max_read:
            raise PacketTooLargeError(f"packet field of {n} bytes exceeds the limit of {self._max_read}")
        data: bytes = await super().read(n)
        return data


def _check_decoded(packet_type: int, packet: Any, buffer: BufferReader, size: int) -> None:
    """MQTTError unless the packet used its whole body and carries what its type needs: amqtt's
    decoders stop quietly at a field cut short (a SUBSCRIBE then has no topic filters)."""
    if buffer._stream.tell() != size:
        raise MQTTError(f"packet type {packet_type} has {size - buffer._stream.tell()} bytes after its content")
    if packet_type in (SUBSCRIBE, UNSUBSCRIBE) and not packet.payload.topics:
        raise MQTTError(f"packet type {packet_type} names no topic filter")


class _HubStreamWriter(StreamWriterAdapter):  # type: ignore[misc]
    """Adds an immediate close: server-side drops must not wait on a peer that is gone."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.stream = writer

    def is_closing(self) -> bool:
        return bool(self.is_closed) or self.stream.transport.is_closing()

    def abort(self) -> None:
        self.is_closed = True  # amqtt's close() then skips its drain on a dead connection
        self.stream.transport.abort()


@dataclass(eq=False, slots=True)
class _Connection:
    """One admitted device connection; the gateway keeps at most one per device id."""

    device_id: str
    session: Any
    handler: HubProtocolHandler
    writer: _HubStreamWriter
    queue: asyncio.Queue[tuple[str, bytes] | None] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    announced: bool = False  # on_connected was (being) called
    disconnect_announced: bool = False  # on_disconnected was (being) called: at most once
    closing: bool = False

    def abort(self) -> None:
        self.closing = True
        self.writer.abort()


class HubProtocolHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's per-connection protocol handler with keepalive and QoS rules enforced."""

    connection: _Connection | None = None
    accept: Callable[[_Connection, str, bytes], None] | None = None
    max_payload: int = 0

    async def start(self) -> None:
        await super().start()
        # amqtt creates its disconnect waiter after the reader task starts; a client that
        # left at once would otherwise leave the connection waiting forever.
        if self._reader_stopped.is_set():
            await self.handle_connection_closed()

    async def _reader_loop(self) -> None:
        """amqtt 0.12.1's reader loop with two differences: a malformed packet (an MQTTError
        while decoding: a bad remaining length, a truncated field, a reserved packet type)
        closes the connection, as MQTT 3.1.1 section 4.8 requires, where amqtt logs
        "Message discarded" and reads on from the middle of the garbage, leaving the
        connection open; and the keepalive wait is ``asyncio.timeout`` rather than
        ``wait_for``, which on Python 3.11 costs a task per packet."""
        session = self.session
        if session is None or self._reader_ready is None or self.reader is None:
            raise ProtocolHandlerError("the reader loop needs an attached session")
        running: collections.deque[asyncio.Task[None]] = collections.deque()
        keepalive = session.keep_alive if session.keep_alive and session.keep_alive > 0 else None
        while True:
            try:
                self._reader_ready.set()
                while running and running[0].done():
                    running.popleft()
                async with asyncio.timeout(keepalive):
                    fixed_header = await MQTTFixedHeader.from_stream(self.reader)
                if not fixed_header:
                    break  # EOF
                if fixed_header.packet_type in (RESERVED_0, RESERVED_15):
                    raise MQTTError(f"reserved packet type {fixed_header.packet_type}")
                # The whole body first: a field cut short by the packet's end is then a decode
                # error here, not a read into the next packet (amqtt reads fields from the stream).
                body = await self.reader.read(fixed_header.remaining_length)
                buffer = BufferReader(body)
                packet = await packet_class(fixed_header).from_stream(buffer, fixed_header=fixed_header)
                _check_decoded(fixed_header.packet_type, packet, buffer, len(body))
                await self.plugins_manager.fire_event(MQTTEvents.PACKET_RECEIVED, packet=packet, session=session)
                if fixed_header.packet_type == PUBLISH:
                    # Inline, so a publish read before a failure still reaches the hub.
                    await self.handle_publish(packet)
                else:
                    handle = self._packet_handlers.get(fixed_header.packet_type)
                    if handle is None:
                        raise MQTTError(f"a client may not send packet type {fixed_header.packet_type}")
                    running.append(asyncio.create_task(handle(self, packet)))
                # Buffered packets decode without a pause: let the connection's worker (and
                # everyone else) run between them, so a flood is seen coming, not swallowed.
                await asyncio.sleep(0)
            except MQTTError as exc:
                logger.info("device %s sent a malformed packet (%s); closing the connection", session.client_id, exc)
                self._abort()
                break
            except asyncio.CancelledError:
                break
            except TimeoutError:
                self.handle_read_timeout()
            except NoDataError:
                break  # EOF in the middle of a packet
            except Exception as exc:
                logger.warning("reading from device %s failed: %r", session.client_id, exc)
                break
        while running:
            running.popleft().cancel()
        await self.handle_connection_closed()
        self._reader_stopped.set()
        await self.stop()

    # What else a client may send once connected, each handled in a task as amqtt does (a
    # second CONNECT included: amqtt's handler for it ends the connection).
    _packet_handlers: ClassVar[dict[int, Callable[[Any, Any], Coroutine[Any, Any, None]]]] = {
        SUBSCRIBE: BrokerProtocolHandler.handle_subscribe,
        UNSUBSCRIBE: BrokerProtocolHandler.handle_unsubscribe,
        PUBACK: BrokerProtocolHandler.handle_puback,
        PUBREC: BrokerProtocolHandler.handle_pubrec,
        PUBREL: BrokerProtocolHandler.handle_pubrel,
        PUBCOMP: BrokerProtocolHandler.handle_pubcomp,
        PINGREQ: BrokerProtocolHandler.handle_pingreq,
        DISCONNECT: BrokerProtocolHandler.handle_disconnect,
        CONNECT: BrokerProtocolHandler.handle_connect,
    }

    def handle_read_timeout(self) -> None:
        # amqtt's reader waits session.keep_alive (set to 1.5 x the client's) for a packet.
        client_id = self.session.client_id if self.session else None
        logger.info("device %s silent past its keepalive; closing the connection", client_id)
        self._abort()

    async def handle_publish(self, publish_packet: Any) -> None:
        qos = publish_packet.qos
        if qos == QOS_2:
            client_id = self.session.client_id if self.session else None
            logger.warning("device %s published with QoS 2, which IoT Hub does not support; closing", client_id)
            self._abort()
            return
        conn, accept = self.connection, self.accept
        if conn is None or accept is None:
            await super().handle_publish(publish_packet)
            return
        data = publish_packet.data or b""
        if len(data) > self.max_payload:
            logger.warning(
                "device %s published %d bytes, over the limit of %d; closing the connection",
                conn.device_id,
                len(data),
                self.max_payload,
            )
            self._abort()
            return
        # Straight to the hub, skipping amqtt's delivery queue and client loop (a task and
        # a four-way wait per message), in the order the reader loop read them.
        accept(conn, publish_packet.topic_name or "", data if isinstance(data, bytes) else bytes(data))
        if qos == QOS_1:
            await self._send_packet(PubackPacket.build(publish_packet.packet_id))

    def _abort(self) -> None:
        if self.connection is not None:
            self.connection.abort()
        elif isinstance(self.writer, _HubStreamWriter):
            self.writer.abort()

    async def publish_qos0(self, topic: str, payload: bytes) -> None:
        """Write one QoS 0 PUBLISH to this connection; OSError when it is gone.

        Not ``mqtt_publish``: amqtt's ``_send_packet`` swallows a lost connection and turns a
        cancellation into ProtocolHandlerError, and the send path needs both to be visible.
        """
        writer = self.writer
        if not isinstance(writer, _HubStreamWriter) or writer.is_closing():
            raise ConnectionResetError("connection closed")
        writer.write(PublishPacket.build(topic, payload, None, False, QOS_0, False).to_bytes())
        await writer.drain()


class HubBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's Broker with the hub's device rules; ``hub.gateway.Gateway`` owns one."""

    def __init__(self, events: DeviceEvents, listeners: Sequence[Listener], config: GatewayConfig) -> None:
        # Set before amqtt's constructor, which instantiates the plugins that read them.
        self.device_events = events
        self.gateway_config = config
        self._listeners = {listener.name: listener for listener in listeners}
        self._connections: dict[str, _Connection] = {}
        self._admitting: dict[str, asyncio.Future[None]] = {}
        self._connect_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._client_tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._throttle = ConnectThrottle(
            burst=config.connects_per_device_burst,
            per_minute=config.connects_per_device_per_minute,
            clock=asyncio.get_running_loop().time,
        )
        self._throttled: set[str] = set()  # device ids refused for connecting too often, logged once
        amqtt_listeners: dict[str, dict[str, Any]] = {
            name: {"type": "tcp", "bind": listener.bind} for name, listener in self._listeners.items()
        }
        # Streams the hub accepts elsewhere (MQTT over WebSockets on the HTTPS port) come in
        # through amqtt's "external" listener; its bind is a label amqtt never binds.
        amqtt_listeners[STREAM_LISTENER] = {"type": "external", "bind": STREAM_LISTENER}
        super().__init__(config.amqtt_config(amqtt_listeners))

    # -- the DeviceLink side, used by Gateway ------------------------------------------

    def is_connected(self, device_id: str) -> bool:
        conn = self._connections.get(device_id)
        return conn is not None and not conn.closing

    async def wait_connected(self, device_id: str, timeout: float) -> bool:
        if self.is_connected(device_id):
            return True
        if timeout <= 0 or self._stopping:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connect_waiters.setdefault(device_id, set()).add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            waiters = self._connect_waiters.get(device_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._connect_waiters[device_id]
        return self.is_connected(device_id)

    async def send(self, device_id: str, topic: str, payload: bytes) -> None:
        conn = self._connections.get(device_id)
        if conn is None or conn.closing:
            raise DeviceNotOnlineError(f"Device {device_id} is not connected", device_id=device_id)
        await self._publish(conn, topic, payload)

    async def disconnect_device(self, device_id: str) -> None:
        conn = self._connections.get(device_id)
        if conn is not None:
            await self._close(conn)

    def connected_count(self) -> int:
        return sum(not conn.closing for conn in self._connections.values())

    def open_stream(self, transport: asyncio.Transport) -> asyncio.Protocol:
        """A device connection over ``transport`` (MQTT bytes carried by something else, such
        as WebSocket frames): the protocol that takes its bytes, served from here on exactly
        like a socket of the MQTT listener (login, scope, limits, keepalive, presence)."""
        if self._stopping:
            raise ConnectionRefusedError("the gateway is stopping")
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader, partial(self.stream_connected, listener_name=STREAM_LISTENER))
        protocol.connection_made(transport)
        return protocol

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await super().start()
        except BaseException:
            for server in self._servers.values():
                await server.close_instance()
            raise

    async def shutdown(self) -> None:
        """Stop accepting, drop every device (each gets on_disconnected), then stop amqtt."""
        self._stopping = True
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        for conn in list(self._connections.values()):
            conn.abort()
        tasks = set(self._client_tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.gateway_config.close_timeout_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for waiters in self._connect_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)  # wait_connected then answers False
        await super().shutdown()

    async def _create_server_instance(
        self, listener_name: str, listener_type: Any, address: str | None, port: int, ssl_context: Any
    ) -> asyncio.Server:
        listener = self._listeners.get(listener_name)
        if listener is None:
            raise BrokerError(f"listener {listener_name!r} has no socket")
        connected = partial(self.stream_connected, listener_name=listener_name)
        backlog = self.gateway_config.listen_backlog
        if listener.tls is None:
            return await asyncio.start_server(connected, sock=listener.sock, backlog=backlog)
        return await start_tls_server(
            connected,
            sock=listener.sock,
            context=listener.tls,
            handshake_timeout=self.gateway_config.connect_timeout_seconds,
            backlog=backlog,
        )

    # -- one connection -----------------------------------------------------------------

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._client_tasks.add(task)
        hub_writer = _HubStreamWriter(writer)
        try:
            if not self._stopping:
                hub_reader = _HubStreamReader(reader, packet_limit(self.gateway_config))
                await self._client_connected(listener_name, hub_reader, hub_writer)
        except Exception:
            logger.exception("MQTT connection from %s failed", writer.get_extra_info("peername"))
        finally:
            if not writer.transport.is_closing():
                hub_writer.abort()
            self._client_tasks.discard(task)

    async def _initialize_client_session(
        self, reader: Any, writer: _HubStreamWriter, remote_address: str, remote_port: int
    ) -> tuple[HubProtocolHandler, Any]:
        config = self.gateway_config
        try:
            async with asyncio.timeout(config.connect_timeout_seconds):
                handler, session = await HubProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except Exception as exc:
            logger.info("no valid CONNECT from %s:%s: %r", remote_address, remote_port, exc)
            writer.abort()
            raise AMQTTError(f"no valid CONNECT: {exc!r}") from exc
        # The TLS client certificate chain (DER, leaf first) of an X.509 device; () without.
        session.peer_certificates = tuple(writer.stream.get_extra_info("peercert_chain") or ())

        # Before amqtt's own code would delete, update or take over a session with this id.
        code = await self._check_login(session)
        if code != _CONNECTION_ACCEPTED:
            logger.info(
                "refused login of %r from %s:%s (CONNACK %d)", session.client_id, remote_address, remote_port, code
            )
            await self._refuse(writer, code)
            raise MQTTError(f"login refused with CONNACK {code}")
        if not self._throttle.allow(session.client_id):
            if session.client_id not in self._throttled:
                self._throttled.add(session.client_id)
                logger.warning(
                    "device %s connects too often (more than %d at once, then %s a minute); refusing with "
                    "CONNACK 3 until it slows down (two clients sharing one device id?)",
                    session.client_id,
                    config.connects_per_device_burst,
                    config.connects_per_device_per_minute,
                )
            await self._refuse(writer, _SERVER_UNAVAILABLE)
            raise MQTTError("login refused: the device id connects too often")
        self._throttled.discard(session.client_id)

        if session.will_flag and not (
            session.will_topic
            and session.will_topic.startswith("devices/")
            and scope.forwards_publish(session.client_id, session.will_topic)
        ):
            # IoT Hub accepts a will only on the device's own telemetry topic.
            logger.info("ignoring will of device %s on topic %r", session.client_id, session.will_topic)
            session.will_flag = False
        keepalive = session.keep_alive
        session.keep_alive = (
            min(keepalive * config.keepalive_factor, config.max_silence_seconds)
            if keepalive > 0
            else config.max_silence_seconds
        )
        session.parent = 0  # fresh session: "session present" is always 0
        return handler, session

    async def _check_login(self, session: Any) -> int:
        try:
            async with asyncio.timeout(self.gateway_config.connect_timeout_seconds):
                accepted = await self._authenticate(session, None)
        except TimeoutError:
            logger.warning("authenticating %r timed out", session.client_id)
            return _SERVER_UNAVAILABLE
        except Exception:
            logger.exception("authenticating %r failed", session.client_id)
            return _SERVER_UNAVAILABLE
        return _CONNECTION_ACCEPTED if accepted else _NOT_AUTHORIZED

    async def _refuse(self, writer: _HubStreamWriter, code: int) -> None:
        try:
            async with asyncio.timeout(self.gateway_config.connect_timeout_seconds):
                await ConnackPacket.build(0, code).to_stream(writer)
                await writer.close()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.abort()

    async def _handle_client_session(
        self,
        reader: Any,
        writer: _HubStreamWriter,
        client_session: Any,
        handler: HubProtocolHandler,
        server: Any,
        listener_name: str,
    ) -> None:
        conn = _Connection(client_session.client_id, client_session, handler, writer)
        handler.connection = conn
        handler.accept = self._accept_publish
        handler.max_payload = self.gateway_config.max_message_bytes
        if not await self._admit(conn, reader):
            return
        try:
            conn.worker = asyncio.create_task(self._run_worker(conn), name=f"fleethub-device-{conn.device_id}")
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_CONNECTED, client_id=conn.device_id, client_session=client_session
            )
            await self._client_message_loop(client_session, handler)
        finally:
            await self._release(conn)

    async def _admit(self, conn: _Connection, reader: Any) -> bool:
        """Register the connection as its device's only one and send CONNACK 0.

        Admissions for one device id run one at a time; a previous connection is closed and
        its teardown (including on_disconnected) awaited first.
        """
        device_id = conn.device_id
        while (gate := self._admitting.get(device_id)) is not None:
            await asyncio.wait({gate})
        if self._stopping:
            conn.abort()
            return False
        gate = asyncio.get_running_loop().create_future()
        self._admitting[device_id] = gate
        try:
            previous = self._connections.get(device_id)
            if previous is not None:
                logger.info("device %s connected again; closing its previous connection", device_id)
                await self._close(previous)
                if not previous.closed.is_set():
                    # Its teardown is stuck: the device must not read connected(new) followed
                    # by the old connection's late disconnected, so that goes out now.
                    await self._notify_disconnected(previous)
            conn.session.transitions.connect()
            conn.handler.attach(conn.session, reader, conn.writer)
            await conn.handler.mqtt_connack_authorize(True)
            await conn.handler.start()
            if self._stopping or conn.writer.is_closing():
                conn.abort()
                await self._stop_handler(conn.handler)
                return False
            self._sessions[device_id] = (conn.session, conn.handler)
            self._connections[device_id] = conn
            for waiter in self._connect_waiters.pop(device_id, ()):
                if not waiter.done():
                    waiter.set_result(None)
            return True
        except Exception:
            logger.exception("admitting device %s failed", device_id)
            conn.abort()
            await self._stop_handler(conn.handler)
            return False
        finally:
            del self._admitting[device_id]
            gate.set_result(None)

    async def _close(self, conn: _Connection) -> None:
        """Drop the connection now and wait (bounded) until its teardown is done."""
        conn.abort()
        if conn.worker is asyncio.current_task():
            return  # called from its own message handler: the teardown waits for that
        try:
            async with asyncio.timeout(self.gateway_config.close_timeout_seconds):
                await conn.closed.wait()
        except TimeoutError:
            logger.warning("connection of device %s did not finish closing in time", conn.device_id)

    async def _release(self, conn: _Connection) -> None:
        """Teardown: unregister, let the worker hand over what the device sent, then
        on_disconnected. Runs once per admitted connection, whatever ended it."""
        conn.closing = True
        device_id = conn.device_id
        if self._sessions.get(device_id, (None, None))[0] is conn.session:
            del self._sessions[device_id]
        try:
            worker = conn.worker
            if worker is not None:
                conn.queue.put_nowait(None)
                try:
                    _, pending = await asyncio.wait({worker}, timeout=self.gateway_config.drain_timeout_seconds)
                    if pending:
                        logger.warning("device %s: messages still pending at disconnect were dropped", device_id)
                finally:
                    worker.cancel()
                    (outcome,) = await asyncio.gather(worker, return_exceptions=True)
                    if isinstance(outcome, Exception):
                        logger.error("message worker of device %s failed", device_id, exc_info=outcome)
            await self._notify_disconnected(conn)
        finally:
            # Registered until here, so a new login of the device waits for this teardown.
            if self._connections.get(device_id) is conn:
                del self._connections[device_id]
            conn.closed.set()

    async def _handle_disconnect(
        self, client_session: Any, handler: HubProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        conn = handler.connection
        if (
            conn is not None
            and client_session.will_flag
            and client_session.will_topic
            and not isinstance(disconnect_waiter.result(), DisconnectPacket)
        ):
            # IoT Hub sends the will of a device that vanished as its telemetry.
            self._enqueue(conn, client_session.will_topic, bytes(client_session.will_message or b""))
        if conn is not None:
            # The device is gone (or said DISCONNECT): nothing more goes to it, so the socket
            # closes now rather than after a drain or a TLS close that a dead peer never answers.
            conn.abort()
        try:
            async with asyncio.timeout(self.gateway_config.close_timeout_seconds) as timeout:
                await self._stop_handler(handler)
        except TimeoutError:
            pass
        if timeout.expired() and conn is not None:
            conn.abort()
        client_session.transitions.disconnect()
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_DISCONNECTED, client_id=client_session.client_id, client_session=client_session
        )

    # -- what devices send --------------------------------------------------------------

    async def _handle_message_delivery(
        self, client_session: Any, handler: HubProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        # HubProtocolHandler.handle_publish normally hands publishes over itself; this is
        # the same rule for anything that still comes through amqtt's delivery queue.
        message = wait_deliver.result()
        conn = handler.connection
        if message is not None and conn is not None:
            data = message.data or b""
            self._accept_publish(conn, message.topic or "", data if isinstance(data, bytes) else bytes(data))
        return True  # amqtt ends the client loop on False, leaving the socket half-dead

    def _accept_publish(self, conn: _Connection, topic: str, payload: bytes) -> None:
        """A device PUBLISH: to the hub if in the device's scope, dropped otherwise; never
        broadcast or retained."""
        if not topic or "#" in topic or "+" in topic or len(topic) > self.gateway_config.max_topic_length:
            logger.warning("device %s published to an invalid topic; closing the connection", conn.device_id)
            conn.abort()
        elif scope.forwards_publish(conn.device_id, topic):
            self._enqueue(conn, topic, payload)
        else:
            logger.info("dropped a publish of device %s to %r: outside its topics", conn.device_id, topic)

    def _enqueue(self, conn: _Connection, topic: str, payload: bytes) -> None:
        if conn.closing:
            return  # already being closed (and said so): what still arrives is dropped quietly
        if conn.queue.qsize() >= self.gateway_config.max_pending_messages:
            logger.warning(
                "device %s is %d messages ahead of the hub; closing the connection", conn.device_id, conn.queue.qsize()
            )
            conn.abort()
            return
        conn.queue.put_nowait((topic, payload))

    async def _run_worker(self, conn: _Connection) -> None:
        """Presence and messages of one connection, in order: on_connected, then each
        message (its reply back to this connection); on_disconnected follows in _release."""
        events = self.device_events
        device_id = conn.device_id
        if not conn.disconnect_announced:  # a takeover may have closed its story before this ran
            conn.announced = True
            try:
                await events.on_connected(device_id)
            except Exception:
                logger.exception("on_connected(%s) failed", device_id)
        while (item := await conn.queue.get()) is not None:
            topic, payload = item
            try:
                reply = await events.on_message(device_id, topic, payload)
            except Exception:
                logger.exception("on_message(%s, %r) failed", device_id, topic)
                continue
            if reply is not None and not conn.closing:
                try:
                    await self._publish(conn, *reply)
                except DeviceNotOnlineError:
                    logger.debug("reply to device %s lost: connection closed", device_id)

    async def _notify_disconnected(self, conn: _Connection) -> None:
        """on_disconnected for a connection that announced itself, at most once; afterwards its
        worker announces nothing any more (a connected after it would be out of order)."""
        if conn.disconnect_announced:
            return
        conn.disconnect_announced = True
        if not conn.announced:
            return
        try:
            await self.device_events.on_disconnected(conn.device_id)
        except Exception:
            logger.exception("on_disconnected(%s) failed", conn.device_id)

    async def _publish(self, conn: _Connection, topic: str, payload: bytes) -> None:
        try:
            async with asyncio.timeout(self.gateway_config.send_timeout_seconds):
                await conn.handler.publish_qos0(topic, payload)
        except TimeoutError as exc:
            logger.warning("device %s did not take a publish in time; closing the connection", conn.device_id)
            conn.abort()
            raise DeviceNotOnlineError(f"Device {conn.device_id} is not reading", device_id=conn.device_id) from exc
        except OSError as exc:
            conn.abort()
            raise DeviceNotOnlineError(f"Device {conn.device_id} is not connected", device_id=conn.device_id) from exc

    # -- subscriptions ------------------------------------------------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Any) -> int:
        topic_filter, qos = subscription
        levels = topic_filter.split("/")
        well_formed = all(
            ("#" not in level or (level == "#" and index == len(levels) - 1)) and ("+" not in level or level == "+")
            for index, level in enumerate(levels)
        )
        if not well_formed or not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return _SUBACK_FAILURE
        return min(qos, _MAX_QOS)
