"""Device identities: id rules, keys, status."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from hub.errors import InvalidDeviceIdError

__all__ = [
    "ConnectionState",
    "Device",
    "DeviceStatus",
    "SymmetricKeys",
    "etag_matches",
    "etag_of",
    "generate_key",
    "new_device",
    "validate_device_id",
]

# IoT Hub: up to 128 chars of ASCII letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '
_DEVICE_ID = re.compile(r"[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}")


class DeviceStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class ConnectionState(StrEnum):
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"


def validate_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise InvalidDeviceIdError(
            f"Device id {device_id!r} is invalid: use 1-128 ASCII letters, digits or -.+%_#*?!(),:=@$'",
            device_id=device_id if isinstance(device_id, str) else None,
        )
    return device_id


def generate_key() -> str:
    """A random 256-bit key, base64 as IoT Hub issues them."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class SymmetricKeys:
    # Keys are secrets: a logged Device or traceback must not show them.
    primary: str = field(repr=False)
    secondary: str = field(repr=False)

    @classmethod
    def generate(cls) -> SymmetricKeys:
        return cls(generate_key(), generate_key())

    def all(self) -> tuple[str, str]:
        return (self.primary, self.secondary)


@dataclass(frozen=True, slots=True)
class Device:
    """A registry entry. ``etag_revision`` bumps on every identity change (keys, status)."""

    device_id: str
    generation_id: str
    keys: SymmetricKeys
    status: DeviceStatus = DeviceStatus.ENABLED
    status_reason: str | None = None
    status_updated_time: datetime | None = None
    connection_state: ConnectionState = ConnectionState.DISCONNECTED
    connection_state_updated_time: datetime | None = None
    last_activity_time: datetime | None = None
    etag_revision: int = 1
    created_time: datetime | None = field(default=None)

    @property
    def etag(self) -> str:
        return etag_of(self.etag_revision)

    def with_changes(self, **changes: object) -> Device:
        return replace(self, **changes)  # type: ignore[arg-type]


def etag_of(revision: int) -> str:
    """IoT Hub style etag (``AAAAAAAAAAc=``): base64 of the revision as 8 big-endian bytes."""
    return base64.b64encode(revision.to_bytes(8, "big", signed=False)).decode()


def etag_matches(if_match: str | None, etag: str) -> bool:
    """Whether an ``If-Match`` header admits ``etag``: absent, empty or ``*`` match anything.

    Clients send the etag bare (``AAAAAAAAAAE=``, as IoT Hub's bodies carry it) or quoted as
    HTTP says (``"AAAAAAAAAAE="``); the Node service SDK sends even the wildcard quoted
    (``"*"``). A comma-separated list matches when any member does.
    """
    if if_match is None:
        return True
    candidates = [part.strip().strip('"') for part in if_match.split(",")]
    return any(candidate in ("*", "", etag) for candidate in candidates)


def new_device(
    device_id: str,
    now: datetime,
    *,
    keys: SymmetricKeys | None = None,
    status: DeviceStatus = DeviceStatus.ENABLED,
    status_reason: str | None = None,
) -> Device:
    validate_device_id(device_id)
    return Device(
        device_id=device_id,
        generation_id=str(secrets.randbelow(10**18)).rjust(18, "6"),
        keys=keys or SymmetricKeys.generate(),
        status=status,
        status_reason=status_reason,
        status_updated_time=now,
        connection_state_updated_time=now,
        created_time=now,
    )
