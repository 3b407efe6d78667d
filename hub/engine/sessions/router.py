"""Device work routed to this node's gateway: hub.ports.DeviceRouter for one hub process."""

from __future__ import annotations

import json
import logging

from hub.domain.json import JsonObject
from hub.domain.methods import MethodRequest, MethodResult
from hub.domain.twin import desired_notification
from hub.engine.sessions.methods import MethodService
from hub.errors import DeviceNotOnlineError
from hub.ports import DeviceLink
from hub.wire.topics import desired_patch_topic

__all__ = ["LocalDeviceRouter"]

log = logging.getLogger(__name__)


class LocalDeviceRouter:
    """Every device is reached through ``link`` (this node's gateway); method calls are
    correlated by ``methods``."""

    def __init__(self, link: DeviceLink, methods: MethodService) -> None:
        self._link = link
        self._methods = methods

    def is_connected(self, device_id: str) -> bool:
        return self._link.is_connected(device_id)

    async def invoke_method(self, device_id: str, request: MethodRequest) -> MethodResult:
        return await self._methods.invoke(device_id, request)

    async def push_desired(self, device_id: str, patch: JsonObject, version: int) -> None:
        if not self._link.is_connected(device_id):
            return
        body = json.dumps(desired_notification(patch, version), separators=(",", ":")).encode()
        try:
            await self._link.send(device_id, desired_patch_topic(version), body)
        except DeviceNotOnlineError:
            log.debug("desired patch v%s for %s not pushed: device went offline", version, device_id)

    async def disconnect(self, device_id: str) -> None:
        await self._link.disconnect(device_id)
