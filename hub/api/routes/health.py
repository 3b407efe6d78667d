"""Liveness and readiness (``/healthz``, no auth) and Prometheus metrics (``/metrics``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.api.deps import ServicesDep
from hub.api.schemas import HealthOut
from hub.errors import ServiceUnavailableError

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=None,
    responses={
        200: {"model": HealthOut},
        503: {"model": HealthOut, "description": "Starting, or the database is unavailable"},
    },
)
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 once the hub accepts devices and requests and its database answers; 503 otherwise."""
    body: dict[str, Any] = {"status": "ok", "connectedDevices": services.presence.connected_count}
    if not services.ready:
        return JSONResponse(status_code=503, content={"status": "starting"})
    try:
        await services.store.ping()
    except ServiceUnavailableError as exc:
        return JSONResponse(status_code=503, content={"status": "database unavailable", "detail": exc.message})
    return JSONResponse(content=body)


@router.get("/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus text format"}})
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


__all__ = ["router"]
