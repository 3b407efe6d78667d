"""HTTP shapes in IoT Hub's JSON, and the mappers between them and domain values."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hub.domain.devices import Device, DeviceStatus, SymmetricKeys
from hub.domain.twin import isoformat
from hub.engine.registry import DeviceSpec
from hub.errors import BadRequestError

__all__ = [
    "AuthenticationIn",
    "BulkDeviceIn",
    "DeviceIn",
    "MethodInvocationIn",
    "device_out",
    "spec_from",
]

_NEVER = "0001-01-01T00:00:00Z"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SymmetricKeyIn(_Open):
    primaryKey: str | None = None
    secondaryKey: str | None = None


class AuthenticationIn(_Open):
    type: str | None = "sas"
    symmetricKey: SymmetricKeyIn | None = None


class DeviceIn(_Open):
    deviceId: str | None = None
    status: DeviceStatus = DeviceStatus.ENABLED
    statusReason: str | None = None
    authentication: AuthenticationIn | None = None
    etag: str | None = None


class BulkDeviceIn(DeviceIn):
    id: str
    importMode: str = "create"
    eTag: str | None = None


class MethodInvocationIn(_Open):
    methodName: Any = None
    payload: Any = None
    responseTimeoutInSeconds: Any = Field(default=30)
    connectTimeoutInSeconds: Any = Field(default=0)


def _keys(auth: AuthenticationIn | None) -> SymmetricKeys | None:
    if auth is None or auth.symmetricKey is None:
        return None
    primary, secondary = auth.symmetricKey.primaryKey, auth.symmetricKey.secondaryKey
    if not primary and not secondary:
        return None
    generated = SymmetricKeys.generate()
    return SymmetricKeys(primary or generated.primary, secondary or generated.secondary)


def spec_from(body: DeviceIn) -> DeviceSpec:
    keys = _keys(body.authentication)
    if keys is not None:
        _check_key(keys.primary)
        _check_key(keys.secondary)
    return DeviceSpec(keys=keys, status=body.status, status_reason=body.statusReason)


def _check_key(key: str) -> None:
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise BadRequestError("symmetric keys must be base64") from None
    if not 16 <= len(raw) <= 64:
        raise BadRequestError("symmetric keys must decode to 16-64 bytes")


def _time(moment: datetime | None) -> str:
    return isoformat(moment) if moment else _NEVER


def device_out(device: Device, *, with_keys: bool = True) -> dict[str, Any]:
    keys = (
        {"primaryKey": device.keys.primary, "secondaryKey": device.keys.secondary}
        if with_keys
        else {"primaryKey": None, "secondaryKey": None}
    )
    return {
        "deviceId": device.device_id,
        "generationId": device.generation_id,
        "etag": device.etag,
        "connectionState": device.connection_state.value,
        "status": device.status.value,
        "statusReason": device.status_reason,
        "connectionStateUpdatedTime": _time(device.connection_state_updated_time),
        "statusUpdatedTime": _time(device.status_updated_time),
        "lastActivityTime": _time(device.last_activity_time),
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": keys,
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "type": "sas",
        },
        "capabilities": {"iotEdge": False},
    }
