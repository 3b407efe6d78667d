"""Settings shared by many simulated devices, the hooks they call, and their per-device counters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from device_sim.behaviours import MethodReply
from hub.domain.clock import Clock, SystemClock
from hub.domain.json import JsonObject, JsonValue

__all__ = ["API_VERSION", "DEFAULT_STARTUP_PROPERTIES", "DeviceHooks", "DeviceOptions", "DeviceStats"]

API_VERSION = "2021-04-12"
DEFAULT_STARTUP_PROPERTIES: Mapping[str, JsonValue] = MappingProxyType({"firmware": "1.0.0", "connectivity": "wifi"})


@dataclass(frozen=True, slots=True)
class DeviceOptions:
    """How a device connects and behaves; one instance is shared by a whole fleet.

    ``startup_properties`` are reported on every (re)connect, with ``startedAt`` added when
    ``report_started_at``; ``acknowledge_desired`` mirrors each desired change into reported
    properties together with ``lastDesiredVersion``.
    """

    keepalive: int = 60
    qos: int = 1
    request_timeout: float = 10.0
    connect_timeout: float = 10.0
    token_ttl: int = 3600
    api_version: str = API_VERSION
    # A factory only because dataclasses refuse unhashable defaults; the read-only view is shared.
    startup_properties: Mapping[str, JsonValue] = field(default_factory=lambda: DEFAULT_STARTUP_PROPERTIES)
    report_started_at: bool = True
    acknowledge_desired: bool = True
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError("qos must be 0 or 1 (IoT Hub closes connections that use QoS 2)")
        if self.keepalive < 1 or self.request_timeout <= 0 or self.backoff_initial <= 0:
            raise ValueError("keepalive, request_timeout and backoff_initial must be positive")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")


@dataclass(frozen=True, slots=True)
class DeviceHooks:
    """Callbacks for tests and demos; each gets the device id first so one instance serves a fleet.

    They run on the event loop inside the device's message handling: keep them quick; an
    exception is logged and does not affect the device.
    """

    on_method: Callable[[str, str, JsonValue, MethodReply], None] | None = None
    on_desired: Callable[[str, JsonObject, int | None], None] | None = None
    on_connection: Callable[[str, bool], None] | None = None


@dataclass(slots=True)
class DeviceStats:
    """Counters one device keeps; a fleet sums them."""

    connects: int = 0
    disconnects: int = 0
    methods_handled: int = 0
    methods_failed: int = 0
    desired_applied: int = 0
    reported_patches: int = 0
    bad_messages: int = 0

    def add(self, other: DeviceStats) -> None:
        self.connects += other.connects
        self.disconnects += other.disconnects
        self.methods_handled += other.methods_handled
        self.methods_failed += other.methods_failed
        self.desired_applied += other.desired_applied
        self.reported_patches += other.reported_patches
        self.bad_messages += other.bad_messages
