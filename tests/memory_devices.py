"""Devices in memory behind hub.ports.DeviceRouter: what a job run or a service reaches when
a test needs devices but no gateway, no broker and no sockets.

Each device answers method calls as the test scripts it (``answers``); a call is logged with
the clock's time, so pacing and back-off are checked on a virtual clock. Connecting and
dropping publish the events the gateway's handler would (DeviceConnected, DeviceDisconnected).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from hub.domain.clock import Clock
from hub.domain.events import DeviceConnected, DeviceDisconnected
from hub.domain.json import JsonObject, JsonValue
from hub.domain.methods import MethodRequest, MethodResult
from hub.errors import DeviceNotFoundError, DeviceNotOnlineError, GatewayTimeoutError, ThrottledError
from hub.ports import EventBroker

__all__ = ["Answer", "Call", "MemoryDeviceRouter", "answer", "by_attempt", "dropping", "silent", "throttled"]


@dataclass(frozen=True, slots=True)
class Call:
    at: float
    """The clock's monotonic time when the call reached the device."""
    device_id: str
    method_name: str
    attempt: int
    """1 for a device's first call, 2 for its second, ..."""


Answer = Callable[["MemoryDeviceRouter", str, MethodRequest, int], Awaitable[MethodResult]]
"""How a device answers: (router, device id, request, attempt) -> result, or raises what a
real call would (DeviceNotOnlineError, GatewayTimeoutError, ThrottledError, ...)."""


def answer(status: int = 200, payload: JsonValue = None, *, after: float = 0.0) -> Answer:
    """Answer with ``status`` and ``payload``, ``after`` seconds on the clock."""

    async def respond(router: MemoryDeviceRouter, device_id: str, request: MethodRequest, attempt: int) -> MethodResult:
        if after:
            await router.clock.sleep(after)
        return MethodResult(status, payload)

    return respond


def silent() -> Answer:
    """Never answer: the call times out after its response timeout."""

    async def respond(router: MemoryDeviceRouter, device_id: str, request: MethodRequest, attempt: int) -> MethodResult:
        await router.clock.sleep(request.response_timeout)
        raise GatewayTimeoutError(f"device {device_id!r} did not answer", device_id=device_id)

    return respond


def dropping() -> Answer:
    """The device's connection drops before it answers."""

    async def respond(router: MemoryDeviceRouter, device_id: str, request: MethodRequest, attempt: int) -> MethodResult:
        await router.drop(device_id)
        raise DeviceNotOnlineError(f"device {device_id!r} disconnected before answering", device_id=device_id)

    return respond


def throttled() -> Answer:
    """The device already has its fill of calls in flight."""

    async def respond(router: MemoryDeviceRouter, device_id: str, request: MethodRequest, attempt: int) -> MethodResult:
        raise ThrottledError(f"device {device_id!r} is busy", device_id=device_id)

    return respond


def by_attempt(*answers: Answer) -> Answer:
    """The n-th call gets the n-th answer; later calls get the last one."""

    async def respond(router: MemoryDeviceRouter, device_id: str, request: MethodRequest, attempt: int) -> MethodResult:
        return await answers[min(attempt, len(answers)) - 1](router, device_id, request, attempt)

    return respond


class MemoryDeviceRouter:
    """hub.ports.DeviceRouter over ``devices`` (registered ids; calls to others fail with
    DeviceNotFoundError), of which ``connected`` are online."""

    def __init__(self, clock: Clock, events: EventBroker | None = None, *, devices: Iterable[str] = ()) -> None:
        self.clock = clock
        self._events = events
        self.devices: set[str] = set(devices)
        self.connected: set[str] = set()
        self.answers: dict[str, Answer] = {}
        self.default_answer: Answer = answer(200)
        self.calls: list[Call] = []
        self.pushes: list[tuple[str, JsonObject, int]] = []
        self.disconnects: list[str] = []
        self.in_flight = 0
        self._attempts: Counter[str] = Counter()

    async def connect(self, *device_ids: str) -> None:
        for device_id in device_ids:
            self.devices.add(device_id)
            self.connected.add(device_id)
            if self._events is not None:
                await self._events.publish(DeviceConnected(device_id))

    async def drop(self, device_id: str) -> None:
        if device_id in self.connected:
            self.connected.discard(device_id)
            if self._events is not None:
                await self._events.publish(DeviceDisconnected(device_id))

    def calls_to(self, device_id: str) -> list[Call]:
        return [call for call in self.calls if call.device_id == device_id]

    # -- hub.ports.DeviceRouter ----------------------------------------------------------

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.connected

    async def invoke_method(self, device_id: str, request: MethodRequest) -> MethodResult:
        if device_id not in self.devices:
            raise DeviceNotFoundError(f"device {device_id!r} does not exist", device_id=device_id)
        if device_id not in self.connected:
            raise DeviceNotOnlineError(f"device {device_id!r} is not online", device_id=device_id)
        self._attempts[device_id] += 1
        attempt = self._attempts[device_id]
        self.calls.append(Call(self.clock.monotonic(), device_id, request.method_name, attempt))
        self.in_flight += 1
        try:
            return await self.answers.get(device_id, self.default_answer)(self, device_id, request, attempt)
        finally:
            self.in_flight -= 1

    async def push_desired(self, device_id: str, patch: JsonObject, version: int) -> None:
        if device_id in self.connected:
            self.pushes.append((device_id, patch, version))

    async def disconnect(self, device_id: str) -> None:
        self.disconnects.append(device_id)
        await self.drop(device_id)
