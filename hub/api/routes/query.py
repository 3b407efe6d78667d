"""Twin and device-job queries: ``POST /devices/query``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header
from fastapi.responses import JSONResponse

from hub.api.deps import ServicesDep, TwinReader
from hub.api.schemas import ERROR_RESPONSES, QUERY_BODY_DOC, paged_response
from hub.engine.query import page_size_of
from hub.errors import BadRequestError

router = APIRouter(tags=["query"], responses=ERROR_RESPONSES)


@router.post(
    "/devices/query",
    response_model=None,
    openapi_extra=QUERY_BODY_DOC,
    responses={200: {"model": list[dict[str, Any]], "description": "Twins, device jobs or raw rows (x-ms-item-type)"}},
)
async def query_devices(
    body: Annotated[dict[str, Any], Body()],
    services: ServicesDep,
    _: TwinReader,
    x_ms_max_item_count: Annotated[str | None, Header()] = None,
    x_ms_continuation: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Run IoT Hub's query language over twins (``FROM devices``) or job results
    (``FROM devices.jobs``); pages by ``x-ms-max-item-count`` and ``x-ms-continuation``."""
    if "query" not in body:
        raise BadRequestError('body must be {"query": "SELECT ..."}')
    unknown = sorted(set(body) - {"query"})
    if unknown:
        raise BadRequestError(f'unknown field {unknown[0]!r}: the body is {{"query": "SELECT ..."}}')
    page = await services.query.run(
        body["query"], page_size=page_size_of(x_ms_max_item_count), continuation=x_ms_continuation
    )
    return paged_response(page.items, page.continuation, page.item_type.value)


__all__ = ["router"]
