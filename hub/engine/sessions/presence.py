"""Presence: who is connected, kept in memory and written to the store in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime

from hub.domain.clock import Clock
from hub.domain.devices import ConnectionState, Device
from hub.domain.twin import Twin
from hub.errors import ServiceUnavailableError
from hub.ports import PresenceStore, PresenceUpdate

__all__ = ["PresenceService"]

log = logging.getLogger(__name__)

_MAX_RETRY_SECONDS = 5.0


class PresenceService:
    """In this process the gateway is the truth about connections; the store lags by at most
    one flush interval, so reads overlay the in-memory state."""

    def __init__(self, store: PresenceStore, clock: Clock, *, flush_interval: float = 0.2) -> None:
        self._store = store
        self._clock = clock
        self._flush_interval = flush_interval
        self._connected: dict[str, datetime] = {}
        self._last_activity: dict[str, datetime] = {}
        self._pending: dict[str, PresenceUpdate] = {}
        self._pending_states: list[PresenceUpdate] = []
        self._wake = asyncio.Event()

    def is_connected(self, device_id: str) -> bool:
        return device_id in self._connected

    @property
    def connected_count(self) -> int:
        return len(self._connected)

    def connected(self, device_id: str) -> None:
        now = self._clock.now()
        self._connected[device_id] = now
        self._last_activity[device_id] = now
        self._pending_states.append(PresenceUpdate(device_id, ConnectionState.CONNECTED, now))
        self._wake.set()

    def disconnected(self, device_id: str) -> None:
        now = self._clock.now()
        self._connected.pop(device_id, None)
        self._pending_states.append(PresenceUpdate(device_id, ConnectionState.DISCONNECTED, now))
        self._wake.set()

    def touch(self, device_id: str) -> None:
        now = self._clock.now()
        self._last_activity[device_id] = now
        self._pending[device_id] = PresenceUpdate(device_id, None, now)

    def forget(self, device_id: str) -> None:
        self._last_activity.pop(device_id, None)
        self._pending.pop(device_id, None)

    def overlay_twin(self, twin: Twin) -> Twin:
        state = ConnectionState.CONNECTED if twin.device_id in self._connected else ConnectionState.DISCONNECTED
        return replace(
            twin,
            connection_state=state,
            last_activity_time=self._last_activity.get(twin.device_id, twin.last_activity_time),
        )

    def overlay_device(self, device: Device) -> Device:
        since = self._connected.get(device.device_id)
        state = ConnectionState.CONNECTED if since is not None else ConnectionState.DISCONNECTED
        return replace(
            device,
            connection_state=state,
            last_activity_time=self._last_activity.get(device.device_id, device.last_activity_time),
        )

    async def flush(self) -> None:
        """Write what changed since the last flush, state changes first and in order."""
        if not self._pending_states and not self._pending:
            return
        batch = self._pending_states + list(self._pending.values())
        self._pending_states = []
        self._pending = {}
        try:
            await self._store.record_presence(batch)
        except ServiceUnavailableError:
            # Keep the changes for the next flush: presence catches up when the database returns.
            self._pending_states = [u for u in batch if u.connection_state is not None] + self._pending_states
            for update in batch:
                if update.connection_state is None:
                    self._pending.setdefault(update.device_id, update)
            raise

    async def run(self) -> None:
        """Flush in the background until cancelled; a final flush happens in ``running``.
        While the database is unavailable, retries back off (doubling, up to 5 s) and the
        outage is logged once, not at every attempt."""
        delay = self._flush_interval
        while True:
            await self._wake.wait()
            await asyncio.sleep(delay)
            self._wake.clear()
            try:
                await self.flush()
            except ServiceUnavailableError:
                if delay == self._flush_interval:
                    log.warning("presence flush postponed: database unavailable; retrying with back-off")
                delay = min(max(delay * 2, 0.1), _MAX_RETRY_SECONDS)
                self._wake.set()
            else:
                if delay != self._flush_interval:
                    log.info("presence flushed again after the database returned")
                delay = self._flush_interval

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PresenceService]:
        await self._store.reset_presence()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(self._run_with_touches(), name="presence-flush")
            try:
                yield self
            finally:
                task.cancel()
        await self.flush()

    async def _run_with_touches(self) -> None:
        # Last-activity updates don't wake the flusher; they ride along every few seconds.
        async def tick() -> None:
            while True:
                await asyncio.sleep(max(self._flush_interval, 2.0))
                if self._pending:
                    self._wake.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(tick(), name="presence-tick")
            tg.create_task(self.run(), name="presence-run")
