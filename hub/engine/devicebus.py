"""Everything a connected device does, as the gateway reports it: login, presence, messages."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable

from hub.domain.clock import Clock
from hub.domain.devices import DeviceStatus
from hub.domain.twin import device_twin_document
from hub.engine.methods import MethodService
from hub.engine.ports import DeviceStore
from hub.engine.presence import PresenceService
from hub.engine.twins import TwinService
from hub.errors import BadRequestError, DeviceNotFoundError, HubError, ServiceUnavailableError
from hub.wire.sas import SasTokenError, parse_sas_token, signature_matches
from hub.wire.topics import (
    MethodResponse,
    ReportedPatch,
    Telemetry,
    TopicError,
    TwinGet,
    parse_device_topic,
    twin_response_topic,
)

__all__ = ["DeviceAuthenticator", "DeviceBus"]

log = logging.getLogger(__name__)

_CACHE_SIZE = 100_000


def _username_names(username: str | None, client_id: str) -> bool:
    """IoT Hub usernames are ``{host}/{deviceId}/?api-version=..``; a bare device id is accepted too."""
    if username is None or username == client_id:
        return True
    path = username.split("/?", 1)[0].rstrip("/")
    return path.endswith(f"/{client_id}") or path == client_id


class DeviceAuthenticator:
    """SAS-token login: an HMAC per new token, then a cache keyed by the token and the keys
    it was checked against (a re-key or a disable invalidates it by construction)."""

    def __init__(self, store: DeviceStore, clock: Clock, *, max_token_lifetime: int) -> None:
        self._store = store
        self._clock = clock
        self._max_lifetime = max_token_lifetime
        self._verified: OrderedDict[tuple[str, str, str, str], bool] = OrderedDict()

    async def authenticate(self, client_id: str, username: str | None, password: str | None) -> bool:
        if not client_id or not password or not _username_names(username, client_id):
            return False
        try:
            token = parse_sas_token(password)
        except SasTokenError:
            return False
        now = self._clock.now().timestamp()
        if token.is_expired(now) or token.expiry - now > self._max_lifetime or token.key_name is not None:
            return False
        host, sep, device_part = token.resource.partition("/devices/")
        if not sep or not host or device_part != client_id:
            return False
        try:
            device = await self._store.get_device(client_id)
        except DeviceNotFoundError:
            return False
        except ServiceUnavailableError:
            log.warning("login of %s refused: database unavailable", client_id)
            return False
        if device.status is not DeviceStatus.ENABLED:
            return False
        cache_key = (password, client_id, device.keys.primary, device.keys.secondary)
        verdict = self._verified.get(cache_key)
        if verdict is None:
            verdict = any(signature_matches(token, key) for key in device.keys.all())
            self._verified[cache_key] = verdict
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return verdict


class DeviceBus:
    """Implements hub.engine.ports.DeviceEvents on top of the engine services."""

    def __init__(
        self, authenticator: DeviceAuthenticator, presence: PresenceService, twins: TwinService, methods: MethodService
    ) -> None:
        self._auth = authenticator
        self._presence = presence
        self._twins = twins
        self._methods = methods
        self.telemetry_count = 0
        self.connect_listeners: list[Callable[[str], None]] = []
        """Called with the device id after each connection (the job runner's offline devices)."""

    async def authenticate(self, client_id: str, username: str | None, password: str | None) -> bool:
        return await self._auth.authenticate(client_id, username, password)

    async def on_connected(self, device_id: str) -> None:
        self._presence.connected(device_id)
        for listener in self.connect_listeners:
            listener(device_id)

    async def on_disconnected(self, device_id: str) -> None:
        self._presence.disconnected(device_id)
        self._methods.on_disconnected(device_id)

    async def on_message(self, device_id: str, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        self._presence.touch(device_id)
        try:
            message = parse_device_topic(topic)
        except TopicError as exc:
            log.info("dropped publish from %s: %s", device_id, exc)
            return None
        if isinstance(message, MethodResponse):
            self._methods.on_reply(device_id, message.rid, message.status, payload)
            return None
        if isinstance(message, TwinGet):
            return await self._twin_get(device_id, message.rid)
        if isinstance(message, ReportedPatch):
            return await self._reported(device_id, message.rid, payload)
        if isinstance(message, Telemetry):
            if message.device_id == device_id:
                self.telemetry_count += 1
            return None
        return None

    async def _twin_get(self, device_id: str, rid: str) -> tuple[str, bytes]:
        try:
            twin = await self._twins.get_for_device(device_id)
        except ServiceUnavailableError:
            return twin_response_topic(503, rid), b""
        except HubError:
            return twin_response_topic(404, rid), b""
        body = json.dumps(device_twin_document(twin), separators=(",", ":")).encode()
        return twin_response_topic(200, rid), body

    async def _reported(self, device_id: str, rid: str, payload: bytes) -> tuple[str, bytes]:
        try:
            version = await self._twins.patch_reported(device_id, payload)
        except BadRequestError as exc:
            return twin_response_topic(400, rid), json.dumps({"message": exc.message}).encode()
        except ServiceUnavailableError:
            return twin_response_topic(503, rid), b""
        except HubError as exc:
            return twin_response_topic(500, rid), json.dumps({"message": exc.message}).encode()
        return twin_response_topic(204, rid, version), b""
