"""The SDK's error tree: one class per service error code, plus transport failures.

    FleetHubError                    status: HTTP status (None when no answer), code, message
    +-- FleetHubConnectionError      no answer: connect/read/write failed (also a ConnectionError)
    |   +-- FleetHubTimeoutError     the request timed out (also a TimeoutError)
    +-- BadRequestError              400 BadRequest (e.g. a twin query syntax error)
    |   +-- ArgumentInvalidError     400 ArgumentInvalid
    +-- UnauthorizedError            401 IotHubUnauthorizedAccess
    +-- ForbiddenError               403 IotHubUnauthorized
    +-- NotFoundError                404
    |   +-- DeviceNotFoundError      404 DeviceNotFound
    |   +-- DeviceNotOnlineError     404 DeviceNotOnline
    |   +-- JobNotFoundError         404 JobNotFound
    |   +-- ScheduleNotFoundError    404 ScheduleNotFound
    |   +-- CertificateNotFoundError 404 CertificateNotFound
    +-- ConflictError                409
    |   +-- DeviceAlreadyExistsError 409 DeviceAlreadyExists
    |   +-- JobAlreadyExistsError    409 JobAlreadyExists
    |   +-- CertificateAlreadyExistsError 409 CertificateAlreadyExists
    +-- PreconditionFailedError      412 PreconditionFailed (etag mismatch)
    +-- ThrottlingError              429 ThrottlingException
    +-- ServerError                  5xx without a more specific code
    |   +-- DeviceReplyError         502 InvalidDeviceReply (the device's reply could not be passed on)
    |   +-- ServiceUnavailableError  503 ServiceUnavailable
    |   +-- GatewayTimeoutError      504 GatewayTimeout (the device did not answer in time)

The service answers errors with a status, header ``iothub-errorcode: {Code}`` and body
``{"Message": "ErrorCode:{Code};{text}", "ExceptionMessage": "..."}``; ``error_from_response``
turns that into the class for the code (falling back to the class for the status). The code
strings come from ``hub.errors`` so the SDK and the service cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

from hub import errors as hub_errors

__all__ = [
    "ArgumentInvalidError",
    "BadRequestError",
    "CertificateAlreadyExistsError",
    "CertificateNotFoundError",
    "ConflictError",
    "DeviceAlreadyExistsError",
    "DeviceNotFoundError",
    "DeviceNotOnlineError",
    "DeviceReplyError",
    "FleetHubConnectionError",
    "FleetHubError",
    "FleetHubTimeoutError",
    "ForbiddenError",
    "GatewayTimeoutError",
    "JobAlreadyExistsError",
    "JobNotFoundError",
    "NotFoundError",
    "PreconditionFailedError",
    "ScheduleNotFoundError",
    "ServerError",
    "ServiceUnavailableError",
    "ThrottlingError",
    "UnauthorizedError",
    "error_from_response",
]


class FleetHubError(Exception):
    """Base of every error the SDK raises for a failed call.

    ``status`` is the HTTP status (``None`` when the service never answered), ``code`` the
    IoT Hub error code (``iothub-errorcode``), ``message`` the human text without the
    ``ErrorCode:`` prefix, ``exception_message`` the service's ``ExceptionMessage``.
    """

    default_code: ClassVar[str] = ""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, exception_message: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code if code is not None else self.default_code
        self.exception_message = exception_message

    def __str__(self) -> str:
        parts = [str(self.status)] if self.status is not None else []
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class FleetHubConnectionError(FleetHubError, ConnectionError):
    """The request never got an answer (refused, reset, TLS failure, ...)."""


class FleetHubTimeoutError(FleetHubConnectionError, TimeoutError):
    """The request timed out before the service answered."""


class BadRequestError(FleetHubError):
    # The hub's generic 400 code is "BadRequest" (its QuerySyntaxError uses it) ...
    default_code = hub_errors.QuerySyntaxError.code


class ArgumentInvalidError(BadRequestError):
    # ... while its BadRequestError family (bad ids, twin limits, payloads) says "ArgumentInvalid".
    default_code = hub_errors.BadRequestError.code


class UnauthorizedError(FleetHubError):
    default_code = hub_errors.UnauthorizedError.code


class ForbiddenError(FleetHubError):
    default_code = hub_errors.ForbiddenError.code


class NotFoundError(FleetHubError):
    default_code = hub_errors.NotFoundError.code


class DeviceNotFoundError(NotFoundError):
    default_code = hub_errors.DeviceNotFoundError.code


class DeviceNotOnlineError(NotFoundError):
    default_code = hub_errors.DeviceNotOnlineError.code


class JobNotFoundError(NotFoundError):
    default_code = hub_errors.JobNotFoundError.code


class ScheduleNotFoundError(NotFoundError):
    default_code = hub_errors.ScheduleNotFoundError.code


class CertificateNotFoundError(NotFoundError):
    default_code = hub_errors.CertificateNotFoundError.code


class ConflictError(FleetHubError):
    default_code = hub_errors.ConflictError.code


class CertificateAlreadyExistsError(ConflictError):
    default_code = hub_errors.CertificateAlreadyExistsError.code


class DeviceAlreadyExistsError(ConflictError):
    default_code = hub_errors.DeviceAlreadyExistsError.code


class JobAlreadyExistsError(ConflictError):
    default_code = hub_errors.JobAlreadyExistsError.code


class PreconditionFailedError(FleetHubError):
    default_code = hub_errors.PreconditionFailedError.code


class ThrottlingError(FleetHubError):
    default_code = hub_errors.ThrottledError.code


class ServerError(FleetHubError):
    default_code = hub_errors.HubError.code


class DeviceReplyError(ServerError):
    default_code = hub_errors.DeviceReplyError.code


class ServiceUnavailableError(ServerError):
    default_code = hub_errors.ServiceUnavailableError.code


class GatewayTimeoutError(ServerError):
    default_code = hub_errors.GatewayTimeoutError.code


# A code decides the class; the status is only the fallback for codes this SDK does not know.
_BY_CODE: dict[str, type[FleetHubError]] = {
    cls.default_code: cls
    for cls in (
        BadRequestError,
        ArgumentInvalidError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        DeviceNotFoundError,
        DeviceNotOnlineError,
        ConflictError,
        DeviceAlreadyExistsError,
        JobAlreadyExistsError,
        JobNotFoundError,
        ScheduleNotFoundError,
        CertificateNotFoundError,
        CertificateAlreadyExistsError,
        PreconditionFailedError,
        ThrottlingError,
        DeviceReplyError,
        ServiceUnavailableError,
        GatewayTimeoutError,
    )
}
_BY_STATUS: dict[int, type[FleetHubError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    429: ThrottlingError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}

_CODE_PREFIX = "ErrorCode:"
_MAX_TEXT = 500


def _split_message(text: str) -> tuple[str | None, str]:
    """``"ErrorCode:DeviceNotFound;Device x not found"`` -> ``("DeviceNotFound", "Device x not found")``."""
    if text.startswith(_CODE_PREFIX):
        code, sep, rest = text[len(_CODE_PREFIX) :].partition(";")
        if sep:
            return code.strip() or None, rest.strip()
        return code.strip() or None, ""
    return None, text


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> FleetHubError:
    """The error for one non-success answer; tolerant of bodies that are not the service's shape
    (a proxy's HTML page, an empty body) so that the status is never lost."""
    header_code = headers.get("iothub-errorcode") or None
    message = ""
    exception_message: str | None = None
    body_code: str | None = None
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
        message = body[:_MAX_TEXT].decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        raw_message = doc.get("Message", doc.get("message"))
        if isinstance(raw_message, str):
            body_code, message = _split_message(raw_message)
        raw_exception = doc.get("ExceptionMessage")
        if isinstance(raw_exception, str):
            exception_message = raw_exception
    code = header_code or body_code
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else FleetHubError
    if not message:
        message = exception_message or f"HTTP {status}"
    return cls(
        message, status=status, code=code if code is not None else cls.default_code, exception_message=exception_message
    )
