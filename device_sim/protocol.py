"""The device side of the IoT Hub dialect, without a socket: dispatch, twin requests, desired state.

``DeviceProtocol`` takes each incoming ``(topic, payload)`` and sends through a ``publish``
callable bound while a connection is up, so everything here is tested with plain inputs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from device_sim.behaviours import Behaviours, MethodCall, MethodReply
from device_sim.errors import DeviceSimError, NotConnectedError, TwinRequestError
from device_sim.options import DeviceHooks, DeviceOptions, DeviceStats
from hub.domain.json import JsonObject, JsonValue
from hub.domain.methods import encode_payload
from hub.domain.twin import isoformat, merge_patch, strip_system_keys
from hub.wire.topics import (
    HubDesiredPatch,
    HubMethodRequest,
    HubTwinResponse,
    method_response_topic,
    parse_hub_topic,
    reported_patch_topic,
    twin_get_topic,
)

__all__ = [
    "DesiredState",
    "DeviceProtocol",
    "PendingRequests",
    "Publish",
    "ReconnectRequested",
    "TwinReply",
    "acknowledgement",
    "decode_payload",
    "merge_diff",
]

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
"""Sends one message on the live connection: ``publish(topic, payload)``."""

_LAST_DESIRED_VERSION = "lastDesiredVersion"  # reported keys may not contain "$"


class ReconnectRequested(Exception):
    """Raised after a reply when a method (e.g. ``reboot``) asked the device to reconnect."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"reconnect in {delay} s")
        self.delay = delay


@dataclass(frozen=True, slots=True)
class TwinReply:
    """One ``$iothub/twin/res/{status}/?$rid=..[&$version=..]`` message."""

    status: int
    version: int | None
    body: bytes


def decode_payload(body: bytes) -> JsonValue:
    """A message body as JSON; an empty body is ``None``. Raises ``ValueError`` for anything else."""
    if not body:
        return None
    value: JsonValue = json.loads(body)
    return value


def _version_of(document: Mapping[str, JsonValue]) -> int | None:
    value = document.get("$version")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def merge_diff(old: Mapping[str, JsonValue], new: Mapping[str, JsonValue]) -> JsonObject:
    """The JSON merge patch that turns ``old`` into ``new`` (``merge_patch(old, diff) == new``)."""
    patch: JsonObject = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            before = old[key]
            patch[key] = merge_diff(before, value) if isinstance(before, dict) and isinstance(value, dict) else value
    return patch


def acknowledgement(changes: Mapping[str, JsonValue], version: int | None) -> JsonObject:
    """The reported patch that confirms desired ``changes``: the same keys with the same values,
    plus ``lastDesiredVersion`` (IoT Hub "writable property" style)."""
    ack: JsonObject = dict(changes)
    if version is not None:
        ack[_LAST_DESIRED_VERSION] = version
    return ack


class PendingRequests:
    """Twin requests awaiting their reply, keyed by ``$rid``.

    Request ids count up for the device's lifetime, so a late reply from an earlier connection
    can never complete a newer request.
    """

    __slots__ = ("_futures", "_ids")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._futures: dict[str, asyncio.Future[TwinReply]] = {}

    def open(self) -> tuple[str, asyncio.Future[TwinReply]]:
        rid = str(next(self._ids))
        future: asyncio.Future[TwinReply] = asyncio.get_running_loop().create_future()
        self._futures[rid] = future
        return rid, future

    def resolve(self, rid: str, reply: TwinReply) -> bool:
        future = self._futures.pop(rid, None)
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    def discard(self, rid: str) -> None:
        self._futures.pop(rid, None)

    def fail_all(self, error: BaseException) -> None:
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(error)

    def __len__(self) -> int:
        return len(self._futures)


class DesiredState:
    """The device's copy of its desired properties and the last desired ``$version`` it applied."""

    __slots__ = ("properties", "version")

    def __init__(self) -> None:
        self.properties: JsonObject = {}
        self.version: int | None = None

    def _is_stale(self, version: int | None) -> bool:
        return version is not None and self.version is not None and version <= self.version

    def adopt(self, desired: Mapping[str, JsonValue]) -> JsonObject | None:
        """Take the full desired section of a twin GET; return what changed since the local copy,
        or ``None`` when its ``$version`` is not newer than what was already applied."""
        version = _version_of(desired)
        if self._is_stale(version):
            return None
        properties = strip_system_keys(desired)
        changes = merge_diff(self.properties, properties)
        self.properties = properties
        if version is not None:
            self.version = version
        return changes

    def apply(self, patch: Mapping[str, JsonValue], version: int | None) -> JsonObject | None:
        """Apply a desired notification; ``None`` (and no change) when ``version`` was already seen."""
        if self._is_stale(version):
            return None
        changes = strip_system_keys(patch)
        self.properties = merge_patch(self.properties, changes)
        if version is not None:
            self.version = version
        return changes


class DeviceProtocol:
    """Everything a simulated device does with hub messages, minus the connection.

    It is the ``DeviceContext`` its method handlers see. ``dispatch`` handles one message
    and returns follow-up work (a coroutine) that the caller runs concurrently with
    further reading: a method reply or a desired acknowledgement must not hold up the
    twin replies that it may itself be waiting for.
    """

    __slots__ = (
        "_publish",
        "_reconnect_after",
        "behaviours",
        "desired",
        "device_id",
        "hooks",
        "options",
        "pending",
        "started_at",
        "stats",
        "twin",
    )

    def __init__(self, device_id: str, *, behaviours: Behaviours, options: DeviceOptions, hooks: DeviceHooks) -> None:
        self.device_id = device_id
        self.behaviours = behaviours
        self.options = options
        self.hooks = hooks
        self.stats = DeviceStats()
        self.desired = DesiredState()
        self.twin: JsonObject | None = None
        self.pending = PendingRequests()
        self.started_at = options.clock.now()
        self._publish: Publish | None = None
        self._reconnect_after: float | None = None

    # -- connection binding --------------------------------------------------------------

    def bind(self, publish: Publish) -> None:
        self._publish = publish
        self._reconnect_after = None

    def unbind(self) -> None:
        """The connection is gone: fail the requests still waiting for replies."""
        self._publish = None
        self.pending.fail_all(NotConnectedError(f"device {self.device_id} lost its connection"))

    def request_reconnect(self, delay: float) -> None:
        self._reconnect_after = max(0.0, delay)

    async def _send(self, topic: str, payload: bytes) -> None:
        if self._publish is None:
            raise NotConnectedError(f"device {self.device_id} is not connected")
        await self._publish(topic, payload)

    # -- incoming ------------------------------------------------------------------------

    def dispatch(self, topic: str, payload: bytes) -> Coroutine[Any, Any, None] | None:
        """Handle one message from the hub; malformed ones are counted and logged, never raised."""
        try:
            parsed = parse_hub_topic(topic)
        except ValueError:  # TopicError, or a non-numeric status
            self._bad_message(f"unexpected topic {topic!r}")
            return None
        if isinstance(parsed, HubTwinResponse):
            if not self.pending.resolve(parsed.rid, TwinReply(parsed.status, parsed.version, payload)):
                logger.debug("%s: twin reply for unknown or expired request %r", self.device_id, parsed.rid)
            return None
        if isinstance(parsed, HubMethodRequest):
            return self.handle_method(parsed.method_name, parsed.rid, payload)
        return self._on_desired(parsed, payload)

    def _bad_message(self, reason: str) -> None:
        self.stats.bad_messages += 1
        logger.warning("%s: ignoring message: %s", self.device_id, reason)

    def _on_desired(self, topic: HubDesiredPatch, payload: bytes) -> Coroutine[Any, Any, None] | None:
        # The state changes here, synchronously, so notifications apply in arrival order.
        try:
            patch = decode_payload(payload)
        except ValueError:
            self._bad_message("desired patch is not JSON")
            return None
        if not isinstance(patch, dict):
            self._bad_message("desired patch is not a JSON object")
            return None
        version = topic.version if topic.version is not None else _version_of(patch)
        changes = self.desired.apply(patch, version)
        if changes is None:
            logger.debug(
                "%s: ignoring desired patch $version=%s (already at %s)", self.device_id, version, self.desired.version
            )
            return None
        self._desired_changed(changes, version)
        if not self.options.acknowledge_desired:
            return None
        return self._report_quietly(acknowledgement(changes, version), "acknowledge desired properties")

    def _desired_changed(self, changes: JsonObject, version: int | None) -> None:
        self.stats.desired_applied += 1
        if self.hooks.on_desired is not None:
            self._call_hook(self.hooks.on_desired, self.device_id, changes, version)

    async def handle_method(self, method_name: str, rid: str, payload: bytes) -> None:
        """Answer one direct method request; raises only ``ReconnectRequested`` (after replying)."""
        request_payload: JsonValue = None
        try:
            request_payload = decode_payload(payload)
        except ValueError:
            reply = MethodReply(400, {"message": "the method payload is not JSON"})
        else:
            reply = await self.behaviours.handle(MethodCall(self, method_name, request_payload))
        try:
            body = encode_payload(reply.payload)
        except (TypeError, ValueError):
            logger.exception("%s: %s returned a payload that is not JSON", self.device_id, method_name)
            reply = MethodReply(500, {"error": f"{method_name} returned a payload that is not JSON"})
            body = encode_payload(reply.payload)
        self.stats.methods_handled += 1
        if not 200 <= reply.status < 300:
            self.stats.methods_failed += 1
        if self.hooks.on_method is not None:
            self._call_hook(self.hooks.on_method, self.device_id, method_name, request_payload, reply)
        try:
            await self._send(method_response_topic(reply.status, rid), body)
        except Exception as exc:  # the hub times the call out; the device carries on
            logger.warning("%s: could not reply to %s (rid %s): %s", self.device_id, method_name, rid, exc)
        if self._reconnect_after is not None:
            delay, self._reconnect_after = self._reconnect_after, None
            raise ReconnectRequested(delay)

    def _call_hook(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            logger.exception("%s: hook %r failed", self.device_id, hook)

    # -- twin requests -------------------------------------------------------------------

    async def _request(self, topic_for: Callable[[str], str], body: bytes, timeout: float | None) -> TwinReply:
        rid, future = self.pending.open()
        limit = self.options.request_timeout if timeout is None else timeout
        try:
            await self._send(topic_for(rid), body)
            async with asyncio.timeout(limit):
                reply = await future
        except TimeoutError:
            raise TimeoutError(f"{self.device_id}: no reply to twin request {rid} within {limit} s") from None
        finally:
            self.pending.discard(rid)
        if not 200 <= reply.status < 300:
            raise TwinRequestError(reply.status, rid, reply.body)
        return reply

    async def fetch_twin(self, timeout: float | None = None) -> tuple[JsonObject, JsonObject | None]:
        """GET the twin, adopt its desired section, and return the document plus the acknowledgement
        still to report (``None`` when there is nothing new)."""
        reply = await self._request(twin_get_topic, b"", timeout)
        try:
            doc = decode_payload(reply.body)
        except ValueError as exc:
            raise DeviceSimError(f"{self.device_id}: the twin reply is not JSON") from exc
        if not isinstance(doc, dict):
            raise DeviceSimError(f"{self.device_id}: the twin reply is not a JSON object")
        self.twin = doc
        desired = doc.get("desired")
        desired_section: JsonObject = desired if isinstance(desired, dict) else {}
        changes = self.desired.adopt(desired_section)
        if changes is None:
            return doc, None
        if changes:
            self._desired_changed(changes, self.desired.version)
        if not self.options.acknowledge_desired:
            return doc, None
        return doc, acknowledgement(changes, self.desired.version)

    async def get_twin(self, timeout: float | None = None) -> JsonObject:
        """GET the twin (``{"desired": .., "reported": ..}``); new desired values are applied and
        acknowledged as from a notification."""
        doc, ack = await self.fetch_twin(timeout)
        if ack:
            await self.patch_reported(ack, timeout)
        return doc

    async def patch_reported(self, patch: Mapping[str, JsonValue], timeout: float | None = None) -> int | None:
        """Send a reported merge patch; return the new reported ``$version`` from the 204 reply.

        Raises ``TwinRequestError`` (with the status) on 4xx/5xx, ``TimeoutError`` without a
        reply, ``NotConnectedError`` without a connection.
        """
        reply = await self._request(reported_patch_topic, encode_payload(dict(patch)), timeout)
        self.stats.reported_patches += 1
        if self.twin is not None:
            # Keep the local twin in step, so `twin` shows what the hub now holds.
            reported = self.twin.get("reported")
            merged = merge_patch(reported if isinstance(reported, dict) else {}, patch)
            if reply.version is not None:
                merged["$version"] = reply.version
            self.twin["reported"] = merged
        return reply.version

    async def _report_quietly(self, patch: JsonObject, what: str) -> None:
        try:
            await self.patch_reported(patch)
        except (DeviceSimError, TimeoutError, ConnectionError) as exc:
            logger.warning("%s: could not %s: %s", self.device_id, what, exc)

    # -- session start -------------------------------------------------------------------

    def startup_report(self) -> JsonObject:
        report: JsonObject = dict(self.options.startup_properties)
        if self.options.report_started_at:
            report["startedAt"] = isoformat(self.started_at)
        return report

    async def start_session(self) -> None:
        """After (re)connecting: GET the twin, apply unseen desired values, and report the startup
        properties together with the acknowledgement in one patch."""
        _, ack = await self.fetch_twin()
        report = self.startup_report()
        if ack:
            report.update(ack)
        if report:
            await self.patch_reported(report)
