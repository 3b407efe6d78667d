"""Many simulated devices in one process: provisioning over the REST API, batched connects.

Per-device cost is one ``SimulatedDevice`` (its aiomqtt client and a reader task); options,
behaviours, hooks and the TLS context are shared by the whole fleet (X.509 devices have a
TLS context each: it holds the device's certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from device_sim.behaviours import Behaviours
from device_sim.connection import DeviceIdentity, MqttEndpoint, X509Credential
from device_sim.device import SimulatedDevice
from device_sim.errors import ProvisioningError
from device_sim.options import DeviceHooks, DeviceOptions, DeviceStats
from device_sim.x509 import DeviceCertificateAuthority
from job_client.errors import DeviceAlreadyExistsError
from job_client.models import BulkResult, DeviceSpec
from job_client.registry import AsyncRegistryClient

__all__ = ["Fleet", "FleetOptions", "FleetStats", "fleet_device_ids", "provision_devices", "provision_x509_devices"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
_CHURN_INTERVAL = 1.0


def fleet_device_ids(prefix: str, count: int, *, start: int = 0, width: int = 4) -> list[str]:
    """``sim-0000``, ``sim-0001``, ...: zero-padded so the ids sort in creation order."""
    if count < 0 or start < 0:
        raise ValueError("count and start must not be negative")
    return [f"{prefix}{index:0{width}d}" for index in range(start, start + count)]


def _raise_refusals(result: BulkResult) -> None:
    """ProvisioningError for the devices a bulk create refused (existing ones are fine)."""
    failures = {
        error.device_id: error.error_code
        for error in result.errors
        if error.error_code != DeviceAlreadyExistsError.default_code
    }
    if failures:
        raise ProvisioningError(failures)


async def provision_devices(
    registry: AsyncRegistryClient, device_ids: Sequence[str], *, concurrency: int = 16
) -> dict[str, str]:
    """Make sure every device exists and return each one's primary key.

    Creates them in bulk (devices that already exist are fine), then reads the keys the hub
    generated: one listing usually returns them all, and any it missed are fetched one by one.
    Raises ``ProvisioningError`` for devices the hub would not create.
    """
    wanted = list(dict.fromkeys(device_ids))
    if not wanted:
        return {}
    _raise_refusals(await registry.bulk_create_devices(wanted))
    wanted_set = set(wanted)
    keys = {
        device.device_id: device.primary_key
        for device in await registry.list_devices(max_count=1000)
        if device.device_id in wanted_set and device.primary_key
    }
    missing = [device_id for device_id in wanted if device_id not in keys]
    if missing:
        logger.info("fetching keys of %d device(s) one by one", len(missing))
        gate = asyncio.Semaphore(concurrency)

        async def fetch(device_id: str) -> None:
            async with gate:
                device = await registry.get_device(device_id)
            if device.primary_key:
                keys[device_id] = device.primary_key

        async with asyncio.TaskGroup() as tg:
            for device_id in missing:
                tg.create_task(fetch(device_id))
    keyless = {device_id: "NoSymmetricKey" for device_id in wanted if device_id not in keys}
    if keyless:
        raise ProvisioningError(keyless)
    return {device_id: keys[device_id] for device_id in wanted}


async def provision_x509_devices(
    registry: AsyncRegistryClient, device_ids: Sequence[str], authority: DeviceCertificateAuthority
) -> dict[str, X509Credential]:
    """Make sure every device exists as a certificateAuthority device and the hub trusts
    ``authority``; return each device's certificate, issued by it."""
    wanted = list(dict.fromkeys(device_ids))
    await authority.register(registry)
    result = await registry.bulk_create_devices(DeviceSpec(d, authentication="certificateAuthority") for d in wanted)
    _raise_refusals(result)
    existing = {error.device_id for error in result.errors}
    if existing:
        wrong = {
            device.device_id: "NotCertificateAuthority"
            for device in await registry.list_devices(max_count=1000)
            if device.device_id in existing and device.authentication != "certificateAuthority"
        }
        if wrong:
            raise ProvisioningError(wrong)
    return {device_id: authority.issue(device_id) for device_id in wanted}


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How a fleet connects: ``batch_size`` devices at a time, waiting up to ``batch_timeout`` for
    each batch and ``batch_pause`` between batches, so the broker's accept backlog is not overrun.

    ``churn`` is the share of the fleet (0..1) that drops its connection every second once the
    fleet has started, each dropped device reconnecting at once (picked among the connected
    devices with ``churn_seed``): a flaky network for tests of jobs under reconnects."""

    batch_size: int = 200
    batch_pause: float = 0.2
    batch_timeout: float = 10.0
    churn: float = 0.0
    churn_seed: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_pause < 0 or self.batch_timeout < 0:
            raise ValueError("batch_size must be positive, batch_pause and batch_timeout not negative")
        if not 0.0 <= self.churn <= 1.0:
            raise ValueError("churn must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class FleetStats:
    devices: int
    connected: int
    totals: DeviceStats = field(default_factory=DeviceStats)

    def line(self) -> str:
        t = self.totals
        return (
            f"connected {self.connected}/{self.devices} | methods {t.methods_handled} "
            f"(failed {t.methods_failed}) | desired {t.desired_applied} | reported {t.reported_patches} "
            f"| connects {t.connects} | drops {t.disconnects}"
        )


class Fleet:
    """N ``SimulatedDevice``s sharing behaviours and options; an async context manager."""

    def __init__(
        self,
        identities: Iterable[DeviceIdentity],
        endpoint: MqttEndpoint,
        *,
        behaviours: Behaviours | None = None,
        options: DeviceOptions | None = None,
        hooks: DeviceHooks | None = None,
        fleet_options: FleetOptions | None = None,
    ) -> None:
        shared_behaviours = behaviours or Behaviours()
        shared_options = options or DeviceOptions()
        shared_hooks = hooks or DeviceHooks()
        self._devices = [
            SimulatedDevice(
                identity, endpoint, behaviours=shared_behaviours, options=shared_options, hooks=shared_hooks
            )
            for identity in identities
        ]
        self._by_id = {device.device_id: device for device in self._devices}
        self._fleet_options = fleet_options or FleetOptions()
        self._churn_task: asyncio.Task[None] | None = None
        self.churned = 0
        """Connections dropped by churn so far."""

    @classmethod
    async def provision(
        cls,
        registry: AsyncRegistryClient,
        endpoint: MqttEndpoint,
        *,
        count: int,
        prefix: str = "sim-",
        start: int = 0,
        width: int = 4,
        behaviours: Behaviours | None = None,
        options: DeviceOptions | None = None,
        hooks: DeviceHooks | None = None,
        fleet_options: FleetOptions | None = None,
        x509: DeviceCertificateAuthority | None = None,
    ) -> Fleet:
        """Create (or reuse) ``{prefix}{i:0{width}d}`` devices through the REST API and build the
        fleet; with ``x509`` they are X.509 devices whose certificates that CA issues."""
        device_ids = fleet_device_ids(prefix, count, start=start, width=width)
        if x509 is not None:
            credentials = await provision_x509_devices(registry, device_ids, x509)
            identities = [
                DeviceIdentity(registry.hostname, device_id, certificate=credentials[device_id])
                for device_id in device_ids
            ]
        else:
            keys = await provision_devices(registry, device_ids)
            identities = [DeviceIdentity(registry.hostname, device_id, keys[device_id]) for device_id in device_ids]
        return cls(
            identities, endpoint, behaviours=behaviours, options=options, hooks=hooks, fleet_options=fleet_options
        )

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[SimulatedDevice]:
        return iter(self._devices)

    def __getitem__(self, device_id: str) -> SimulatedDevice:
        return self._by_id[device_id]

    @property
    def connected_count(self) -> int:
        return sum(1 for device in self._devices if device.connected.is_set())

    def stats(self) -> FleetStats:
        totals = DeviceStats()
        for device in self._devices:
            totals.add(device.stats)
        return FleetStats(len(self._devices), self.connected_count, totals)

    async def start(self) -> None:
        """Start every device, one batch at a time; a slow batch is logged, not fatal (its devices
        keep retrying in the background)."""
        opts = self._fleet_options
        for first in range(0, len(self._devices), opts.batch_size):
            batch = self._devices[first : first + opts.batch_size]
            for device in batch:
                device.start()
            if not await self._wait_for(batch, opts.batch_timeout):
                waiting = sum(1 for device in batch if not device.connected.is_set())
                logger.warning(
                    "%d of %d devices in batch %d still connecting; going on",
                    waiting,
                    len(batch),
                    first // opts.batch_size + 1,
                )
            if first + opts.batch_size < len(self._devices) and opts.batch_pause:
                await asyncio.sleep(opts.batch_pause)
        if opts.churn > 0 and self._churn_task is None:
            self._churn_task = asyncio.create_task(self._churn(opts.churn, opts.churn_seed), name="fleet-churn")

    async def _churn(self, share: float, seed: int | None) -> None:
        rng = random.Random(seed)
        per_round = max(1, round(share * len(self._devices)))
        while True:
            await asyncio.sleep(_CHURN_INTERVAL)
            connected = [device for device in self._devices if device.connected.is_set()]
            for device in rng.sample(connected, min(per_round, len(connected))):
                if device.drop():
                    self.churned += 1

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until every device is connected; ``False`` if ``timeout`` ran out first."""
        return await self._wait_for(self._devices, timeout)

    @staticmethod
    async def _wait_for(devices: Sequence[SimulatedDevice], timeout: float | None) -> bool:
        # One fleet-level poll instead of a waiter task per device.
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not all(device.connected.is_set() for device in devices):
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True

    async def stop(self) -> None:
        """Stop the churn, disconnect every device (concurrently) and stop reconnecting."""
        task, self._churn_task = self._churn_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(device.stop() for device in self._devices))

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
