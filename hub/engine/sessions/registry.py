"""The device registry: create, read, update, delete and bulk import device identities."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from hub.domain.clock import Clock
from hub.domain.devices import (
    Device,
    DeviceAuth,
    DeviceStatus,
    SymmetricKeys,
    etag_matches,
    new_device,
    validate_device_id,
)
from hub.domain.events import DevicesAdded
from hub.engine.sessions.presence import PresenceService
from hub.errors import (
    BadRequestError,
    DeviceAlreadyExistsError,
    DeviceNotFoundError,
    HubError,
    PreconditionFailedError,
)
from hub.ports import DeviceRouter, EventBroker, Store

__all__ = ["MAX_BULK", "BulkOutcome", "DeviceSpec", "ImportMode", "ImportOperation", "RegistryService"]

log = logging.getLogger(__name__)

MAX_BULK = 1000


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """What a caller may set on a device. ``auth`` None means sas on create and 'keep' on
    update; ``keys`` None means 'generate' (create, or a switch to sas) or 'keep' (update)."""

    keys: SymmetricKeys | None = None
    status: DeviceStatus = DeviceStatus.ENABLED
    status_reason: str | None = None
    auth: DeviceAuth | None = None

    def __post_init__(self) -> None:
        if self.keys is not None and self.auth is not None and not self.auth.uses_keys:
            raise BadRequestError(f"symmetric keys are for sas devices, not {self.auth.kind.value}")


class ImportMode(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UPDATE_IF_MATCH_ETAG = "updateIfMatchETag"
    CREATE_OR_UPDATE = "createOrUpdate"
    DELETE = "delete"
    DELETE_IF_MATCH_ETAG = "deleteIfMatchETag"


@dataclass(frozen=True, slots=True)
class ImportOperation:
    device_id: str
    mode: ImportMode
    spec: DeviceSpec = field(default_factory=DeviceSpec)
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    errors: list[tuple[str, HubError]]

    @property
    def is_successful(self) -> bool:
        return not self.errors


class RegistryService:
    """Devices added are published (DevicesAdded); a device disabled, re-keyed or deleted
    loses its live connection at once (through the router)."""

    def __init__(
        self, store: Store, clock: Clock, presence: PresenceService, router: DeviceRouter, events: EventBroker
    ) -> None:
        self._store = store
        self._clock = clock
        self._presence = presence
        self._router = router
        self._events = events

    async def get_device(self, device_id: str) -> Device:
        return self._presence.overlay_device(await self._store.get_device(device_id))

    async def list_devices(self, top: int = 1000, after: str | None = None) -> list[Device]:
        devices = await self._store.list_devices(limit=max(1, min(top, 1000)), after=after)
        return [self._presence.overlay_device(d) for d in devices]

    async def count_devices(self) -> int:
        return await self._store.count_devices()

    async def count_devices_by_status(self) -> dict[DeviceStatus, int]:
        return await self._store.count_devices_by_status()

    async def put_device(self, device_id: str, spec: DeviceSpec, if_match: str | None) -> Device:
        """IoT Hub's PUT: create when absent (no If-Match), otherwise update under If-Match."""
        validate_device_id(device_id)
        if if_match is None:
            created = await self._store.add_device(self._new(device_id, spec))
            await self._events.publish(DevicesAdded(1))
            return created
        return await self._update(device_id, spec, if_match)

    def _new(self, device_id: str, spec: DeviceSpec) -> Device:
        return new_device(
            device_id,
            self._clock.now(),
            keys=spec.keys,
            auth=spec.auth or DeviceAuth(),
            status=spec.status,
            status_reason=spec.status_reason,
        )

    async def _update(self, device_id: str, spec: DeviceSpec, if_match: str | None) -> Device:
        current = await self._store.get_device(device_id)
        if not etag_matches(if_match, current.etag):
            raise PreconditionFailedError(
                f"etag {if_match} does not match the device's etag {current.etag}", device_id=device_id
            )
        changes: dict[str, object] = {"status_reason": spec.status_reason}
        auth = spec.auth or current.auth
        if auth != current.auth:
            changes["auth"] = auth
        if not auth.uses_keys:
            changes["keys"] = None
        elif spec.keys is not None:
            changes["keys"] = spec.keys
        elif current.keys is None:  # a certificate device turned into a sas one
            changes["keys"] = SymmetricKeys.generate()
        if spec.status != current.status:
            changes["status"] = spec.status
            changes["status_updated_time"] = self._clock.now()
        updated = await self._store.update_device(
            current.with_changes(**changes), expected_revision=current.etag_revision
        )
        if updated.status is DeviceStatus.DISABLED or updated.keys != current.keys or updated.auth != current.auth:
            # Old tokens and certificates must stop working at once: drop the live connection.
            await self._disconnect(device_id)
        return self._presence.overlay_device(updated)

    async def delete_device(self, device_id: str, if_match: str | None) -> None:
        current = await self._store.get_device(device_id)
        if not etag_matches(if_match, current.etag):
            raise PreconditionFailedError(
                f"etag {if_match} does not match the device's etag {current.etag}", device_id=device_id
            )
        await self._store.remove_device(device_id, expected_revision=current.etag_revision)
        self._presence.forget(device_id)
        await self._disconnect(device_id)

    async def _disconnect(self, device_id: str) -> None:
        await self._router.disconnect(device_id)

    async def import_devices(self, operations: Sequence[ImportOperation]) -> BulkOutcome:
        """Bulk create/update/delete; creates and deletes are batched, updates go one by one."""
        if len(operations) > MAX_BULK:
            raise BadRequestError(f"a bulk request may hold at most {MAX_BULK} devices, got {len(operations)}")
        errors: list[tuple[str, HubError]] = []
        creates: list[Device] = []
        deletes: list[str] = []
        seen: set[str] = set()
        for op in operations:
            try:
                validate_device_id(op.device_id)
                if op.device_id in seen:
                    raise BadRequestError(f"device {op.device_id!r} appears twice in one bulk request")
                seen.add(op.device_id)
                if op.mode is ImportMode.CREATE:
                    creates.append(self._new(op.device_id, op.spec))
                elif op.mode is ImportMode.DELETE:
                    deletes.append(op.device_id)
                elif op.mode is ImportMode.DELETE_IF_MATCH_ETAG:
                    await self.delete_device(op.device_id, op.etag or "")
                elif op.mode is ImportMode.CREATE_OR_UPDATE:
                    try:
                        await self._store.add_device(self._new(op.device_id, op.spec))
                    except DeviceAlreadyExistsError:
                        await self._update(op.device_id, op.spec, "*")
                else:
                    match = op.etag or "" if op.mode is ImportMode.UPDATE_IF_MATCH_ETAG else "*"
                    await self._update(op.device_id, op.spec, match)
            except HubError as exc:
                errors.append((op.device_id, exc))
        added = 0
        if creates:
            existing = await self._store.add_devices(creates)
            added = len(creates) - len(existing)
            for device_id in sorted(existing):
                errors.append(
                    (device_id, DeviceAlreadyExistsError(f"device {device_id!r} already exists", device_id=device_id))
                )
        if deletes:
            for device_id in sorted(await self._store.remove_devices(deletes)):
                errors.append(
                    (device_id, DeviceNotFoundError(f"device {device_id!r} does not exist", device_id=device_id))
                )
            for device_id in deletes:
                self._presence.forget(device_id)
                await self._disconnect(device_id)
        if added:
            await self._events.publish(DevicesAdded(added))
        return BulkOutcome(errors)
