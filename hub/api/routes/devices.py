"""Device identities: ``/devices``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import JSONResponse

from hub.api.deps import RegistryReader, RegistryWriter, ServicesDep
from hub.api.errors import status_of
from hub.api.schemas import (
    ERROR_RESPONSES,
    BulkDeviceIn,
    BulkResultOut,
    DeviceIn,
    DeviceOut,
    ErrorOut,
    device_out,
    spec_from,
)
from hub.engine.sessions.registry import MAX_BULK, ImportMode, ImportOperation
from hub.errors import BadRequestError

router = APIRouter(tags=["devices"], responses=ERROR_RESPONSES)

# IoT Hub matches import modes in any case: azure-iothub sends "Update", "DeleteIfMatchETag", ...
_IMPORT_MODES = {mode.value.lower(): mode for mode in ImportMode}


@router.put("/devices/{device_id}", response_model=None, responses={200: {"model": DeviceOut}})
async def put_device(
    device_id: str,
    body: DeviceIn,
    services: ServicesDep,
    _: RegistryWriter,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Create a device (keys generated when absent), or update it when ``If-Match`` is given."""
    if body.deviceId is not None and body.deviceId != device_id:
        raise BadRequestError(f"deviceId {body.deviceId!r} in the body differs from {device_id!r} in the URL")
    device = await services.registry.put_device(device_id, spec_from(body), if_match)
    return device_out(device)


@router.get("/devices/{device_id}", response_model=None, responses={200: {"model": DeviceOut}})
async def get_device(device_id: str, services: ServicesDep, _: RegistryReader) -> dict[str, Any]:
    return device_out(await services.registry.get_device(device_id))


@router.delete("/devices/{device_id}", status_code=204)
async def delete_device(
    device_id: str, services: ServicesDep, _: RegistryWriter, if_match: Annotated[str | None, Header()] = None
) -> Response:
    await services.registry.delete_device(device_id, if_match)
    return Response(status_code=204)


@router.get("/devices", response_model=None, responses={200: {"model": list[DeviceOut]}})
async def list_devices(
    services: ServicesDep, _: RegistryReader, top: Annotated[int, Query(ge=1, le=1000)] = 1000
) -> list[dict[str, Any]]:
    return [device_out(d) for d in await services.registry.list_devices(top)]


@router.post(
    "/devices",
    response_model=None,
    responses={
        200: {"model": BulkResultOut},
        400: {"model": BulkResultOut | ErrorOut, "description": "Some devices failed (BulkResult), or bad input"},
    },
)
async def bulk_devices(
    services: ServicesDep,
    _: RegistryWriter,
    body: Annotated[list[BulkDeviceIn], Body()],
) -> JSONResponse:
    """Bulk import: ``importMode`` create, update, updateIfMatchETag, createOrUpdate, delete,
    deleteIfMatchETag (in any letter case); at most 1000 devices a call."""
    items = body
    if len(items) > MAX_BULK:
        raise BadRequestError(f"a bulk request may hold at most {MAX_BULK} devices, got {len(items)}")
    operations: list[ImportOperation] = []
    for item in items:
        mode = _IMPORT_MODES.get(item.importMode.lower())
        if mode is None:
            raise BadRequestError(
                f"importMode {item.importMode!r} for {item.id!r} is not one of {', '.join(m.value for m in ImportMode)}"
            )
        if item.moduleId is not None:
            raise BadRequestError(f"{item.id!r}: modules are not supported (moduleId {item.moduleId!r})")
        if item.tags or item.properties:
            raise BadRequestError(
                f"{item.id!r}: a bulk import does not set twins here; send tags and desired properties "
                "with PATCH /twins/{id} after the import"
            )
        operations.append(ImportOperation(item.id, mode, spec_from(item), item.eTag or item.etag))
    outcome = await services.registry.import_devices(operations)
    errors = [
        {"deviceId": device_id, "errorCode": err.code, "errorStatus": err.message, "status": status_of(err)}
        for device_id, err in outcome.errors
    ]
    return JSONResponse(
        status_code=200 if outcome.is_successful else 400,
        content={"isSuccessful": outcome.is_successful, "errors": errors, "warnings": []},
    )


__all__ = ["router"]
