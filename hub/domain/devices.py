"""Device identities: id rules, how a device authenticates (keys or X.509), status."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from hub.domain.json import JsonObject
from hub.errors import BadRequestError, InvalidDeviceIdError

__all__ = [
    "SAS_AUTH",
    "AuthKind",
    "ConnectionState",
    "Device",
    "DeviceAuth",
    "DeviceStatus",
    "SymmetricKeys",
    "etag_matches",
    "etag_of",
    "generate_key",
    "new_device",
    "normalize_thumbprint",
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


class AuthKind(StrEnum):
    """IoT Hub's ``authentication.type``: a SAS token signed with the device's keys, or a TLS
    client certificate, self-signed (checked by thumbprint) or signed by a registered CA."""

    SAS = "sas"
    SELF_SIGNED = "selfSigned"
    CERTIFICATE_AUTHORITY = "certificateAuthority"


_HEX = frozenset("0123456789ABCDEF")


def normalize_thumbprint(value: str, what: str) -> str:
    """A certificate thumbprint as IoT Hub takes it: SHA-1 (40) or SHA-256 (64) hex digits,
    in any case and with optional ``:`` separators; returned upper-case without them."""
    text = value.replace(":", "").strip().upper()
    if len(text) not in (40, 64) or not _HEX.issuperset(text):
        raise BadRequestError(f"{what} must be a SHA-1 (40 hex digits) or SHA-256 (64 hex digits) thumbprint")
    return text


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    """How a device proves who it is. Thumbprints (upper-case hex) belong to ``selfSigned``."""

    kind: AuthKind = AuthKind.SAS
    primary_thumbprint: str | None = None
    secondary_thumbprint: str | None = None

    def __post_init__(self) -> None:
        if self.kind is AuthKind.SELF_SIGNED and not (self.primary_thumbprint or self.secondary_thumbprint):
            raise BadRequestError("a selfSigned device needs x509Thumbprint.primaryThumbprint (or secondaryThumbprint)")
        if self.kind is not AuthKind.SELF_SIGNED and (self.primary_thumbprint or self.secondary_thumbprint):
            raise BadRequestError(f"x509Thumbprint is for selfSigned devices, not {self.kind.value}")

    @property
    def uses_keys(self) -> bool:
        return self.kind is AuthKind.SAS

    def thumbprints(self) -> tuple[str, ...]:
        return tuple(t for t in (self.primary_thumbprint, self.secondary_thumbprint) if t)

    def thumbprint_document(self) -> JsonObject:
        return {"primaryThumbprint": self.primary_thumbprint, "secondaryThumbprint": self.secondary_thumbprint}


SAS_AUTH = DeviceAuth()


@dataclass(frozen=True, slots=True)
class Device:
    """A registry entry. ``etag_revision`` bumps on every identity change (keys, status).
    ``keys`` is None exactly when the device authenticates with a certificate."""

    device_id: str
    generation_id: str
    keys: SymmetricKeys | None
    status: DeviceStatus = DeviceStatus.ENABLED
    status_reason: str | None = None
    status_updated_time: datetime | None = None
    connection_state: ConnectionState = ConnectionState.DISCONNECTED
    connection_state_updated_time: datetime | None = None
    last_activity_time: datetime | None = None
    etag_revision: int = 1
    created_time: datetime | None = field(default=None)
    auth: DeviceAuth = SAS_AUTH

    def __post_init__(self) -> None:
        if (self.keys is not None) != self.auth.uses_keys:
            raise ValueError(f"device {self.device_id!r}: keys go with sas authentication, and only with it")

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
    auth: DeviceAuth = SAS_AUTH,
    status: DeviceStatus = DeviceStatus.ENABLED,
    status_reason: str | None = None,
) -> Device:
    validate_device_id(device_id)
    return Device(
        device_id=device_id,
        generation_id=str(secrets.randbelow(10**18)).rjust(18, "6"),
        keys=(keys or SymmetricKeys.generate()) if auth.uses_keys else None,
        auth=auth,
        status=status,
        status_reason=status_reason,
        status_updated_time=now,
        connection_state_updated_time=now,
        created_time=now,
    )
