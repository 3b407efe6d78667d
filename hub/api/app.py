"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from hub import __version__
from hub.api import device_websocket
from hub.api.auth import ServiceAuthenticator
from hub.api.errors import install_error_handlers
from hub.api.limits import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, RequestLimits
from hub.api.routes import certificates, devices, health, jobs, query, schedules, statistics, twins
from hub.api.slashes import TrailingSlashes
from hub.engine.services import Services
from hub.ports import DeviceStreams

__all__ = ["create_app"]


def create_app(
    services: Services,
    *,
    max_token_lifetime: int,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    device_streams: DeviceStreams | None = None,
) -> FastAPI:
    """The service API; with ``device_streams`` (the gateway) also MQTT over WebSockets."""
    app = FastAPI(
        title="fleethub",
        version=__version__,
        description="IoT fleet job hub with Azure IoT Hub's service API shapes.",
        redirect_slashes=False,  # hub.api.slashes answers /devices/ as /devices instead
    )
    app.state.services = services
    app.state.device_streams = device_streams
    app.state.authenticator = ServiceAuthenticator(
        services.hostname, services.policies, services.clock, max_token_lifetime
    )
    install_error_handlers(app)
    app.add_middleware(RequestLimits, max_body_bytes=max_body_bytes, body_timeout=body_timeout)
    app.add_middleware(TrailingSlashes)
    app.include_router(health.router)
    app.include_router(devices.router)
    app.include_router(twins.router)
    app.include_router(query.router)
    app.include_router(jobs.router)
    app.include_router(schedules.router)
    app.include_router(statistics.router)
    app.include_router(certificates.router)
    app.include_router(device_websocket.router)
    return app
