"""Twin reads and writes from the back end and from devices, with desired pushes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable

from hub.domain.clock import Clock
from hub.domain.devices import etag_matches
from hub.domain.events import TwinChanged
from hub.domain.json import JsonObject, loads_strict
from hub.domain.twin import (
    Twin,
    apply_reported_patch,
    apply_twin_patch,
    device_twin_document,
    parse_twin_patch,
    replace_tags_and_desired,
)
from hub.engine.sessions.presence import PresenceService
from hub.engine.sessions.reported import ReportedBatcher
from hub.errors import (
    BadRequestError,
    ConcurrencyConflictError,
    DeviceNotOnlineError,
    HubError,
    PreconditionFailedError,
    ServiceUnavailableError,
)
from hub.ports import DeviceLink, DeviceRouter, EventBroker, Store
from hub.wire.topics import twin_response_topic

__all__ = ["MAX_TWIN_GETS_PER_DEVICE", "MAX_WRITE_ATTEMPTS", "TwinService", "decode_json_object"]

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 50
MAX_DEVICE_PAYLOAD_BYTES = 64 * 1024
MAX_TWIN_GETS_PER_DEVICE = 32
"""Twin GETs one device may have in flight; more are answered 429 at once, as IoT Hub
throttles twin reads."""

DeviceReply = tuple[str, bytes]


def decode_json_object(payload: bytes, what: str) -> JsonObject:
    """Decode a device-sent JSON object; BadRequestError for anything else."""
    if len(payload) > MAX_DEVICE_PAYLOAD_BYTES:
        raise BadRequestError(f"{what} is {len(payload)} bytes, over the limit of {MAX_DEVICE_PAYLOAD_BYTES}")
    try:
        value = loads_strict(payload)
    except ValueError as exc:
        raise BadRequestError(f"{what} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a JSON object")
    return value


class TwinService:
    """Every twin change is published (TwinChanged); desired changes are pushed to the
    device through the router. A device's own twin GETs are answered on its connection,
    through ``link`` (this node's gateway, where the device is connected)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        presence: PresenceService,
        router: DeviceRouter,
        events: EventBroker,
        *,
        link: DeviceLink | None = None,
        max_twin_gets_per_device: int = MAX_TWIN_GETS_PER_DEVICE,
    ) -> None:
        if max_twin_gets_per_device < 1:
            raise ValueError(f"max_twin_gets_per_device must be at least 1, not {max_twin_gets_per_device}")
        self._store = store
        self._clock = clock
        self._presence = presence
        self._router = router
        self._events = events
        self._link = link
        self._reported = ReportedBatcher(store, clock, self._patch_reported_alone)
        self._max_gets = max_twin_gets_per_device
        self._gets: asyncio.TaskGroup | None = None
        self._gets_in_flight: dict[str, int] = {}
        self._throttled: set[str] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TwinService]:
        """While inside (the hub's lifetime), batch devices' reported patches and answer their
        twin GETs beside their other messages. Outside, each patch is written on its own and
        each GET answered in turn, which is all a test without a background task needs."""
        async with self._reported.running(), asyncio.TaskGroup() as gets:
            self._gets = gets
            try:
                yield self
            finally:
                self._gets = None

    async def get_twin(self, device_id: str) -> Twin:
        return self._presence.overlay_twin(await self._store.get_twin(device_id))

    async def _write(self, device_id: str, if_match: str | None, change: Callable[[Twin], Twin]) -> Twin:
        """Read-modify-write with the revision checked in the write; retried on a lost race
        unless the caller pinned an etag, which then fails with 412 as IoT Hub does."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            current = await self._store.get_twin(device_id)
            if not etag_matches(if_match, current.etag):
                raise PreconditionFailedError(
                    f"etag {if_match} does not match the twin's etag {current.etag}", device_id=device_id
                )
            updated = change(current)
            try:
                await self._store.save_twin(updated, expected_revision=current.revision)
            except ConcurrencyConflictError:
                continue
            return self._presence.overlay_twin(updated)
        raise ConcurrencyConflictError(f"twin {device_id!r} is changing too fast; try again", device_id=device_id)

    async def patch_twin(self, device_id: str, body: JsonObject, if_match: str | None = None) -> Twin:
        patch = parse_twin_patch(body, reported="ignore")
        tags, desired = patch.tags, patch.desired
        now = self._clock.now()

        twin = await self._write(device_id, if_match, lambda t: apply_twin_patch(t, tags, desired, now))
        await self._events.publish(TwinChanged(device_id))
        if desired:
            await self._router.push_desired(device_id, desired, twin.desired.version)
        return twin

    async def replace_twin(self, device_id: str, body: JsonObject, if_match: str | None = None) -> Twin:
        given = parse_twin_patch(body, reported="ignore")
        tags = given.tags or {}
        desired = given.desired or {}
        now = self._clock.now()
        previous: dict[str, JsonObject] = {}

        def change(twin: Twin) -> Twin:
            previous["desired"] = twin.desired.properties
            return replace_tags_and_desired(twin, tags, desired, now)

        twin = await self._write(device_id, if_match, change)
        await self._events.publish(TwinChanged(device_id))
        # The device sees a replace as a patch: new values, and null for keys that went away.
        patch: JsonObject = {key: None for key in previous.get("desired", {}) if key not in desired}
        patch.update(desired)
        if patch:
            await self._router.push_desired(device_id, patch, twin.desired.version)
        return twin

    # -- the device side -------------------------------------------------------------

    async def get_for_device(self, device_id: str) -> Twin:
        return await self._store.get_twin(device_id)

    async def answer_twin_get(self, device_id: str, rid: str) -> DeviceReply | None:
        """A device's twin GET: the reply to send back now, or None when the reply will follow
        through the link.

        While running, the read runs beside the device's later messages, so a device that
        floods GETs never falls behind on its connection; past ``max_twin_gets_per_device`` in
        flight, a GET is answered 429 at once and costs the database nothing."""
        gets, link = self._gets, self._link
        if gets is None or link is None:
            return await self._twin_get_reply(device_id, rid)
        in_flight = self._gets_in_flight.get(device_id, 0)
        if in_flight >= self._max_gets:
            if device_id not in self._throttled:
                self._throttled.add(device_id)
                log.warning("device %s has %d twin GETs in flight; answering more with 429", device_id, in_flight)
            return twin_response_topic(429, rid), b""
        self._gets_in_flight[device_id] = in_flight + 1
        gets.create_task(self._send_twin_get(link, device_id, rid), name=f"twin-get-{device_id}")
        return None

    async def _send_twin_get(self, link: DeviceLink, device_id: str, rid: str) -> None:
        try:
            await link.send(device_id, *await self._twin_get_reply(device_id, rid))
        except DeviceNotOnlineError:
            log.debug("twin GET reply for %s lost: device went offline", device_id)
        except Exception:  # one GET must not end the task group that serves every device
            log.exception("twin GET of device %s failed", device_id)
        finally:
            left = self._gets_in_flight.pop(device_id) - 1
            if left:
                self._gets_in_flight[device_id] = left
            else:
                self._throttled.discard(device_id)

    async def _twin_get_reply(self, device_id: str, rid: str) -> DeviceReply:
        try:
            twin = await self.get_for_device(device_id)
        except ServiceUnavailableError:
            return twin_response_topic(503, rid), b""
        except HubError:
            return twin_response_topic(404, rid), b""
        body = json.dumps(device_twin_document(twin), separators=(",", ":")).encode()
        return twin_response_topic(200, rid), body

    async def patch_reported(self, device_id: str, payload: bytes) -> int:
        """Apply a device's reported patch; return the new reported ``$version``.

        Decoded here, so a malformed payload fails at once and alone; while running, the patch
        then joins a group commit with other devices' patches (hub.engine.sessions.reported)."""
        patch = decode_json_object(payload, "reported properties patch")
        if self._reported.is_running:
            version = await self._reported.submit(device_id, patch)
        else:
            version = await self._patch_reported_alone(device_id, patch)
        await self._events.publish(TwinChanged(device_id))
        return version

    async def _patch_reported_alone(self, device_id: str, patch: JsonObject) -> int:
        now = self._clock.now()
        twin = await self._write(device_id, None, lambda t: apply_reported_patch(t, patch, now))
        return twin.reported.version
