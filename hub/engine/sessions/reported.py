"""Group commit for devices' reported-properties patches.

When a twin update job pushes a desired change to thousands of connected devices, they all
acknowledge it with a reported patch at nearly the same moment. Written one at a time, each
patch is a read and a conditional write (two round trips, one transaction); the burst then
takes seconds, devices time out waiting for their twin response and the rest of the hub slows
down with it. The batcher instead collects the patches that arrive while the previous batch is
being written (plus a short linger after an idle spell), reads all their twins with one query,
applies the patches in arrival order and writes every changed twin in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from hub.domain.clock import Clock
from hub.domain.json import JsonObject
from hub.domain.twin import Twin, apply_reported_patch
from hub.errors import (
    ConcurrencyConflictError,
    DeviceNotFoundError,
    HubError,
    ServiceUnavailableError,
)
from hub.ports import TwinStore

__all__ = ["ReportedBatcher"]

log = logging.getLogger(__name__)

MAX_BATCH = 500
"""Patches per batch: large enough to amortise a transaction, small enough that one batch's
Python work (applying patches, encoding JSON) does not hold the event loop for long."""

LINGER_SECONDS = 0.002
"""How long the first patch after an idle spell waits for company. Under load no linger is
needed: patches pile up while the previous batch is written."""

MAX_BATCH_ATTEMPTS = 50
"""Batches a patch may lose to concurrent twin writes before it fails with a conflict, as the
single-device write loop does after as many attempts."""

SingleWrite = Callable[[str, JsonObject], Awaitable[int]]


@dataclass(slots=True)
class _Pending:
    device_id: str
    patch: JsonObject
    future: asyncio.Future[int]
    attempts: int = 0


@dataclass(slots=True)
class _DeviceBatch:
    """The patches of one device in a batch, in arrival order, and the twin they lead to."""

    base: Twin
    twin: Twin
    applied: list[tuple[_Pending, int]] = field(default_factory=list)


class ReportedBatcher:
    """Applies reported patches in batches from one background task (see ``running``).

    ``submit`` returns the patch's new reported ``$version`` or raises what that patch alone
    caused (TwinLimitError, DeviceNotFoundError, ConcurrencyConflictError) or
    ServiceUnavailableError when the database is out. ``single_write`` applies one patch on
    its own; it is used when a batch write fails for a reason that may concern only some of
    its twins (a value the database refuses), so that only those patches fail.
    """

    def __init__(
        self,
        store: TwinStore,
        clock: Clock,
        single_write: SingleWrite,
        *,
        max_batch: int = MAX_BATCH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._single_write = single_write
        self._max_batch = max_batch
        self._linger = linger
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: list[_Pending] = []
        self._closing = False
        self.batches = 0
        """Batches written so far (for tests and diagnostics)."""

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._closing

    async def submit(self, device_id: str, patch: JsonObject) -> int:
        """Queue a decoded, object-shaped patch and wait for its batch; only while running."""
        if not self.is_running:
            raise RuntimeError("ReportedBatcher is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(device_id, patch, future))
        self._wake.set()
        return await future

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReportedBatcher]:
        """Run the background task; on exit, take no new patches and finish the queued ones."""
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="reported-batcher")
        try:
            yield self
        finally:
            self._closing = True
            self._wake.set()
            try:
                await self._task
            finally:
                self._task = None
                # Only left over when the task was cancelled: no caller is left waiting forever.
                stopped = ServiceUnavailableError("the hub is shutting down")
                self._fail(self._in_flight + self._queue, stopped)
                self._in_flight = []
                self._queue = []

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                if self._linger > 0 and len(self._queue) < self._max_batch and not self._closing:
                    await asyncio.sleep(self._linger)
                continue
            batch = self._in_flight = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                await self._apply(batch)
            except Exception as exc:  # a bug must not strand the callers or stop the batcher
                log.exception("reported batch of %d patches failed", len(batch))
                self._fail(batch, exc)
            self._in_flight = []

    async def _apply(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]  # callers gone are skipped
        if not live:
            return
        try:
            found = await self._store.get_twins([pending.device_id for pending in live])
        except ServiceUnavailableError as exc:
            self._fail(live, exc)
            return
        now = self._clock.now()
        devices: dict[str, _DeviceBatch] = {}
        for pending in live:
            device = devices.get(pending.device_id)
            if device is None:
                twin = found.get(pending.device_id)
                if twin is None:
                    missing = DeviceNotFoundError(
                        f"Device {pending.device_id!r} is not registered", device_id=pending.device_id
                    )
                    pending.future.set_exception(missing)
                    continue
                device = devices[pending.device_id] = _DeviceBatch(base=twin, twin=twin)
            try:
                device.twin = apply_reported_patch(device.twin, pending.patch, now)
            except HubError as exc:  # this patch only: the device's other patches still apply
                pending.future.set_exception(exc)
                continue
            device.applied.append((pending, device.twin.reported.version))
        changed = {device_id: device for device_id, device in devices.items() if device.applied}
        if not changed:
            return
        try:
            conflicts = await self._store.save_twins(
                [(device.twin, device.base.revision) for device in changed.values()]
            )
        except ServiceUnavailableError as exc:
            self._fail([pending for device in changed.values() for pending, _ in device.applied], exc)
            return
        except HubError:
            # Most likely one twin holds a value the database refuses; find it by writing alone.
            await self._write_singly(changed)
            return
        self.batches += 1
        retry: list[_Pending] = []
        for device_id, device in changed.items():
            if device_id in conflicts:
                retry.extend(pending for pending, _ in device.applied)
                continue
            for pending, version in device.applied:
                if not pending.future.done():
                    pending.future.set_result(version)
        self._requeue(retry)

    def _requeue(self, lost: list[_Pending]) -> None:
        """Patches whose twin changed meanwhile go to the front of the queue, in their order,
        so they stay ahead of later patches from the same device."""
        again: list[_Pending] = []
        for pending in lost:
            pending.attempts += 1
            if pending.attempts >= MAX_BATCH_ATTEMPTS:
                pending.future.set_exception(
                    ConcurrencyConflictError(
                        f"twin {pending.device_id!r} is changing too fast; try again", device_id=pending.device_id
                    )
                )
            else:
                again.append(pending)
        if again:
            self._queue[:0] = again
            self._wake.set()

    async def _write_singly(self, devices: dict[str, _DeviceBatch]) -> None:
        async def one_device(applied: list[tuple[_Pending, int]]) -> None:
            for pending, _ in applied:  # in arrival order
                if pending.future.done():
                    continue
                try:
                    version = await self._single_write(pending.device_id, pending.patch)
                except Exception as exc:
                    pending.future.set_exception(exc)
                else:
                    pending.future.set_result(version)

        await asyncio.gather(*(one_device(device.applied) for device in devices.values()))

    @staticmethod
    def _fail(pendings: list[_Pending], exc: BaseException) -> None:
        for pending in pendings:
            if not pending.future.done():
                pending.future.set_exception(exc)
