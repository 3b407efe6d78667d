"""The one place that turns errors into HTTP answers in IoT Hub's form."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub import errors as e

__all__ = ["error_response", "install_error_handlers", "status_of"]

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[e.HubError], int]] = [
    (e.BadRequestError, 400),
    (e.UnauthorizedError, 401),
    (e.ForbiddenError, 403),
    (e.NotFoundError, 404),
    (e.ConflictError, 409),
    (e.PreconditionFailedError, 412),
    (e.ConcurrencyConflictError, 412),
    (e.ThrottledError, 429),
    (e.DeviceReplyError, 502),
    (e.ServiceUnavailableError, 503),
    (e.GatewayTimeoutError, 504),
]


def status_of(error: e.HubError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": message},
        headers={"iothub-errorcode": code},
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "extra_forbidden":
            name = ".".join(str(p) for p in loc if not isinstance(p, int))
            entries = [p for p in loc if isinstance(p, int)]
            parts.append(f"unknown field {name!r}" + (f" in entry {entries[0]}" if entries else ""))
        else:
            where = ".".join(str(p) for p in loc) or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.HubError)
    async def hub_error(_: Request, exc: e.HubError) -> JSONResponse:
        return error_response(status_of(exc), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "ArgumentInvalid", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}.get(
            exc.status_code, "BadRequest"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "ServerError", "internal error; see the hub's log")
