"""Everything a connected device does, as the gateway reports it: login, presence, messages."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable

from hub.domain.clock import Clock
from hub.domain.devices import DeviceStatus
from hub.engine.methods import MethodService
from hub.engine.ports import DeviceStore
from hub.engine.presence import PresenceService
from hub.engine.twins import TwinService
from hub.errors import BadRequestError, DeviceNotFoundError, HubError, ServiceUnavailableError
from hub.wire.sas import SasTokenError, hub_hosts, parse_sas_token, resource_host, signature_matches
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
# Real device tokens stay well under 1 KB (a 128-character id, a hostname, a signature).
_MAX_TOKEN_CHARS = 4096


def _username_names(username: str | None, client_id: str) -> bool:
    """IoT Hub usernames are ``{host}/{deviceId}/?api-version=..``; a bare device id is accepted too."""
    if username is None or username == client_id:
        return True
    path = username.split("/?", 1)[0].rstrip("/")
    return path.endswith(f"/{client_id}") or path == client_id


class DeviceAuthenticator:
    """SAS-token login: an HMAC per new token, then a cache keyed by a digest of the token and
    the keys it was checked against (a re-key or a disable invalidates it by construction).

    Everything that needs no key is checked first (length, form, expiry, lifetime, the device
    the username and the token name, the hub ``hostname`` when given), so most bad logins cost
    neither a database read nor an HMAC.
    """

    def __init__(
        self, store: DeviceStore, clock: Clock, *, max_token_lifetime: int, hostname: str | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_lifetime = max_token_lifetime
        self._hosts = hub_hosts(hostname) if hostname else None
        self._verified: OrderedDict[tuple[bytes, str, str, str], bool] = OrderedDict()

    async def authenticate(self, client_id: str, username: str | None, password: str | None) -> bool:
        if not client_id or not password or not _username_names(username, client_id):
            return False
        if len(password) > _MAX_TOKEN_CHARS:
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
        if self._hosts is not None and resource_host(host) not in self._hosts:
            return False  # signed for another hub: the same keys may be registered there
        try:
            device = await self._store.get_device(client_id)
        except DeviceNotFoundError:
            return False
        except ServiceUnavailableError:
            log.warning("login of %s refused: database unavailable", client_id)
            return False
        if device.status is not DeviceStatus.ENABLED:
            return False
        # A digest, not the token: the cache must not grow with what clients choose to send.
        digest = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
        cache_key = (digest, client_id, device.keys.primary, device.keys.secondary)
        verdict = self._verified.get(cache_key)
        if verdict is None:
            verdict = signature_matches(token, *device.keys.all())
            self._verified[cache_key] = verdict
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(cache_key)
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
            return await self._twins.answer_twin_get(device_id, message.rid)
        if isinstance(message, ReportedPatch):
            return await self._reported(device_id, message.rid, payload)
        if isinstance(message, Telemetry):
            if message.device_id == device_id:
                self.telemetry_count += 1
            return None
        return None

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
