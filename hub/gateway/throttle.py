"""How often one device id may connect: a token bucket per device id.

IoT Hub throttles connects. Two clients that share a device id (a copied connection string,
a device restarted beside its old process) take the connection from each other as fast as
they can reconnect, hundreds of times a second; each takeover costs a login, a teardown
and two presence changes. Past ``burst`` connects, a device id gets one more every
``60 / per_minute`` seconds; a login beyond that is refused with CONNACK 3 (server
unavailable), which the SDKs retry after their back-off, and it never touches the live
connection. Only logins that passed authentication count, so nobody without the device's
credentials can use up its connects.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ConnectThrottle"]


class ConnectThrottle:
    """``allow(device_id)`` spends a token when there is one. Memory holds only device ids
    that connected recently: a bucket that has refilled is dropped when next swept."""

    def __init__(self, *, burst: int, per_minute: float, clock: Callable[[], float]) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError(f"burst must be at least 1 and per_minute positive, not {burst} and {per_minute}")
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # device id -> (tokens, at)
        self._sweep_at = 1024

    def allow(self, device_id: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.get(device_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[device_id] = (tokens, now)
            return False
        self._buckets[device_id] = (tokens - 1.0, now)
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)
        return True

    def _sweep(self, now: float) -> None:
        self._buckets = {
            device_id: (tokens, at)
            for device_id, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate < self._burst
        }
        self._sweep_at = max(1024, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)
