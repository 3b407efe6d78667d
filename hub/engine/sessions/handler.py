"""Everything a connected device does, as the gateway reports it: login, presence, messages."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from hub.domain.events import CertificateRevoked, DeviceConnected, DeviceDisconnected
from hub.engine.sessions.auth import DeviceAuthenticator
from hub.engine.sessions.methods import MethodService
from hub.engine.sessions.presence import PresenceService
from hub.engine.sessions.twins import TwinService
from hub.errors import BadRequestError, HubError, ServiceUnavailableError
from hub.ports import DeviceRouter, EventBroker
from hub.wire.topics import (
    MethodResponse,
    ReportedPatch,
    Telemetry,
    TopicError,
    TwinGet,
    parse_device_topic,
    twin_response_topic,
)

__all__ = ["DeviceEventHandler"]

log = logging.getLogger(__name__)


class DeviceEventHandler:
    """hub.ports.DeviceEvents on top of the device session services: what the gateway reports
    a device did goes to presence, the twin service and the method service, and connections
    and disconnections are published as events.

    Devices whose login on this node a revoked CA admitted are dropped (each node drops its
    own: only it knows which CA admitted which of its devices)."""

    def __init__(
        self,
        authenticator: DeviceAuthenticator,
        presence: PresenceService,
        twins: TwinService,
        methods: MethodService,
        events: EventBroker,
        router: DeviceRouter,
    ) -> None:
        self._auth = authenticator
        self._presence = presence
        self._twins = twins
        self._methods = methods
        self._events = events
        self._router = router
        self.telemetry_count = 0
        events.subscribe(self._certificate_revoked, [CertificateRevoked])

    async def _certificate_revoked(self, event: CertificateRevoked) -> None:
        for device_id in self._auth.admitted_by(event.fingerprint):
            await self._router.disconnect(device_id)

    async def authenticate(
        self, client_id: str, username: str | None, password: str | None, certificates: Sequence[bytes] = ()
    ) -> bool:
        return await self._auth.authenticate(client_id, username, password, certificates)

    async def on_connected(self, device_id: str) -> None:
        self._presence.connected(device_id)
        await self._events.publish(DeviceConnected(device_id))

    async def on_disconnected(self, device_id: str) -> None:
        self._presence.disconnected(device_id)
        self._methods.on_disconnected(device_id)
        await self._events.publish(DeviceDisconnected(device_id))

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
