"""Twins and direct methods: ``/twins/{id}`` and ``/twins/{id}/methods``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response

from hub.api.deps import ServiceConnect, ServicesDep, TwinReader, TwinWriter
from hub.api.schemas import ERROR_RESPONSES, TWIN_BODY_DOC, ErrorOut, MethodInvocationIn, MethodResultOut, TwinOut
from hub.domain.methods import MethodRequest
from hub.domain.twin import Twin, twin_document

router = APIRouter(tags=["twins"], responses=ERROR_RESPONSES)

IfMatch = Annotated[str | None, Header()]


def _twin_response(twin: Twin, response: Response) -> dict[str, Any]:
    response.headers["ETag"] = f'"{twin.etag}"'
    return twin_document(twin)


@router.get("/twins/{device_id}", response_model=None, responses={200: {"model": TwinOut}})
async def get_twin(device_id: str, services: ServicesDep, _: TwinReader, response: Response) -> dict[str, Any]:
    return _twin_response(await services.twins.get_twin(device_id), response)


@router.patch(
    "/twins/{device_id}", response_model=None, openapi_extra=TWIN_BODY_DOC, responses={200: {"model": TwinOut}}
)
async def patch_twin(
    device_id: str,
    body: Annotated[dict[str, Any], Body()],
    services: ServicesDep,
    _: TwinWriter,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """JSON merge patch of ``tags`` and ``properties.desired``; ``If-Match`` pins the etag."""
    return _twin_response(await services.twins.patch_twin(device_id, body, if_match), response)


@router.put("/twins/{device_id}", response_model=None, openapi_extra=TWIN_BODY_DOC, responses={200: {"model": TwinOut}})
async def replace_twin(
    device_id: str,
    body: Annotated[dict[str, Any], Body()],
    services: ServicesDep,
    _: TwinWriter,
    response: Response,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Replace ``tags`` and ``properties.desired`` wholesale."""
    return _twin_response(await services.twins.replace_twin(device_id, body, if_match), response)


@router.post(
    "/twins/{device_id}/methods",
    response_model=None,
    responses={
        200: {"model": MethodResultOut},
        502: {"model": ErrorOut, "description": "InvalidDeviceReply"},
        504: {"model": ErrorOut, "description": "GatewayTimeout: the device did not answer in time"},
    },
)
async def invoke_method(
    device_id: str, body: MethodInvocationIn, services: ServicesDep, _: ServiceConnect
) -> dict[str, Any]:
    """Invoke a direct method and wait for the device's answer."""
    request = MethodRequest.create(body.methodName, body.payload, body.response_timeout, body.connectTimeoutInSeconds)
    result = await services.router.invoke_method(device_id, request)
    return {"status": result.status, "payload": result.payload}


__all__ = ["router"]
