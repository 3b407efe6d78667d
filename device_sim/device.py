"""One simulated device: a single MQTT 3.1.1 connection, kept up with backoff until stopped."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Coroutine, Mapping
from os import PathLike
from types import TracebackType
from typing import Any, Self

import aiomqtt

from device_sim.behaviours import Behaviours
from device_sim.connection import DeviceIdentity, MqttEndpoint
from device_sim.errors import DeviceSimError
from device_sim.options import DeviceHooks, DeviceOptions, DeviceStats
from device_sim.protocol import DeviceProtocol, ReconnectRequested
from hub.domain.json import JsonObject, JsonValue
from hub.wire.topics import METHODS_SUBSCRIBE, TWIN_DESIRED_SUBSCRIBE, TWIN_RESPONSE_SUBSCRIBE

__all__ = ["MqttClient", "SimulatedDevice", "backoff_delay"]

logger = logging.getLogger(__name__)

# Jitter only spreads reconnects out; it needs no seed, and one generator serves every device.
_jitter = random.Random()
# Several devices publishing replies at once is normal here; aiomqtt warns above 10 by default.
_PENDING_CALLS_THRESHOLD = 1000
_STOP_RETRY_SECONDS = 2.0


def backoff_delay(failures: int, initial: float, cap: float, rng: random.Random = _jitter) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1): exponential, capped, with
    jitter over the upper half so a fleet that dropped together does not return together."""
    ceiling = min(cap, initial * 2 ** min(max(failures - 1, 0), 32))
    return rng.uniform(ceiling / 2, ceiling)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _failed_subscriptions(topics: list[str], granted: object) -> list[str]:
    codes = list(granted) if isinstance(granted, list | tuple) else []
    return [topic for topic, code in zip(topics, codes, strict=False) if int(getattr(code, "value", code)) >= 0x80]


class MqttClient(aiomqtt.Client):
    """aiomqtt's client, leaving no "Future exception was never retrieved" behind.

    When the broker drops the connection, aiomqtt 2.x sets its ``_disconnected`` future to an
    "Unexpected disconnection" error, and ``__aexit__`` returns early on a done future without
    retrieving it; asyncio then reports it when the future is collected (after every hub
    restart, once per device that was not reading at that moment). The session's error has
    already been raised to the reconnect loop by then, so it is retrieved here and dropped."""

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            disconnected = self._disconnected
            if disconnected.done() and not disconnected.cancelled():
                disconnected.exception()


class SimulatedDevice:
    """A device that answers direct methods, follows desired properties and reports state.

    Use it as an async context manager (or ``start()`` / ``stop()``, or await ``run()`` in your
    own task group). ``connected`` is set once the device is connected, subscribed and has
    reported its startup properties, and cleared when the connection drops.
    """

    __slots__ = ("_drop", "_endpoint", "_identity", "_protocol", "_task", "_tls", "connected")

    def __init__(
        self,
        identity: DeviceIdentity,
        endpoint: MqttEndpoint,
        *,
        behaviours: Behaviours | None = None,
        options: DeviceOptions | None = None,
        hooks: DeviceHooks | None = None,
    ) -> None:
        self._identity = identity
        self._endpoint = endpoint
        self._tls = endpoint.tls_for(identity)  # built once: loading a certificate is not free
        self._protocol = DeviceProtocol(
            identity.device_id,
            behaviours=behaviours or Behaviours(),
            options=options or DeviceOptions(),
            hooks=hooks or DeviceHooks(),
        )
        self._task: asyncio.Task[None] | None = None
        self._drop: asyncio.Future[float] | None = None  # set while connected; drop() resolves it
        self.connected = asyncio.Event()

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        host: str | None = None,
        port: int | None = None,
        tls: bool = True,
        ca_cert: str | PathLike[str] | None = None,
        behaviours: Behaviours | None = None,
        options: DeviceOptions | None = None,
        hooks: DeviceHooks | None = None,
    ) -> SimulatedDevice:
        """A device from ``HostName=..;DeviceId=..;SharedAccessKey=..``; the broker defaults to the
        HostName (without port) on 8883 with TLS, or 1883 with ``tls=False``."""
        identity = DeviceIdentity.from_connection_string(connection_string)
        endpoint = MqttEndpoint.for_hub(identity.hostname, host=host, port=port, tls=tls, ca_cert=ca_cert)
        return cls(identity, endpoint, behaviours=behaviours, options=options, hooks=hooks)

    # -- state ---------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self._identity.device_id

    @property
    def identity(self) -> DeviceIdentity:
        return self._identity

    @property
    def endpoint(self) -> MqttEndpoint:
        return self._endpoint

    @property
    def stats(self) -> DeviceStats:
        return self._protocol.stats

    @property
    def desired(self) -> JsonObject:
        """The local copy of desired properties (without ``$version``)."""
        return self._protocol.desired.properties

    @property
    def desired_version(self) -> int | None:
        return self._protocol.desired.version

    @property
    def twin(self) -> JsonObject | None:
        """The last twin document fetched (``desired`` / ``reported``), kept in step with reports."""
        return self._protocol.twin

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- requests ------------------------------------------------------------------------

    async def get_twin(self, timeout: float | None = None) -> JsonObject:
        return await self._protocol.get_twin(timeout)

    async def patch_reported(self, patch: Mapping[str, JsonValue], timeout: float | None = None) -> int | None:
        """Report properties; returns the new reported ``$version``. See ``DeviceProtocol.patch_reported``."""
        return await self._protocol.patch_reported(patch, timeout)

    def drop(self, reconnect_after: float = 0.0) -> bool:
        """Close the connection now, as a device losing its network would, and reconnect after
        ``reconnect_after`` seconds; calls and twin requests in flight are abandoned. Returns
        ``False`` (and does nothing) when the device is not connected."""
        if self._drop is None or self._drop.done() or not self.connected.is_set():
            return False
        self._drop.set_result(max(0.0, reconnect_after))
        return True

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the device in a task owned by this object (``stop()`` ends it)."""
        if not self.running:
            self._task = asyncio.create_task(self.run(), name=f"device:{self.device_id}")

    async def stop(self) -> None:
        """Disconnect cleanly and stop reconnecting."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait, not `await task`: our own cancellation must still reach us. Python
        # 3.11's asyncio.wait_for (inside aiomqtt's requests) can swallow a cancellation that
        # meets a reply; the device then serves on, so it is cancelled again until it ends.
        while not (await asyncio.wait([task], timeout=_STOP_RETRY_SECONDS))[0]:
            task.cancel()
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: device task failed", self.device_id, exc_info=task.exception())

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """Connect and serve until cancelled, reconnecting with exponential backoff and jitter."""
        options = self._protocol.options
        failures = 0
        while True:
            delay = 0.0
            connected = False
            try:
                async with self._new_client() as client:
                    connected = True
                    failures = 0
                    await self._serve(client)
            except* ReconnectRequested as group:
                delay = max(getattr(exc, "delay", 0.0) for exc in group.exceptions)
                logger.info("%s: reconnecting in %.1f s as requested", self.device_id, delay)
            except* aiomqtt.MqttError as group:
                failures += 1
                delay = backoff_delay(failures, options.backoff_initial, options.backoff_max)
                # A whole fleet fails together when the hub is away: warn once per outage, not per retry.
                logger.log(
                    logging.WARNING if failures == 1 else logging.INFO,
                    "%s: %s; reconnecting in %.1f s",
                    self.device_id,
                    group.exceptions[0],
                    delay,
                )
            except* Exception as group:
                failures += 1
                delay = backoff_delay(failures, options.backoff_initial, options.backoff_max)
                logger.error("%s: connection failed; reconnecting in %.1f s", self.device_id, delay, exc_info=group)
            finally:
                if connected:
                    self._disconnected()
            await asyncio.sleep(delay)

    def _new_client(self) -> MqttClient:
        options = self._protocol.options
        client = MqttClient(
            self._endpoint.host,
            self._endpoint.port,
            identifier=self._identity.device_id,
            username=self._identity.username(options.api_version),
            # A fresh token on every connect: a reconnect after expiry must not be refused.
            password=self._identity.password(options.token_ttl),
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=False,
            keepalive=options.keepalive,
            tls_context=self._tls,
            timeout=options.connect_timeout,
        )
        client.pending_calls_threshold = _PENDING_CALLS_THRESHOLD
        return client

    async def _serve(self, client: aiomqtt.Client) -> None:
        protocol = self._protocol
        qos = protocol.options.qos

        async def publish(topic: str, payload: bytes) -> None:
            await client.publish(topic, payload, qos=qos)

        protocol.bind(publish)
        protocol.stats.connects += 1
        self._drop = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._until_dropped(self._drop), name=f"device:{self.device_id}:drop")
            # Reading starts first: the hub may push method calls before we subscribe, and the
            # twin replies that start_session awaits arrive through it.
            tg.create_task(self._read(client, tg), name=f"device:{self.device_id}:read")
            topics = [METHODS_SUBSCRIBE, TWIN_RESPONSE_SUBSCRIBE, TWIN_DESIRED_SUBSCRIBE]
            granted = await client.subscribe([(topic, qos) for topic in topics])
            refused = _failed_subscriptions(topics, granted)
            if refused:
                logger.warning("%s: the hub refused subscriptions to %s", self.device_id, refused)
            try:
                await protocol.start_session()
            except (DeviceSimError, TimeoutError) as exc:
                # Without its twin the device still serves methods; it retries on its next connect.
                logger.warning("%s: startup twin exchange failed: %s", self.device_id, exc)
            self.connected.set()
            self._notify_connection(True)

    @staticmethod
    async def _until_dropped(drop: asyncio.Future[float]) -> None:
        # Raising inside the session's task group ends the session (its reader, its handlers).
        raise ReconnectRequested(await drop)

    async def _read(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        protocol = self._protocol
        async for message in client.messages:
            work = protocol.dispatch(message.topic.value, _payload_bytes(message.payload))
            if work is not None:
                task = tg.create_task(self._guard(work))
                task.add_done_callback(functools.partial(_close_unstarted, work))

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        # One bad message must not end the session: only a requested reconnect may.
        try:
            await work
        except ReconnectRequested:
            raise
        except Exception:
            logger.exception("%s: handling a message failed", self.device_id)

    def _disconnected(self) -> None:
        if self._drop is not None:
            self._drop.cancel()
            self._drop = None
        self._protocol.unbind()
        self._protocol.stats.disconnects += 1
        if self.connected.is_set():
            self.connected.clear()
            self._notify_connection(False)

    def _notify_connection(self, up: bool) -> None:
        hook = self._protocol.hooks.on_connection
        if hook is not None:
            try:
                hook(self.device_id, up)
            except Exception:
                logger.exception("%s: connection hook failed", self.device_id)


def _close_unstarted(work: Coroutine[Any, Any, None], task: asyncio.Task[None]) -> None:
    """Close a handler whose guard was cancelled before it ran (a drop ended the session).

    Otherwise the coroutine is never awaited and Python warns about it at collection.
    Closing a coroutine that already ran is a no-op.
    """
    if task.cancelled():
        work.close()
