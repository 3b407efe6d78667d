"""What simulated devices answer to direct methods: handlers, latency, failure injection.

One ``Behaviours`` object is shared by every device of a fleet, so per-device cost stays
flat; its seeded ``random.Random`` makes latency and failure draws reproducible.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from hub.domain.json import JsonValue

__all__ = [
    "DEFAULT_PROFILE",
    "Behaviours",
    "DeviceContext",
    "MethodCall",
    "MethodHandler",
    "MethodProfile",
    "MethodReply",
    "Reboot",
    "lock_door",
    "parse_profiles",
]

logger = logging.getLogger(__name__)


class DeviceContext(Protocol):
    """What a method handler may see of, and ask from, the device it runs on."""

    @property
    def device_id(self) -> str: ...

    def request_reconnect(self, delay: float) -> None:
        """Drop the connection after the current reply is sent and reconnect ``delay`` seconds later."""
        ...


@dataclass(frozen=True, slots=True)
class MethodReply:
    """The status and JSON payload a device sends back on ``$iothub/methods/res/{status}/``."""

    status: int
    payload: JsonValue = None


@dataclass(frozen=True, slots=True)
class MethodCall:
    device: DeviceContext
    method_name: str
    payload: JsonValue


MethodHandler = Callable[[MethodCall], Awaitable[MethodReply]]


@dataclass(frozen=True, slots=True)
class MethodProfile:
    """How one method behaves: ``latency`` in seconds (a ``(low, high)`` pair draws uniformly) and
    ``failure_rate``, the chance (0..1) that a call answers 500 instead of running its handler."""

    latency: float | tuple[float, float] = 0.0
    failure_rate: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.latency if isinstance(self.latency, tuple) else (self.latency, self.latency)
        if low < 0 or high < low:
            raise ValueError(f"latency must be >= 0 (and low <= high), got {self.latency!r}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within 0..1, got {self.failure_rate!r}")

    def draw_latency(self, rng: random.Random) -> float:
        if isinstance(self.latency, tuple):
            low, high = self.latency
            return rng.uniform(low, high) if high > low else low
        return self.latency

    def draw_failure(self, rng: random.Random) -> bool:
        # No draw at rate 0 keeps the random sequence of other methods unchanged.
        return self.failure_rate > 0.0 and rng.random() < self.failure_rate


DEFAULT_PROFILE = MethodProfile()


async def lock_door(call: MethodCall) -> MethodReply:
    return MethodReply(200, {"locked": True})


@dataclass(frozen=True, slots=True)
class Reboot:
    """``reboot``: answers at once; with ``reconnect_after`` the device then drops its connection and
    comes back that many seconds later, as a rebooting device would."""

    reconnect_after: float | None = None

    async def __call__(self, call: MethodCall) -> MethodReply:
        if self.reconnect_after is not None:
            call.device.request_reconnect(self.reconnect_after)
        return MethodReply(200, {"rebooting": True})


class Behaviours:
    """The method table and per-method profiles shared by the devices that use it."""

    __slots__ = ("_default", "_handlers", "_profiles", "_rng", "_sleep")

    def __init__(
        self,
        *,
        handlers: Mapping[str, MethodHandler] | None = None,
        profiles: Mapping[str, MethodProfile] | None = None,
        default_profile: MethodProfile = DEFAULT_PROFILE,
        seed: int | None = None,
        reboot_reconnect_after: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._handlers: dict[str, MethodHandler] = {"lockDoor": lock_door, "reboot": Reboot(reboot_reconnect_after)}
        if handlers:
            self._handlers.update(handlers)
        self._profiles = dict(profiles or {})
        self._default = default_profile
        self._rng = random.Random(seed)
        self._sleep = sleep

    @property
    def method_names(self) -> list[str]:
        return sorted(self._handlers)

    def register(self, method_name: str, handler: MethodHandler) -> None:
        self._handlers[method_name] = handler

    def profile(self, method_name: str) -> MethodProfile:
        return self._profiles.get(method_name, self._default)

    async def handle(self, call: MethodCall) -> MethodReply:
        """Answer one call: wait its latency, then 404 for unknown methods, 500 for an injected or
        real failure, else the handler's reply. Never raises for a handler's bug."""
        profile = self.profile(call.method_name)
        delay = profile.draw_latency(self._rng)
        if delay > 0:
            await self._sleep(delay)
        handler = self._handlers.get(call.method_name)
        if handler is None:
            return MethodReply(404, {"message": f"method {call.method_name} not implemented"})
        if profile.draw_failure(self._rng):
            return MethodReply(500, {"error": f"simulated failure of {call.method_name}"})
        try:
            return await handler(call)
        except Exception as exc:
            logger.exception("method handler %s failed on %s", call.method_name, call.device.device_id)
            return MethodReply(500, {"error": f"{call.method_name} failed: {type(exc).__name__}: {exc}"})


def _split_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ValueError(f"expected METHOD=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _parse_latency(text: str) -> float | tuple[float, float]:
    low, sep, high = text.partition(":")
    if sep:
        return (float(low), float(high))
    return float(text)


def parse_profiles(
    latencies: Iterable[str] = (), failure_rates: Iterable[str] = ()
) -> tuple[dict[str, MethodProfile], MethodProfile]:
    """Parse CLI settings (``lockDoor=0.05``, ``lockDoor=0.01:0.2``, ``reboot=0.1``; ``*`` is every
    other method) into per-method profiles and the default profile. Raises ``ValueError``."""
    latency: dict[str, float | tuple[float, float]] = {}
    failure: dict[str, float] = {}
    for text in latencies:
        name, value = _split_setting(text)
        latency[name] = _parse_latency(value)
    for text in failure_rates:
        name, value = _split_setting(text)
        failure[name] = float(value)
    default = MethodProfile(latency.get("*", 0.0), failure.get("*", 0.0))
    profiles = {
        name: MethodProfile(latency.get(name, default.latency), failure.get(name, default.failure_rate))
        for name in (latency.keys() | failure.keys()) - {"*"}
    }
    return profiles, default
