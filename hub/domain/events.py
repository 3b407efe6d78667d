"""Hub-internal events: what one component tells the others (hub.ports.EventBroker carries them).

Each event is a small frozen record of ids and facts, never a Python object, so that it can
cross a process boundary: ``encode_event`` gives compact JSON bytes with a ``type`` key, and
``decode_event`` reads them back, refusing an unknown type, an unknown or missing field and a
value of the wrong type. Whatever else a subscriber needs it reads from the store by id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from hub.domain.json import is_integer

__all__ = [
    "CertificateRevoked",
    "DeviceConnected",
    "DeviceDisconnected",
    "DevicesAdded",
    "EventDecodeError",
    "HubEvent",
    "JobCancelled",
    "JobCreated",
    "ScheduleChanged",
    "TwinChanged",
    "decode_event",
    "encode_event",
]


class EventDecodeError(ValueError):
    """Bytes that are not an event this hub knows (another version's, or damaged)."""


@dataclass(frozen=True, slots=True)
class HubEvent:
    """What every event is: a frozen record whose fields are strings and integers."""

    type: ClassVar[str]


@dataclass(frozen=True, slots=True)
class DeviceConnected(HubEvent):
    """A device's connection was accepted (a job waiting for it calls it now)."""

    type: ClassVar[str] = "device.connected"
    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceDisconnected(HubEvent):
    """A device's connection ended."""

    type: ClassVar[str] = "device.disconnected"
    device_id: str


@dataclass(frozen=True, slots=True)
class DevicesAdded(HubEvent):
    """Devices were registered (continuous jobs look for new matches)."""

    type: ClassVar[str] = "devices.added"
    count: int


@dataclass(frozen=True, slots=True)
class TwinChanged(HubEvent):
    """A device's twin changed: tags or desired through the API, reported by the device."""

    type: ClassVar[str] = "twin.changed"
    device_id: str


@dataclass(frozen=True, slots=True)
class CertificateRevoked(HubEvent):
    """A CA certificate stopped admitting devices (deleted or replaced): the devices whose
    login it admitted lose their connection. ``fingerprint``: its SHA-256, in hex."""

    type: ClassVar[str] = "certificate.revoked"
    fingerprint: str


@dataclass(frozen=True, slots=True)
class JobCreated(HubEvent):
    """A job was stored (a runner with room starts it when its start time comes)."""

    type: ClassVar[str] = "job.created"
    job_id: str


@dataclass(frozen=True, slots=True)
class JobCancelled(HubEvent):
    """A job was cancelled (the node running it starts no further device)."""

    type: ClassVar[str] = "job.cancelled"
    job_id: str


@dataclass(frozen=True, slots=True)
class ScheduleChanged(HubEvent):
    """A schedule was created, replaced, enabled, disabled, deleted or asked to run now."""

    type: ClassVar[str] = "schedule.changed"
    schedule_id: str


_KINDS: dict[str, type[HubEvent]] = {
    kind.type: kind
    for kind in (
        DeviceConnected,
        DeviceDisconnected,
        DevicesAdded,
        TwinChanged,
        CertificateRevoked,
        JobCreated,
        JobCancelled,
        ScheduleChanged,
    )
}
# Every field is a string or an integer: what a field is named after says which.
_INTEGER_FIELDS = frozenset({"count"})


def encode_event(event: HubEvent) -> bytes:
    return json.dumps({"type": event.type, **asdict(event)}, separators=(",", ":"), ensure_ascii=False).encode()


def decode_event(data: bytes) -> HubEvent:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise EventDecodeError(f"an event is a JSON object: {exc}") from None
    if not isinstance(document, dict):
        raise EventDecodeError("an event is a JSON object")
    name = document.pop("type", None)
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise EventDecodeError(f"unknown event type {name!r}")
    names = {field.name for field in fields(kind)}
    if unknown := sorted(set(document) - names):
        raise EventDecodeError(f"{name} event has unknown fields {unknown}")
    if missing := sorted(names - set(document)):
        raise EventDecodeError(f"{name} event lacks fields {missing}")
    for key, value in document.items():
        want_integer = key in _INTEGER_FIELDS
        if not (is_integer(value) if want_integer else isinstance(value, str)):
            raise EventDecodeError(f"{name} event field {key} must be {'an integer' if want_integer else 'a string'}")
    return kind(**document)
