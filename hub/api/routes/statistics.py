"""Registry and service statistics: ``/statistics/devices`` and ``/statistics/service``."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.deps import RegistryReader, ServicesDep, TwinReader
from hub.api.schemas import ERROR_RESPONSES, RegistryStatisticsOut, ServiceStatisticsOut
from hub.domain.devices import DeviceStatus

router = APIRouter(tags=["statistics"], responses=ERROR_RESPONSES)


@router.get("/statistics/devices", response_model=RegistryStatisticsOut)
async def registry_statistics(services: ServicesDep, _: RegistryReader) -> RegistryStatisticsOut:
    """How many devices the registry holds, enabled and disabled."""
    counts = await services.registry.count_devices_by_status()
    return RegistryStatisticsOut(
        totalDeviceCount=sum(counts.values()),
        enabledDeviceCount=counts[DeviceStatus.ENABLED],
        disabledDeviceCount=counts[DeviceStatus.DISABLED],
    )


@router.get("/statistics/service", response_model=ServiceStatisticsOut)
async def service_statistics(services: ServicesDep, _: TwinReader) -> ServiceStatisticsOut:
    """How many devices are connected to this hub now."""
    return ServiceStatisticsOut(connectedDeviceCount=services.presence.connected_count)


__all__ = ["router"]
